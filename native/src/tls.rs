//! TLS for the server (`wss://`, `https://`) and the client, on rustls.
//!
//! rustls is sans-IO like `duplex-core`: a `Transport` is either the plain socket or the socket
//! plus a rustls connection, and it offers the same non-blocking `read`/`write` as the socket
//! (ciphertext in and out of the socket, plaintext to and from the core). The event loops keep
//! one code path: they only add "TLS has ciphertext waiting" to what makes them want WRITABLE.
//!
//! The server uses rustls' unbuffered API with buffers it frees when empty (idle connections
//! hold none); the client, one connection per process, uses the simpler buffered API.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// ALPN protocol offered and accepted: WebSocket upgrades and the HTTP pages are HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Ciphertext waiting per connection before a write reports `WouldBlock` (the client's rustls
/// buffer limit, the server's plaintext encrypted per write): stated so the backpressure
/// accounting does not depend on rustls' defaults.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first); the message names the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC); the message names the file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no PEM private key (PKCS#8, RSA or EC) in the file",
            path.display()
        ),
        e => format!("{}: {}", path.display(), pem_error(&e)),
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        other => format!("invalid PEM: {other:?}"),
    }
}

/// The certificate and key files of a TLS server, reloadable while it runs.
#[derive(Clone)]
pub struct TlsAcceptor {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the chain and the key; errors name the file and what is wrong with it.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        let config = server_config(cert, key)?;
        Ok(TlsAcceptor {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; connections accepted afterwards use the new pair. On error the
    /// previous pair stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts the server side of a TLS connection.
    pub(crate) fn accept(&self) -> Result<UnbufferedServerConnection, rustls::Error> {
        UnbufferedServerConnection::new(self.config())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// How a client decides whether to trust a server.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// The operating system's trust store (plus nothing else).
    #[default]
    System,
    /// The operating system's trust store plus the CAs of these PEM files.
    WithCa(Vec<PathBuf>),
    /// Accept any certificate (no verification of the chain nor the name): testing only.
    Insecure,
}

/// A client TLS configuration: trust anchors (see [`Trust`]), TLS 1.2 and 1.3, ALPN http/1.1.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::System | Trust::WithCa(_) => {
            let mut roots = RootCertStore::empty();
            // Unreadable entries of the system store are skipped: one bad file in
            // /etc/ssl/certs must not make every server untrusted.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if let Trust::WithCa(files) = trust {
                for file in files {
                    for cert in load_certs(file)? {
                        roots.add(cert).map_err(|e| {
                            format!("{}: not a usable CA certificate: {e}", file.display())
                        })?;
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Starts the client side of a TLS connection to `host` (the SNI name and the name the
/// certificate must carry; an IP address is checked against the certificate's IP addresses).
pub(crate) fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
) -> Result<rustls::ClientConnection, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS setup: {e}"))?;
    conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(conn)
}

/// `--insecure`: signatures are still checked (the handshake must be with the holder of the
/// presented key), the chain and the name are not.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Says what is wrong with a server's certificate in the words an operator searches for.
pub fn describe_error(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate expired ({error})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate not valid yet ({error})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate has the wrong name ({error})")
            }
            CertificateError::UnknownIssuer => format!(
                "certificate signed by an unknown issuer (not in the system trust store; \
                 add the CA with --ca FILE) ({error})"
            ),
            CertificateError::Revoked => format!("certificate revoked ({error})"),
            _ => format!("invalid certificate ({error})"),
        },
        other => other.to_string(),
    }
}

/// A socket, plain or with TLS over it. Reads and writes are non-blocking like the socket's.
pub(crate) enum Transport {
    Plain(TcpStream),
    /// The client's side: rustls' buffered API (one connection per process, memory is no issue).
    Tls(Box<TlsStream>),
    /// The server's side: rustls' unbuffered API, so an idle connection holds no buffer.
    TlsServer(Box<ServerTls>),
}

pub(crate) struct TlsStream {
    sock: TcpStream,
    tls: rustls::Connection,
    /// The socket reported end of stream.
    eof: bool,
    /// Why the TLS session failed, kept for the caller's error message.
    error: Option<rustls::Error>,
}

impl Transport {
    pub(crate) fn tls(sock: TcpStream, tls: impl Into<rustls::Connection>) -> Transport {
        Transport::Tls(Box::new(TlsStream {
            sock,
            tls: tls.into(),
            eof: false,
            error: None,
        }))
    }

