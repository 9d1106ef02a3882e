//! The same scripted exchange through `WebSocketStream` over `tokio::io::duplex`, with random
//! pipe capacities and random read and write sizes, yields the same messages as two in-memory
//! cores passing bytes directly.

mod common;

use std::time::Duration;

use common::Chunky;
use duplex_core::deflate::DeflateConfig;
use duplex_core::{Accept, ClientRequest, CloseCode, Config, Connection, Event, Message};
use duplex_tokio::{accept_with, client_handshake};
use futures_util::StreamExt;
use proptest::prelude::*;

fn config(deflate: bool, fragment: Option<usize>) -> Config {
    Config::default()
        .with_deflate(deflate.then(DeflateConfig::default))
        .with_fragment_size(fragment)
}

fn random() -> duplex_core::RandomSource {
    let mut seed = 3u8;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            seed = seed.wrapping_mul(29).wrapping_add(11);
            *b = seed;
        }
    })
}

/// The reference: the client sends the script, the server echoes every message, both cores in
/// memory. Returns what the server received and what the client got back.
fn in_memory(script: &[Message], config: &Config) -> (Vec<Message>, Vec<Message>) {
    let now = Duration::ZERO;
    let request = ClientRequest::from_url("ws://127.0.0.1/p").unwrap();
    let mut client = Connection::client(request, config.clone(), random(), now);
    let mut server = Connection::server(config.clone(), now);
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let mut pending: Vec<Message> = script.to_vec();
    pending.reverse();
    let mut closing = false;
    for _ in 0..100_000 {
        let out = client.output().to_vec();
        client.consume(out.len());
        server.receive(now, &out);
        while let Some(event) = server.poll_event() {
            match event {
                Event::Request(_) => server.accept(Accept::default()).unwrap(),
                Event::Message(m) => {
                    server.send(&m).unwrap();
                    at_server.push(m);
                }
                _ => {}
            }
        }
        let out = server.output().to_vec();
        server.consume(out.len());
        client.receive(now, &out);
        while let Some(event) = client.poll_event() {
            if let Event::Message(m) = event {
                at_client.push(m);
            }
        }
        if client.is_open() {
            if let Some(m) = pending.pop() {
                client.send(&m).unwrap();
            } else if at_client.len() == script.len() && !closing {
                client.close(CloseCode::Normal, "").unwrap();
                closing = true;
            }
        }
        if client.is_terminated() || (closing && server.is_terminated()) {
            break;
        }
    }
    (at_server, at_client)
}

/// The same exchange through two `WebSocketStream`s.
async fn through_tokio(
    script: Vec<Message>,
    config: Config,
    pipe: usize,
    sizes: [Vec<usize>; 4],
) -> (Vec<Message>, Vec<Message>) {
    let (a, b) = tokio::io::duplex(pipe);
    let [sr, sw, cr, cw] = sizes;
    let server_io = Chunky::new(a, sr, sw);
    let client_io = Chunky::new(b, cr, cw);
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        let ws = accept_with(server_io, server_config, |_| Ok(Accept::default()))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(m) = ws.recv().await {
            let m = m.unwrap();
            ws.send(m.clone()).await.unwrap();
            got.push(m);
        }
        got
    });
    let request = ClientRequest::from_url("ws://127.0.0.1/p").unwrap();
    let (ws, _) = client_handshake(client_io, request, config).await.unwrap();
    let (tx, mut rx) = ws.split();
    let count = script.len();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < count {
            match rx.next().await {
                Some(m) => got.push(m.unwrap()),
                None => break,
            }
        }
        (got, rx)
    });
    for m in script {
        tx.send(m).await.unwrap();
    }
    let (got, mut rx) = reader.await.unwrap();
    tx.close(CloseCode::Normal, "").await.unwrap();
    assert!(rx.next().await.is_none());
    assert!(rx.closed().unwrap().clean);
    (server.await.unwrap(), got)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        "[a-zé€😀 ]{0,300}".prop_map(Message::text),
        prop::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
        (0usize..70_000).prop_map(|n| Message::binary(vec![(n % 251) as u8; n])),
    ]
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..200, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn tokio_stream_matches_the_in_memory_core(
        script in prop::collection::vec(message(), 0..12),
        deflate in any::<bool>(),
        fragment in prop::option::of(1usize..5000),
        pipe in 1usize..512,
        sizes in [sizes(), sizes(), sizes(), sizes()],
    ) {
        let config = config(deflate, fragment);
        let (core_server, core_client) = in_memory(&script, &config);
        prop_assert_eq!(&core_server, &script);
        prop_assert_eq!(&core_client, &script);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (at_server, at_client) = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                through_tokio(script.clone(), config, pipe, sizes),
            )
            .await
            .expect("the exchange finished")
        });
        prop_assert_eq!(at_server, core_server);
        prop_assert_eq!(at_client, core_client);
    }
}
