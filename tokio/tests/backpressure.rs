//! Backpressure and cancellation: `send` waits while the output is above its bound, and a
//! send dropped after its message was accepted still delivers it.

use std::time::Duration;

use duplex_tokio::{Accept, ClientRequest, Config, Message, accept_with, client_handshake};
use tokio::time::timeout;

#[tokio::test]
async fn a_dropped_send_loses_nothing_and_ready_waits_above_the_bound() {
    // A small pipe: the peer has to read before more than 1 KiB can be written.
    let (a, b) = tokio::io::duplex(1024);
    let config = Config::default();
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let (server, client) = tokio::join!(
        accept_with(a, config.clone(), |_| Ok(Accept::default())),
        client_handshake(b, request, config)
    );
    let (server, (client, _)) = (server.unwrap(), client.unwrap());
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
