//! The comparison server: a plain tokio-tungstenite echo server, the way
//! one is usually written, on a current-thread runtime (one thread, like
//! wsbeat). The bench binary runs it when started as `--peer-server PORT`.
//!
//! Config: `WebSocketConfig::default().read_buffer_size(4096)`, a 4 KiB
//! read buffer per connection instead of the 128 KiB default, which would
//! otherwise dominate its memory per idle connection; the write buffer is
//! the default (allocated lazily, flushed on every `send`); no compression
//! (tungstenite has none); an accept queue as deep as wsbeat's (see
//! `listen`). Text and binary messages are echoed with `send` (write +
//! flush); pings are answered by tungstenite itself.
//!
//! With `--tls CERT KEY` it serves `wss://` through tokio-rustls (rustls's
//! buffered connection, the usual way), configured as wsbeat's listener is:
//! the aws-lc-rs provider, TLS 1.3 and 1.2, ALPN `http/1.1`, one stateless
//! TLS 1.3 ticket per connection and no session cache, so that both servers
//! do the same handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The peer exits by itself after this long, whatever happens to the bench.
const MAX_LIFETIME: Duration = Duration::from_secs(2 * 3600);

pub const READ_BUFFER_SIZE: usize = 4096;
pub const LISTEN_BACKLOG: u32 = 65_535;

/// `tls`: the certificate and key PEM files, for `wss://`.
pub fn run(port: u16, tls: Option<(&Path, &Path)>) -> ExitCode {
    let acceptor = match tls.map(|(cert, key)| server_config(cert, key)).transpose() {
        Ok(config) => config.map(TlsAcceptor::from),
        Err(e) => {
            eprintln!("peer: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One descriptor per connection, like wsbeat (which raises its own).
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(port, acceptor))
}

/// wsbeat's TLS configuration (`src/tls/config.rs`), rebuilt here.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

async fn serve(port: u16, acceptor: Option<TlsAcceptor>) -> ExitCode {
    let listener = match listen(SocketAddr::from(([127, 0, 0, 1], port))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("peer: bind 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Exit when the bench is gone (reparented) or after MAX_LIFETIME.
    let parent = std::os::unix::process::parent_id();
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent || started.elapsed() > MAX_LIFETIME {
                std::process::exit(0);
            }
        }
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Separate tasks: a future holding both would size every
                // plain connection's task for the TLS one (about 12 KB more).
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => tokio::spawn(echo(stream)),
                    Some(acceptor) => tokio::spawn(echo_tls(stream, acceptor.clone())),
                };
            }
            Err(e) => {
                // Out of descriptors and the like: back off, as servers do.
                eprintln!("peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// `TcpListener::bind` would listen with a backlog of 128 (mio's, like std's):
/// a burst of connects then overflows the accept queue and waits out 1 s SYN
/// retransmits. Listen as wsbeat does instead, with 65,535 (capped by
/// net.core.somaxconn).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn echo_tls(stream: tokio::net::TcpStream, acceptor: TlsAcceptor) {
    if let Ok(tls) = acceptor.accept(stream).await {
        echo(tls).await;
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}
