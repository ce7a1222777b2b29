//! TLS on the TCP links graunt serves and opens (rustls with ring): the
//! server side of a listener ([`TlsServer`], optionally requiring a client
//! certificate from a configured CA), the client side of a relay's or
//! agent's destination ([`TlsClient`]), the stream either gives
//! ([`Conn`]), and the HTTP listener axum serves over TLS ([`TlsListener`]).
//!
//! Certificates, keys and CAs are PEM files. Both sides look at their
//! files again when a new connection opens, at most once a second (at once
//! after [`reload_all`], which SIGHUP calls): changed files are used by new
//! connections, open ones keep theirs, and a file that does not load is
//! logged and the previous one kept.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;
use crate::net::LogLimiter;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often, at most, the files are looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// Bumped by [`reload_all`]: every TLS side looks at its files on its next
/// connection.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every TLS listener and client look at its files on its next
/// connection (SIGHUP).
pub fn reload_all() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS files, as config files name them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (PEM) or the handshake fails.
    pub client_ca_file: Option<PathBuf>,
}

/// How a relay or agent reaches its destinations over TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFiles {
    /// CAs (PEM) the destination's certificate must chain to.
    pub ca_file: PathBuf,
    /// This side's certificate (PEM), for destinations that require one.
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the destination's certificate must carry [the host of its
    /// address].
    pub server_name: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::config(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::config(format!("{}: no PEM private key in it: {e}", path.display())))
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in certs(path, pem)? {
        store
            .add(cert)
            .map_err(|e| Error::config(format!("{}: not a usable CA: {e}", path.display())))?;
    }
    Ok(store)
}

/// Builds a config from its files' paths and contents.
type Build<T> = fn(&[PathBuf], &[Vec<u8>]) -> Result<T, Error>;

/// A config built from files, rebuilt when they change.
struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    contents: Vec<Vec<u8>>,
    current: Arc<T>,
    checked: Instant,
    generation: u64,
}

static RELOAD_LOG: LogLimiter = LogLimiter::new(60);

impl<T> Reloading<T> {
    fn load(what: &'static str, paths: Vec<PathBuf>, build: Build<T>) -> Result<Self, Error> {
        let contents = paths
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let current = Arc::new(build(&paths, &contents)?);
        Ok(Reloading {
            what,
            paths,
            build,
            state: Mutex::new(Loaded {
                contents,
                current,
                checked: Instant::now(),
                generation: GENERATION.load(Ordering::Relaxed),
            }),
        })
    }

    /// The config to use for a new connection.
    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = GENERATION.load(Ordering::Relaxed);
        if state.checked.elapsed() < RECHECK && state.generation == generation {
            return state.current.clone();
        }
        state.checked = Instant::now();
        state.generation = generation;
        let contents = self
            .paths
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>();
        match contents {
            Ok(contents) if contents != state.contents => {
                match (self.build)(&self.paths, &contents) {
                    Ok(built) => {
                        tracing::info!(what = self.what, files = ?self.paths, "TLS files changed; new connections use them");
                        state.current = Arc::new(built);
                        state.contents = contents;
                    }
                    Err(e) => {
                        if RELOAD_LOG.allow() {
                            tracing::error!(what = self.what, error = %e, "changed TLS files do not load; keeping the previous ones");
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if RELOAD_LOG.allow() {
                    tracing::error!(what = self.what, error = %e, "TLS files unreadable; keeping the previous ones");
                }
            }
        }
        state.current.clone()
    }
}

/// The server side of a TLS listener.
pub struct TlsServer {
    config: Reloading<ServerConfig>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.config.paths)
            .finish()
    }
}

fn server_config(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<ServerConfig, Error> {
    let chain = certs(&paths[0], &contents[0])?;
    let key = key(&paths[1], &contents[1])?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let builder = match (paths.get(2), contents.get(2)) {
        (Some(path), Some(pem)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(path, pem)?),
                provider(),
            )
            .build()
            .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        Error::config(format!(
            "{} and {} do not make a certificate and its key: {e}",
            paths[0].display(),
            paths[1].display()
        ))
    })
}

