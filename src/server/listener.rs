//! The WebSocket listener: a deep accept queue, accepting until the kernel
//! has no more, refusing with `503` past `--max-connections` or when the
//! process runs out of descriptors, and pausing when accepting fails.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};

use std::sync::atomic::Ordering;

use super::connections::Connections;
use super::links::LoopMsg;
use crate::metrics::RejectReason;
use crate::protocol::handshake::{self, Rejection};

/// How long accepting pauses after an error it cannot answer.
const RETRY_MS: u64 = 100;

/// Binds a listener with a deep accept queue: connection storms (a fleet
/// reconnecting after a restart) should queue in the kernel, not be refused.
pub(super) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Restarting must not wait out TIME_WAIT sockets of the last run.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(65_535)?;
    Ok(TcpListener::from_std(socket.into()))
}

pub(super) struct Acceptor {
    /// `None` once shutting down.
    pub listener: Option<TcpListener>,
    /// Set while accepting is paused after an error: when to try again.
    pub retry_at: Option<u64>,
    /// A descriptor held in reserve, released to refuse connections cleanly
    /// when the process runs out.
    reserve_fd: Option<std::fs::File>,
    fd_warned_at: Option<u64>,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener: Some(listener),
            retry_at: None,
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            fd_warned_at: None,
        }
    }

    /// Accepts every waiting connection, each for the loop with the fewest
    /// (this one's `conns`, or another loop's, which adopts it).
    pub fn accept(&mut self, conns: &mut Connections, rbuf: &mut [u8]) {
        if self.retry_at.is_some() {
            return;
        }
        let now = conns.cx.now();
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    conns.cx.metrics.connections_accepted += 1;
                    let shared = conns.shared.clone();
                    if shared.total_assigned() >= conns.cx.cfg.max_connections {
                        conns.cx.metrics.reject(RejectReason::MaxConnections);
                        refuse(conns, stream, rbuf, "server at its connection limit");
                        debug!("{peer}: refused, at --max-connections");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let to = shared.least_loaded();
                    shared.loops[to].assigned.fetch_add(1, Ordering::Relaxed);
                    if to == conns.loop_index {
                        match conns.insert(stream) {
                            Ok(()) => debug!("{peer}: accepted"),
                            Err(e) => warn!("{peer}: cannot register: {e}"),
                        }
                    } else if shared.send(to, LoopMsg::Adopt(stream)) {
                        debug!("{peer}: accepted for loop {to}");
                    } else {
                        // That loop has stopped (the process is exiting).
                        shared.loops[to].assigned.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    conns.cx.metrics.accept_errors += 1;
                    // Out of descriptors: give back the reserve one, take the
                    // waiting connection, refuse it with a 503 so the client
                    // knows at once, and take the reserve again.
                    if is_out_of_fds(&e) && self.reserve_fd.take().is_some() {
                        // Linux reports EMFILE before it looks at the queue,
                        // so only this accept tells whether anyone waits.
                        let refused = self.listener.as_ref().map(|l| l.accept());
                        let waiting = matches!(refused, Some(Ok(_)));
                        if let Some(Ok((stream, peer))) = refused {
                            conns.cx.metrics.connections_accepted += 1;
                            conns.cx.metrics.reject(RejectReason::OutOfDescriptors);
                            refuse(conns, stream, rbuf, "server out of file descriptors");
                            debug!("{peer}: refused, out of file descriptors");
                        }
                        self.reserve_fd = std::fs::File::open("/dev/null").ok();
                        if !waiting && self.reserve_fd.is_some() {
                            return;
                        }
                        if self.reserve_fd.is_some() {
                            if self.fd_warned_at.is_none_or(|t| now >= t + 10_000) {
                                warn!("out of file descriptors ({e}): refusing new connections with 503");
                                self.fd_warned_at = Some(now);
                            }
                            continue;
                        }
                    }
                    // Without a reserve (or on other errors, e.g. ENOMEM):
                    // the pending connections stay queued, and with
                    // edge-triggered readiness nothing would wake us for them
                    // again, so retry on a timer rather than spin.
                    warn!("accept failed: {e}; retrying in {RETRY_MS} ms");
                    self.retry_at = Some(now + RETRY_MS);
                    return;
                }
            }
        }
    }

    /// Accepting was paused: try again if it is time.
    pub fn retry(&mut self, conns: &mut Connections, rbuf: &mut [u8]) {
        if self.retry_at.is_some_and(|at| conns.cx.now() >= at) {
            self.retry_at = None;
            self.accept(conns, rbuf);
        }
    }
}

/// Answers a connection that will not be served with `503` and closes it
/// (a TLS connection is closed without an answer).
/// What the client already sent is read first, so that closing does not
/// turn into a reset that could destroy the answer in flight.
fn refuse(conns: &mut Connections, mut stream: TcpStream, rbuf: &mut [u8], reason: &'static str) {
    let _ = stream.read(rbuf);
    if conns.shared.tls.is_some() {
        // A TLS client would take a plaintext 503 for a broken handshake,
        // and a full handshake just to refuse is what an overloaded server
        // cannot afford: the connection is closed, which clients retry.
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    conns.cx.metrics.handshake_failure(503);
    let mut out = Vec::new();
    handshake::write_rejection(&mut out, &Rejection { status: 503, reason });
    // Best effort: the socket buffer of a new connection takes these few
    // bytes at once.
    let _ = stream.write(&out);
    let _ = stream.shutdown(Shutdown::Write);
}

fn is_out_of_fds(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}
