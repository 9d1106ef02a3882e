//! The library server and client over TLS on 127.0.0.1, with a CA and certificates made by
//! `openssl` at test time. Every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex::server::{Echo, Server, ServerConfig};
use duplex::tls::{TlsAcceptor, Trust, client_config};
use duplex_core::CloseCode;
use duplex_core::limits::Config;
use duplex_core::message::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A directory with `ca.pem`, and `server.pem`/`server.key` for 127.0.0.1 signed by it.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("duplex-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &str| {
            let status = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is needed for the TLS tests");
            assert!(status.success(), "openssl {args} failed");
        };
        run(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=duplex-test-ca -keyout ca.key -out ca.pem",
        );
        run(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem",
        );
        Certs { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(certs: &Certs) -> (String, duplex::server::ShutdownHandle) {
    let acceptor = TlsAcceptor::from_files(&certs.path("server.pem"), &certs.path("server.key"))
        .expect("load the pair");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        tls: Some(acceptor),
        // Small kernel buffers make writes stop half way, with ciphertext left inside rustls.
        send_buffer_size: Some(4096),
        connection: Config::default()
            .with_ping_interval(None)
            .with_handshake_timeout(Some(Duration::from_secs(2))),
        drain_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).expect("bind");
    let addr = server.local_addr();
    let stop = server.shutdown_handle();
    std::thread::spawn(move || server.run(|_| Echo));
    (format!("wss://{addr}/"), stop)
}

fn trusting(certs: &Certs) -> ClientOptions {
    let tls = client_config(&Trust::WithCa(vec![certs.path("ca.pem")])).expect("client config");
    ClientOptions::default().with_tls(tls)
}

#[test]
fn echo_over_tls_with_a_large_message_and_a_clean_close() {
    let certs = Certs::make("echo");
    let (url, stop) = start(&certs);
    // Uncompressed, so the echo is as large on the wire as in memory.
    let options = trusting(&certs).with_config(Config::default().with_deflate(None));
    let mut client = Client::connect(&url, options).expect("connect");
    // Larger than one TLS record (16 KiB) and than rustls' buffer limit.
    let big = "x".repeat(1 << 20);
    for text in ["hello", big.as_str()] {
        client.send_text(text).unwrap();
        // Not reading for a while lets the echo fill the socket buffers: the server's writes
        // then stop half way, with ciphertext left inside rustls and nothing in the core.
        std::thread::sleep(Duration::from_millis(200));
        match client.recv_timeout(WAIT).unwrap() {
            ClientEvent::Message(m) => assert_eq!(m, Message::text(text)),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    let closed = client.close(CloseCode::Normal, "bye").unwrap();
    assert_eq!(closed.code, CloseCode::Normal);
    assert!(closed.clean);
    stop.shutdown();
}

#[test]
fn a_server_outside_the_trust_store_is_refused_by_name() {
    let certs = Certs::make("untrusted");
    let (url, stop) = start(&certs);
    // No TLS settings: the system trust store, which does not hold the test CA.
    match Client::connect(&url, ClientOptions::default()) {
        Err(ClientError::Tls { reason, .. }) => {
            assert!(reason.contains("unknown issuer"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // The server is still serving the next, trusting client.
    let mut client = Client::connect(&url, trusting(&certs)).expect("connect");
    client.send_text("still here").unwrap();
    assert!(matches!(
        client.recv_timeout(WAIT),
        Ok(ClientEvent::Message(_))
    ));
    stop.shutdown();
}

#[test]
fn plaintext_on_the_tls_port_gets_no_http_answer() {
    let certs = Certs::make("plain");
    let (url, stop) = start(&certs);
    let addr = url.trim_start_matches("wss://").trim_end_matches('/');
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // Reads to the end: the server must close this connection by itself.
    let _ = raw.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 21,
        "expected a TLS alert or nothing, got {:?}",
        String::from_utf8_lossy(&got)
    );
    // A ws:// client on the TLS port fails cleanly, too.
    let err = Client::connect(&url.replace("wss://", "ws://"), ClientOptions::default())
        .expect_err("plaintext upgrade on a TLS port");
    assert!(
        !matches!(err, ClientError::Tls { .. }),
        "a ws:// client speaks no TLS: {err}"
    );
    // The (single) worker is still serving.
    let mut client = Client::connect(&url, trusting(&certs)).expect("connect after garbage");
    client.send_text("still here").unwrap();
    assert!(matches!(
        client.recv_timeout(WAIT),
        Ok(ClientEvent::Message(_))
    ));
    stop.shutdown();
}

#[test]
fn bad_files_are_named() {
    let certs = Certs::make("files");
    let missing = certs.path("missing.pem");
    let err = TlsAcceptor::from_files(&missing, &certs.path("server.key")).unwrap_err();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let cert = certs.path("server.pem");
    let err = TlsAcceptor::from_files(&cert, &cert).unwrap_err();
    assert!(err.contains("private key"), "{err}");
    let err =
        TlsAcceptor::from_files(&certs.path("ca.pem"), &certs.path("server.key")).unwrap_err();
    assert!(err.contains("do not make a usable pair"), "{err}");
}