fn http_server_config(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<ServerConfig, Error> {
    let mut config = server_config(paths, contents)?;
    // The HTTP server speaks HTTP/1.1 only: a client offered h2 must not get it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsServer {
    /// Loads the files of a carbon listener; an error names the file and
    /// what is wrong with it.
    pub fn load(files: &ServerFiles) -> Result<Arc<TlsServer>, Error> {
        TlsServer::load_with(files, server_config)
    }

    /// Loads the files of an HTTP listener (it offers ALPN `http/1.1`).
    pub fn load_http(files: &ServerFiles) -> Result<Arc<TlsServer>, Error> {
        TlsServer::load_with(files, http_server_config)
    }

    fn load_with(files: &ServerFiles, build: Build<ServerConfig>) -> Result<Arc<TlsServer>, Error> {
        let mut paths = vec![files.cert_file.clone(), files.key_file.clone()];
        paths.extend(files.client_ca_file.clone());
        Ok(Arc::new(TlsServer {
            config: Reloading::load("listener", paths, build)?,
        }))
    }

    /// Runs the server handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Conn> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Conn::Tls(Box::new(tokio_rustls::TlsStream::Server(stream))))
    }
}

/// The client side of TLS links to destinations.
pub struct TlsClient {
    config: Reloading<ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("files", &self.config.paths)
            .finish()
    }
}

fn client_config(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_root_certificates(roots(&paths[0], &contents[0])?);
    match (paths.get(1), paths.get(2)) {
        (Some(cert), Some(key_path)) => {
            let chain = certs(cert, &contents[1])?;
            let key = key(key_path, &contents[2])?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config(format!(
                    "{} and {} do not make a certificate and its key: {e}",
                    cert.display(),
                    key_path.display()
                ))
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl TlsClient {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: &ClientFiles) -> Result<Arc<TlsClient>, Error> {
        let mut paths = vec![files.ca_file.clone()];
        match (&files.cert_file, &files.key_file) {
            (Some(c), Some(k)) => paths.extend([c.clone(), k.clone()]),
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "a TLS client certificate needs both cert_file and key_file",
                ))
            }
        }
        Ok(Arc::new(TlsClient {
            config: Reloading::load("destination", paths, client_config)?,
            server_name: files.server_name.clone(),
        }))
    }

    /// The client config for a new connection (files looked at again as
    /// for [`TlsClient::connect`]).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }

    /// Connects to `addr` (`host:port`) and runs the client handshake,
    /// checking the certificate against the host (or `server_name`).
    pub async fn connect(&self, tcp: TcpStream, addr: &str) -> io::Result<Conn> {
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_string(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a name or address a certificate can carry"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Conn::Tls(Box::new(tokio_rustls::TlsStream::Client(stream))))
    }
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Connects to `addr`, over TLS when `tls` is given.
pub async fn connect(addr: &str, tls: Option<&TlsClient>, timeout: Duration) -> io::Result<Conn> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Conn::Plain(tcp)),
        Some(t) => t.connect(tcp, addr).await,
    }
}

/// A TCP connection, plain or over TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, either side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// The far end's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Reads what has arrived without waiting (`WouldBlock` when nothing).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.try_read(buf),
            Conn::Tls(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut **s).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes what the kernel takes now without waiting (`WouldBlock` when
    /// nothing).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.try_write(buf),
            Conn::Tls(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let wrote = match Pin::new(&mut **s).poll_write(&mut cx, buf) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                };
                // Push the records out now; what the kernel does not take
                // goes with the next write.
                let _ = Pin::new(&mut **s).poll_flush(&mut cx);
                wrote
            }
        }
    }

    /// Waits until the far end has sent something (or closed).
    pub async fn readable(&self) {
        let _ = self.tcp().readable().await;
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

static HANDSHAKE_LOG: LogLimiter = LogLimiter::new(10);

/// Logs a failed server handshake, rate-limited.
pub(crate) fn handshake_failed(protocol: &str, peer: Option<SocketAddr>, error: &io::Error) {
    if HANDSHAKE_LOG.allow() {
        tracing::warn!(protocol, peer = ?peer, error = %error, "TLS handshake failed; connection closed (this message is rate-limited)");
    }
}

/// An HTTP listener whose connections are TLS, for `axum::serve`:
/// handshakes run on their own tasks (a slow client holds up no one) and
/// finished ones are handed to the server.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

/// Handshakes in progress at once on one HTTP listener.
const MAX_HANDSHAKES: usize = 1024;

impl TlsListener {
    /// Accepts on `listener` and runs `tls` handshakes.
    pub fn new(listener: TcpListener, tls: Arc<TlsServer>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(protocol = "https", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls.accept(tcp).await {
                        Ok(conn) => {
                            drop(permit);
                            let _ = tx.send((conn, peer)).await;
                        }
                        Err(e) => handshake_failed("https", Some(peer), &e),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accepting task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("node1:2004"), "node1");
        assert_eq!(host_of("127.0.0.1:2004"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2004"), "::1");
    }
}
