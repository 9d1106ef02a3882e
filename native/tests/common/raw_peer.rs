//! Raw WebSocket clients that keep sending when a well-behaved peer would stop (after a frame
//! the server refuses, after their own close frame), shared by the native server's and
//! duplex-tokio's tests (duplex-tokio includes this file by path). Both fail on a reset: a
//! server that closes a socket with unread bytes, or one that bytes still reach, makes the
//! kernel answer with a RST that can destroy its close frame before the peer reads it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Upgrades at `addr`, announces a 16 MiB masked binary frame and keeps sending its payload
/// from a second thread while the server takes it. After the server has had time to refuse the
/// frame at its header and end the connection, reads the close frame (panicking on a reset,
/// which is what a server closing with unread bytes causes) and then the server's FIN.
/// Returns the close code.
pub fn close_code_while_still_sending(addr: SocketAddr, wait: Duration) -> u16 {
    let mut stream = upgrade(addr, wait);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(16u64 << 20).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        if writer.write_all(&header).is_ok() {
            let chunk = vec![0x55u8; 64 * 1024];
            for _ in 0..256 {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut close = [0u8; 4];
    stream
        .read_exact(&mut close)
        .expect("the close frame, not a reset");
    assert_eq!(close[0], 0x88, "a close frame: {close:?}");
    let mut reason = vec![0u8; usize::from(close[1]).saturating_sub(2)];
    stream.read_exact(&mut reason).unwrap();
    assert_eq!(
        stream.read(&mut close).unwrap(),
        0,
        "the FIN after the close"
    );
    stream.shutdown(Shutdown::Both).unwrap();
    sender.join().unwrap();
    u16::from_be_bytes([close[2], close[3]])
}

/// Upgrades at `addr`, sends a close frame (1000) and reads the server's close frame. Then,
/// once the server has had time to close its socket, sends a ping as a peer that ignores the
/// protocol might (Autobahn 7.1.3 sends one right after its close frame), and a second one:
/// the second write fails if the server's kernel answered the first with a RST. Last, reads
/// the server's FIN. Returns the close code the server answered with.
pub fn close_code_then_ping(addr: SocketAddr, wait: Duration) -> u16 {
    let mut stream = upgrade(addr, wait);
    // FIN, masked, payload 2: the code 1000 masked with 1, 2, 3, 4.
    stream
        .write_all(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2])
        .unwrap();
    let mut close = [0u8; 4];
    stream
        .read_exact(&mut close)
        .expect("the close frame, not a reset");
    assert_eq!(
        close[..2],
        [0x88, 2],
        "a close frame with a code: {close:?}"
    );
    let ping = [0x89, 0x80, 1, 2, 3, 4];
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(&ping).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    if let Err(e) = stream.write_all(&ping) {
        panic!("the server reset the connection after the close handshake: {e}");
    }
    assert_eq!(
        stream.read(&mut close).expect("the FIN, not a reset"),
        0,
        "the FIN after the close"
    );
    u16::from_be_bytes([close[2], close[3]])
}

/// A blocking socket at `addr` after a successful upgrade (read timeout `wait`).
fn upgrade(addr: SocketAddr, wait: Duration) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}