    /// The server side of TLS over an accepted socket.
    pub(crate) fn tls_server(sock: TcpStream, conn: UnbufferedServerConnection) -> Transport {
        Transport::TlsServer(Box::new(ServerTls {
            sock,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            eof: false,
            peer_closed: false,
            error: None,
        }))
    }

    /// The socket, to register with `mio`.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
            Transport::TlsServer(t) => &mut t.sock,
        }
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Plain(s) => s.peer_addr(),
            Transport::Tls(t) => t.sock.peer_addr(),
            Transport::TlsServer(t) => t.sock.peer_addr(),
        }
    }

    /// TLS records (handshake messages, alerts, encrypted data) wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.wants_write(),
            Transport::TlsServer(t) => t.sent < t.outgoing.len(),
        }
    }

    /// The TLS failure that ended the connection, if any.
    pub(crate) fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.error.as_ref(),
            Transport::TlsServer(t) => t.error.as_ref(),
        }
    }

    /// Writes pending TLS records; `WouldBlock` while some remain.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_tls(),
            Transport::TlsServer(t) => t.flush_tls(),
        }
    }

    /// Ends our sending side: a TLS close_notify (best effort), then a TCP FIN.
    pub(crate) fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Transport::Tls(t) => {
                t.tls.send_close_notify();
                let _ = t.flush_tls();
                let _ = t.sock.shutdown(Shutdown::Write);
            }
            Transport::TlsServer(t) => {
                if t.error.is_none() {
                    let _ = t.run(Goal::CloseNotify);
                }
                let _ = t.flush_tls();
                let _ = t.sock.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Plaintext encrypted per write call at most; more waits until the ciphertext is sent.
const MAX_ENCRYPT: usize = TLS_BUFFER_LIMIT;

/// Size of one read from a TLS socket: a whole record (16 KiB + header and tag) fits.
const TLS_READ_SIZE: usize = 17 * 1024;

thread_local! {
    /// Each thread's buffer for reads from TLS sockets (see [`TLS_READ_SIZE`]).
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; TLS_READ_SIZE]);
}

/// The server side of a TLS connection on rustls' unbuffered API: the buffers are ours, so
/// each one is freed as soon as it is empty and an idle connection holds none (the buffered
/// API keeps a 4 KiB read buffer per connection for its lifetime).
pub(crate) struct ServerTls {
    sock: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not processed yet: a partial record, between reads.
    incoming: Vec<u8>,
    /// Ciphertext to send; `sent` bytes of it are already written.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted data not taken by the reader yet; `taken` bytes of it are.
    plaintext: Vec<u8>,
    taken: usize,
    /// The socket reported end of stream.
    eof: bool,
    /// The peer sent close_notify: no more data will come.
    peer_closed: bool,
    error: Option<rustls::Error>,
}

/// What [`ServerTls::run`] should do once rustls is ready for application data.
enum Goal<'a> {
    /// Only process what arrived.
    Read,
    /// Encrypt (a prefix of) these bytes.
    Write(&'a [u8]),
    /// Queue a close_notify alert.
    CloseNotify,
}

/// Appends what `fill` writes to `out`, growing it to the size `fill` asks for.
fn append_with(
    out: &mut Vec<u8>,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match fill(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::General("cannot encode a TLS record".into()));
            }
        }
    }
}

