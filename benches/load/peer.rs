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

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The peer exits by itself after this long, whatever happens to the bench.
const MAX_LIFETIME: Duration = Duration::from_secs(2 * 3600);

pub const READ_BUFFER_SIZE: usize = 4096;
pub const LISTEN_BACKLOG: u32 = 65_535;

pub fn run(port: u16) -> ExitCode {
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
    rt.block_on(serve(port))
}

async fn serve(port: u16) -> ExitCode {
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
                tokio::spawn(echo(stream));
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

async fn echo(stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
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
