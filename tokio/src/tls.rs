//! `wss://` over tokio-rustls (feature `tls`).

use std::sync::Arc;

use duplex_core::{Config, Response};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::{Error, IntoClientRequest, WebSocketStream, client_handshake, default_config};

/// The TLS client configuration [`connect_tls`] uses: the webpki (Mozilla) root certificates,
/// TLS 1.2 and 1.3 on the ring provider.
pub fn default_tls_config() -> Result<Arc<ClientConfig>, Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to a `wss://` (or `ws://`) URL with [`default_config`]; TLS is verified against
/// the webpki root certificates.
pub async fn connect_tls(
    url: impl IntoClientRequest,
) -> Result<(WebSocketStream<TlsStream<TcpStream>>, Response), Error> {
    connect_tls_with(url, default_config(), default_tls_config()?).await
}

/// Connects over TLS with a request, a WebSocket configuration and a rustls client
/// configuration (your own roots, client certificates). The request's host name is the TLS
/// server name; a `ws://` request is sent over TLS too.
pub async fn connect_tls_with(
    request: impl IntoClientRequest,
    config: Config,
    tls: Arc<ClientConfig>,
) -> Result<(WebSocketStream<TlsStream<TcpStream>>, Response), Error> {
    let request = request.into_client_request()?;
    let name = ServerName::try_from(request.hostname.clone())
        .map_err(|e| Error::Tls(format!("server name {:?}: {e}", request.hostname)))?;
    let tcp = TcpStream::connect((request.hostname.as_str(), request.port)).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls).connect(name, tcp).await?;
    client_handshake(stream, request, config).await
}
