//! Real TCP between `accept` and `connect`: echo, subprotocol choice, refusal, split halves.

use std::time::Duration;

use duplex_tokio::{
    Accept, ClientRequest, CloseCode, Error, Message, Reject, accept, accept_with, connect,
    connect_with, default_config,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

#[path = "../../native/tests/common/raw_peer.rs"]
mod raw_peer;

/// An echo server on 127.0.0.1 that serves `connections` connections; returns its URL and the
/// task, which yields what each connection ended with.
async fn echo_server(connections: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut ends = Vec::new();
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = accept(tcp).await.unwrap();
            let end = loop {
                match ws.next().await {
                    Some(Ok(m)) => ws.send(m).await.unwrap(),
                    Some(Err(e)) => break format!("error: {e}"),
                    None => break format!("closed: {:?}", ws.closed().map(|c| c.code)),
                }
            };
            ends.push(end);
        }
        ends
    });
    (url, task)
}

#[tokio::test]
async fn echo_over_tcp_with_compression_and_a_clean_close() {
    timeout(LIMIT, async {
        let (url, server) = echo_server(1).await;
        let (mut ws, response) = connect(format!("{url}/echo")).await.unwrap();
        // permessage-deflate is on by default on both sides.
        assert!(
            response
                .extensions
                .iter()
                .any(|e| e.name == "permessage-deflate"),
            "{response:?}"
        );
        let big: String = (0..200_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let sent = vec![
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text(""),
            Message::text(big),
            Message::binary(vec![7u8; 70_000]),
        ];
        for m in &sent {
            ws.send(m.clone()).await.unwrap();
        }
        for m in &sent {
            assert_eq!(ws.next().await.unwrap().unwrap(), *m);
        }
        ws.close(CloseCode::Normal, "bye").await.unwrap();
        assert!(ws.next().await.is_none(), "the stream ends after the close");
        let closed = ws.closed().unwrap();
        assert_eq!((closed.code, closed.clean), (CloseCode::Normal, true));
        assert!(matches!(
            ws.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
        assert_eq!(
            server.await.unwrap(),
            vec!["closed: Some(Normal)".to_string()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sink_send_all_and_close() {
    timeout(LIMIT, async {
        let (url, server) = echo_server(1).await;
        let (mut ws, _) = connect(url.as_str()).await.unwrap();
        let mut messages =
            futures_util::stream::iter((0..100).map(|i| Ok(Message::text(format!("m{i}")))));
        ws.send_all(&mut messages).await.unwrap();
        for i in 0..100 {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("m{i}"))
            );
        }
        SinkExt::close(&mut ws).await.unwrap();
        assert!(ws.next().await.is_none());
        assert_eq!(ws.closed().unwrap().code, CloseCode::Normal);
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn accept_with_picks_a_subprotocol_or_refuses_with_a_status() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let result = accept_with(tcp, default_config(), |request| {
                    if request.path() != "/chat" {
                        return Err(Reject::new(403, "only /chat"));
                    }
                    let offered = request.subprotocols();
                    match offered.iter().find(|p| *p == "chat.v2") {
                        Some(p) => Ok(Accept::default().with_protocol(p.clone())),
                        None => Err(Reject::new(400, "chat.v2 required")),
                    }
                })
                .await;
                match result {
                    Ok(ws) => {
                        results.push(format!("open {:?}", ws.protocol()));
                        ws.send(Message::text("welcome")).await.unwrap();
                        while ws.recv().await.is_some() {}
                    }
                    Err(e) => results.push(e.to_string()),
                }
            }
            results
        });

        let request = ClientRequest::from_url(&format!("{url}/chat"))
            .unwrap()
            .with_protocol("chat.v1")
            .with_protocol("chat.v2");
        let (ws, response) = connect_with(request, default_config()).await.unwrap();
        assert_eq!(response.protocol.as_deref(), Some("chat.v2"));
        assert_eq!(ws.protocol().as_deref(), Some("chat.v2"));
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("welcome"));
        ws.close(CloseCode::Normal, "").await.unwrap();
        assert!(ws.recv().await.is_none());

        let refused = connect(format!("{url}/other")).await.unwrap_err();
        assert!(
            matches!(refused, Error::Refused { status: 403 }),
            "{refused:?}"
        );
        assert_eq!(
            server.await.unwrap(),
            vec![
                "open Some(\"chat.v2\")".to_string(),
                "upgrade refused with HTTP 403".to_string()
            ]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_plain_http_request_gets_426_and_accept_reports_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp).await.map(|_| ())
        });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 426"), "{response}");
        let result = server.await.unwrap();
        assert!(
            matches!(result, Err(Error::Refused { status: 426 })),
            "{result:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_two_tasks_close_from_the_writer_while_the_reader_reads() {
    timeout(LIMIT, async {
        let (url, server) = echo_server(1).await;
        let (ws, _) = connect(url.as_str()).await.unwrap();
        let (tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.next().await {
                got.push(m.unwrap());
            }
            (got, rx.closed())
        });
        let writer = tokio::spawn(async move {
            for i in 0..50 {
                tx.send(Message::text(format!("n{i}"))).await.unwrap();
            }
            // The reader task is blocked in a read while this closes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.close(CloseCode::Normal, "writer done").await.unwrap();
            tx
        });
        let tx = writer.await.unwrap();
        let (got, closed) = reader.await.unwrap();
        let expected: Vec<Message> = (0..50).map(|i| Message::text(format!("n{i}"))).collect();
        assert_eq!(got, expected);
        let closed = closed.expect("the reader saw the end");
        assert_eq!((closed.code, closed.clean), (CloseCode::Normal, true));
        assert!(matches!(
            tx.send(Message::text("x")).await,
            Err(Error::Closed)
        ));
        assert_eq!(
            server.await.unwrap(),
            vec!["closed: Some(Normal)".to_string()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn fed_messages_go_out_on_flush_or_when_the_reader_waits() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        // An echo server that only feeds: its replies go out when its next recv waits.
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = accept(tcp).await.unwrap();
            let mut echoed = 0;
            while let Some(Ok(m)) = ws.recv().await {
                ws.feed(m).await.unwrap();
                echoed += 1;
            }
            echoed
        });
        let (ws, _) = connect(url.as_str()).await.unwrap();
        for i in 0..20 {
            ws.feed(Message::text(format!("f{i}"))).await.unwrap();
        }
        assert!(ws.buffered_amount() > 0, "fed messages wait for a flush");
        ws.flush().await.unwrap();
        assert_eq!(ws.buffered_amount(), 0);
        for i in 0..20 {
            assert_eq!(
                ws.recv().await.unwrap().unwrap(),
                Message::text(format!("f{i}"))
            );
        }
        ws.close(CloseCode::Normal, "").await.unwrap();
        assert!(ws.recv().await.is_none());
        assert_eq!(server.await.unwrap(), 20);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fed_from_the_sending_half_goes_out_while_the_receiving_half_waits() {
    timeout(LIMIT, async {
        let (url, server) = echo_server(1).await;
        let (ws, _) = connect(url.as_str()).await.unwrap();
        let (tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let first = rx.next().await.map(Result::unwrap);
            (first, rx)
        });
        // Let the reader park in its read first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.feed(Message::text("fed")).await.unwrap();
        // No flush: the parked reader writes it.
        let (first, mut rx) = reader.await.unwrap();
        assert_eq!(first, Some(Message::text("fed")));
        tx.close(CloseCode::Normal, "").await.unwrap();
        // Read to the end: the server's close frame, then its FIN, which the client answers
        // with its own (the server's stream ends at the client's FIN).
        assert!(rx.next().await.is_none());
        server.await.unwrap();
    })
    .await
    .unwrap();
}

/// A peer that still sends after its close frame (Autobahn 7.1.3 sends a ping) is not reset:
/// after the close handshake the stream lingers like after a failure, and ends only at the
/// peer's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_after_its_close_frame_is_not_reset() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = accept(tcp).await.unwrap();
            let mut items = 0;
            while ws.next().await.is_some() {
                items += 1;
            }
            // Dropped here: the socket closes.
            (items, ws.closed().map(|c| (c.code, c.clean)))
        });
        let code = tokio::task::spawn_blocking(move || raw_peer::close_code_then_ping(addr, LIMIT))
            .await
            .unwrap();
        assert_eq!(code, 1000);
        assert_eq!(server.await.unwrap(), (0, Some((CloseCode::Normal, true))));
    })
    .await
    .unwrap();
}

/// A peer that keeps sending after the frame the server refuses still reads the 1009 close:
/// the stream lingers (FIN, then discards input until the peer's FIN) instead of dropping a
/// socket with unread bytes, whose RST would destroy the close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_sending_after_an_oversized_frame_reads_the_1009_close() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = default_config()
                .with_max_message_size(64 * 1024)
                .with_max_frame_size(64 * 1024);
            let mut ws = accept_with(tcp, config, |_| Ok(Accept::default()))
                .await
                .unwrap();
            let mut ends = Vec::new();
            while let Some(item) = ws.next().await {
                ends.push(item.map(|m| m.len()).map_err(|e| e.to_string()));
            }
            ends
        });
        let code = tokio::task::spawn_blocking(move || {
            raw_peer::close_code_while_still_sending(addr, LIMIT)
        })
        .await
        .unwrap();
        assert_eq!(code, 1009);
        let ends = server.await.unwrap();
        assert_eq!(ends.len(), 1, "{ends:?}");
        assert!(
            ends[0]
                .as_ref()
                .is_err_and(|e| e.contains("exceeds the limit")),
            "{ends:?}"
        );
    })
    .await
    .unwrap();
}
