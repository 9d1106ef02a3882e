//! Backpressure and cancellation: `send` waits while the output is above its bound, and a
//! send dropped after its message was accepted still delivers it.

use std::time::Duration;

use duplex_tokio::{
    Accept, ClientRequest, Config, Message, WebSocketStream, accept_with, client_handshake,
};
use tokio::time::timeout;

/// A server and a client stream joined by an in-memory pipe of `capacity` bytes.
async fn pair(
    capacity: usize,
) -> (
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(capacity);
    let config = Config::default();
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let (server, client) = tokio::join!(
        accept_with(a, config.clone(), |_| Ok(Accept::default())),
        client_handshake(b, request, config)
    );
    (server.unwrap(), client.unwrap().0)
}

#[tokio::test]
async fn a_dropped_send_loses_nothing_and_ready_waits_above_the_bound() {
    // A small pipe: the peer has to read before more than 1 KiB can be written.
    let (server, client) = pair(1024).await;
    client.set_max_buffered(4096);

    // Accepted, then stuck writing because nobody reads: the future is dropped mid-flush.
    let first = Message::binary(vec![1u8; 20_000]);
    let dropped = timeout(Duration::from_millis(50), client.send(first.clone())).await;
    assert!(dropped.is_err(), "the send could not finish: nobody reads");
    let queued = client.buffered_amount();
    assert!(
        queued > 4096,
        "the accepted message waits in the output: {queued}"
    );

    // Above the bound, the next send waits before taking its message.
    let second = Message::text("second");
    let waited = timeout(Duration::from_millis(50), client.send(second.clone())).await;
    assert!(waited.is_err(), "send waited for the output to drain");
    assert_eq!(
        client.buffered_amount(),
        queued,
        "the second message was not queued"
    );

    // Once the server reads, the dropped message arrives whole; a new send goes through.
    let reader = tokio::spawn(async move {
        let got = server.recv().await.unwrap().unwrap();
        let next = server.recv().await.unwrap().unwrap();
        (got, next)
    });
    client.flush().await.unwrap();
    assert_eq!(client.buffered_amount(), 0);
    client.send(Message::text("third")).await.unwrap();
    let (got, next) = timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, first);
    assert_eq!(next, Message::text("third"));
}

/// Split halves in two tasks that both wait on a small pipe, again and again: the writer for
/// room (its output above the bound), the reader for the echoes. Whichever half polls the
/// socket last holds its registration, so a wake meant for the other must still reach it; a
/// lost one hangs the exchange, which the timeout turns into a failure. Repeated on a
/// multi-threaded runtime, so the halves' polls interleave in every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_both_waiting_on_the_socket_lose_no_wake() {
    for round in 0..20u8 {
        let (server, client) = pair(512).await;
        let echo = tokio::spawn(async move {
            while let Some(Ok(message)) = server.recv().await {
                if server.send(message).await.is_err() {
                    break;
                }
            }
        });
        client.set_max_buffered(1024);
        let (tx, rx) = client.split();
        let messages: Vec<Message> = (0..200u16)
            .map(|i| Message::binary(vec![round ^ i as u8; 100 + usize::from(i % 7) * 300]))
            .collect();
        let expected = messages.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match rx.recv().await {
                    Some(Ok(message)) => got.push(message),
                    other => panic!("round {round}: {other:?} after {} echoes", got.len()),
                }
            }
            assert!(got == expected, "round {round}: the echoes differ");
            rx
        });
        let writer = tokio::spawn(async move {
            for message in messages {
                tx.send(message).await.unwrap();
            }
            tx
        });
        let (tx, rx) = timeout(Duration::from_secs(20), async {
            (writer.await.unwrap(), reader.await.unwrap())
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: a half was never woken"));
        tx.close(duplex_tokio::CloseCode::Normal, "").await.unwrap();
        assert!(rx.recv().await.is_none());
        echo.await.unwrap();
    }
}
