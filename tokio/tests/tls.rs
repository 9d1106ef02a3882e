//! `connect_tls_with` against a rustls server whose certificate `openssl` makes for 127.0.0.1.
#![cfg(feature = "tls")]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use duplex_tokio::{CloseCode, Error, Message, accept, connect_tls, connect_tls_with};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A self-signed certificate for IP 127.0.0.1 and its key, made by the openssl command line.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let dir = std::env::temp_dir().join(format!("duplex-tokio-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(status.status.success(), "{status:?}");
    let pair = (
        CertificateDer::from_pem_file(&cert).unwrap(),
        PrivateKeyDer::from_pem_file(&key).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    pair
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn echo_over_tls_and_a_certificate_the_client_does_not_trust_is_refused() {
    let (cert, key) = certificate();
    let server_config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/tls", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut served = 0;
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let ws = accept(tls).await.unwrap();
            while let Some(Ok(m)) = ws.recv().await {
                ws.send(m).await.unwrap();
            }
            served += 1;
        }
        served
    });

    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let limit = Duration::from_secs(20);
    let (ws, _) = tokio::time::timeout(
        limit,
        connect_tls_with(
            url.as_str(),
            duplex_tokio::default_config(),
            Arc::new(client_config),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("over tls"));
    ws.close(CloseCode::Normal, "").await.unwrap();
    assert!(ws.recv().await.is_none());
    assert!(ws.closed().unwrap().clean);

    // The webpki roots do not include a self-signed certificate.
    let refused = tokio::time::timeout(limit, connect_tls(url.as_str()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Io(e) if e.to_string().contains("certificate")),
        "{refused:?}"
    );
    assert_eq!(server.await.unwrap(), 1);
}