impl ServerTls {
    /// Feeds `incoming` to rustls until it needs more bytes or is ready for application data,
    /// then does `goal`. Returns the plaintext bytes encrypted (for `Goal::Write`; 0 while the
    /// handshake is not complete).
    fn run(&mut self, goal: Goal<'_>) -> Result<usize, rustls::Error> {
        let ServerTls {
            conn,
            incoming,
            outgoing,
            plaintext,
            peer_closed,
            ..
        } = self;
        let mut start = 0;
        let result = loop {
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut incoming[start..]);
            let step = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut result = Ok(None);
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plaintext.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    result
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => append_with(outgoing, |buf| {
                    encode.encode(buf).map_err(|e| match e {
                        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                            Some(required_size)
                        }
                        _ => None,
                    })
                })
                .map(|()| None),
                // The records are in `outgoing`, sent before anything encoded later.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match goal {
                    Goal::Read => Ok(Some(0)),
                    Goal::Write(data) => {
                        let data = &data[..data.len().min(MAX_ENCRYPT)];
                        append_with(outgoing, |buf| {
                            traffic.encrypt(data, buf).map_err(|e| match e {
                                EncryptError::InsufficientSize(InsufficientSizeError {
                                    required_size,
                                }) => Some(required_size),
                                _ => None,
                            })
                        })
                        .map(|()| Some(data.len()))
                    }
                    Goal::CloseNotify => append_with(outgoing, |buf| {
                        traffic.queue_close_notify(buf).map_err(|e| match e {
                            EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Some(required_size),
                            _ => None,
                        })
                    })
                    .map(|()| Some(0)),
                },
                // BlockedHandshake (more bytes needed), Closed, early data (not enabled).
                Ok(_) => Ok(Some(0)),
            };
            start += discard;
            match step {
                Ok(None) => {}
                Ok(Some(n)) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        incoming.drain(..start);
        if incoming.is_empty() {
            *incoming = Vec::new();
        }
        result
    }

    /// After a failure rustls has an alert queued for the peer: encode and send it. The bytes
    /// that failed are dropped first: processing them again would fail again.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        self.incoming = Vec::new();
        let _ = self.run(Goal::Read);
        let _ = self.flush_tls();
        self.error = Some(e.clone());
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn flush_tls(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            match self.sock.write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    fn flush_quiet(&mut self) -> io::Result<()> {
        match self.flush_tls() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.taken < self.plaintext.len() {
                let n = buf.len().min(self.plaintext.len() - self.taken);
                buf[..n].copy_from_slice(&self.plaintext[self.taken..self.taken + n]);
                self.taken += n;
                if self.taken == self.plaintext.len() {
                    self.plaintext = Vec::new();
                    self.taken = 0;
                }
                return Ok(n);
            }
            if self.error.is_some() {
                return Err(io::ErrorKind::InvalidData.into());
            }
            if self.peer_closed || self.eof {
                return Ok(0);
            }
            // Read into the thread's scratch buffer and keep only what arrived: a read that
            // finds nothing (every other read on a busy connection) then costs no allocation
            // and no zeroing of a record-sized buffer.
            let result = READ_SCRATCH.with_borrow_mut(|chunk| {
                let result = self.sock.read(chunk);
                if let Ok(n) = result {
                    self.incoming.extend_from_slice(&chunk[..n]);
                }
                result
            });
            match result {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.run(Goal::Read) {
                return Err(self.fail(e));
            }
            // Handshake messages answer what was just read.
            self.flush_quiet()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.error.is_some() {
            return Err(io::ErrorKind::InvalidData.into());
        }
        self.flush_tls()?;
        match self.run(Goal::Write(buf)) {
            // Still handshaking: the reader's progress will let the data through.
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => {
                self.flush_quiet()?;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl TlsStream {
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends what rustls queued, keeping `WouldBlock` quiet (WRITABLE interest covers it).
    fn flush_quiet(&mut self) -> io::Result<()> {
        match self.flush_tls() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: an end of stream all the same (the
                // WebSocket close handshake says whether the ending was clean).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert telling the peer why.
                let _ = self.flush_tls();
                self.error = Some(e.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages and key updates answer what was just read.
            self.flush_quiet()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.flush_tls()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 {
            // rustls' buffer is full (still handshaking): wait for the socket.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_quiet()?;
        Ok(n)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
            Transport::TlsServer(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
            Transport::TlsServer(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}
