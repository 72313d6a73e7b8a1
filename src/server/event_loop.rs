//! The event loop: one thread, one `mio::Poll`, every connection in a slab,
//! every deadline on a timer wheel.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::connection::{Conn, Phase};
use crate::config::Config;
use crate::protocol::frame::{self, OpCode};
use crate::protocol::handshake::{self, Outcome, Policy, Rejection};
use crate::protocol::message::{Limits, Message};
use crate::timer::TimerWheel;

/// Tokens with the top bit set are the loop's own; connection tokens are
/// `generation << 32 | slab index` with a 31-bit generation, so a token
/// that outlives its connection (a late event, a stale timer) never reaches
/// the connection that reuses the slot.
const LISTENER: Token = Token(usize::MAX);
const GENERATION_MASK: u32 = 0x7FFF_FFFF;
/// Timer payload that retries accepting after running out of descriptors.
const ACCEPT_RETRY: u64 = u64::MAX;
/// One read buffer for the whole loop. Large enough that a busy connection
/// needs few reads per turn; a connection keeps bytes of its own only when a
/// frame is split across reads.
const READ_BUFFER: usize = 64 * 1024;
/// Reads per connection per readiness event before others get their turn.
const MAX_READS_PER_EVENT: usize = 16;

/// A WebSocket server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    rbuf: Vec<u8>,
    core: Core,
}

/// Everything but the connections and the read buffer, so that a connection
/// and the bytes just read into the shared buffer can be borrowed alongside.
struct Core {
    cfg: Config,
    start: Instant,
    now: u64,
    timers: TimerWheel<u64>,
    /// Outbound bytes of the connection being served, written with one
    /// syscall when it is done.
    wbuf: Vec<u8>,
    next_generation: u32,
    accept_paused: bool,
}

/// What to do with a connection after its input was handled.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Keep,
    Drop(&'static str),
}

impl Server {
    /// Binds the listener. Nothing is served until [`run`](Server::run).
    pub fn bind(cfg: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(cfg.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            local_addr,
            conns: Slab::new(),
            rbuf: vec![0; READ_BUFFER],
            core: Core {
                cfg,
                start: Instant::now(),
                now: 0,
                timers: TimerWheel::new(0),
                wbuf: Vec::new(),
                next_generation: 0,
                accept_paused: false,
            },
        })
    }

    /// The address the WebSocket listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs the loop on the calling thread.
    pub fn run(mut self) -> io::Result<()> {
        info!("listening on ws://{}", self.local_addr);
        let mut events = Events::with_capacity(1024);
        loop {
            self.core.tick();
            let timeout = self
                .core
                .timers
                .next_expiry()
                .map(|t| Duration::from_millis(t.saturating_sub(self.core.now)));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.core.tick();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    Token(t) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.connection_event(t, readable, ev.is_writable());
                    }
                }
            }
            self.expire_timers();
        }
    }

    fn accept(&mut self) {
        if self.core.accept_paused {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.conns.len() >= self.core.cfg.max_connections {
                        let mut out = Vec::new();
                        handshake::write_rejection(
                            &mut out,
                            &Rejection {
                                status: 503,
                                reason: "server at its connection limit",
                            },
                        );
                        // Best effort: the socket buffer of a new connection
                        // takes these few bytes at once.
                        let _ = stream.write(&out);
                        debug!("{peer}: refused, at --max-connections");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let generation = self.core.next_generation;
                    self.core.next_generation = (generation + 1) & GENERATION_MASK;
                    let entry = self.conns.vacant_entry();
                    let token = conn_token(entry.key(), generation);
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(token as usize), Interest::READABLE)
                    {
                        warn!("{peer}: cannot register: {e}");
                        continue;
                    }
                    let mut conn = Conn::new(stream, token, peer);
                    let deadline = self.core.now + self.core.cfg.handshake_timeout.as_millis() as u64;
                    conn.timer = Some(self.core.timers.schedule(deadline, token));
                    entry.insert(conn);
                    debug!("{peer}: accepted");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or memory: the
                    // pending connections stay queued, and with edge-triggered
                    // readiness nothing would wake us for them again, so retry
                    // on a timer rather than spin.
                    warn!("accept failed: {e}; retrying in 100 ms");
                    self.core.accept_paused = true;
                    let at = self.core.now + 100;
                    self.core.timers.schedule(at, ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn connection_event(&mut self, token: usize, readable: bool, writable: bool) {
        let Some(idx) = self.live_index(token as u64) else {
            return;
        };
        if writable && self.on_writable(idx) != After::Keep {
            return;
        }
        if readable {
            self.on_readable(idx);
        }
    }

    /// The slab index for a token, if its connection is still the one the
    /// token was made for.
    fn live_index(&self, token: u64) -> Option<usize> {
        let idx = (token & 0xFFFF_FFFF) as usize;
        match self.conns.get(idx) {
            Some(c) if c.token == token => Some(idx),
            _ => None,
        }
    }

    fn on_readable(&mut self, idx: usize) {
        for _ in 0..MAX_READS_PER_EVENT {
            let conn = &mut self.conns[idx];
            let n = match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    let why = match conn.phase {
                        Phase::Failing { .. } | Phase::CloseAfterFlush => "closed",
                        _ => "peer closed the TCP connection without a close frame",
                    };
                    self.drop_conn(idx, why);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(idx, "read error");
                    return;
                }
            };
            let after = self.core.on_bytes(conn, &mut self.rbuf[..n]);
            if let After::Drop(why) = after {
                self.drop_conn(idx, why);
                return;
            }
            if self.flush(idx) != After::Keep {
                return;
            }
            // A short read drained the socket: with edge-triggered readiness
            // the next byte to arrive raises a new event, so another read
            // now would only return WouldBlock.
            if n < self.rbuf.len() {
                return;
            }
        }
        // Read budget spent with data still waiting: come back next turn
        // rather than starve the other connections. Re-registering re-arms
        // the edge so the remaining bytes raise a new event.
        let conn = &mut self.conns[idx];
        let interest = if conn.want_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let token = conn.token;
        if self
            .poll
            .registry()
            .reregister(&mut conn.stream, Token(token as usize), interest)
            .is_err()
        {
            self.drop_conn(idx, "reregister failed");
        }
    }

    fn on_writable(&mut self, idx: usize) -> After {
        let conn = &mut self.conns[idx];
        if conn.backlog() > 0 {
            match write_some(&mut conn.stream, &conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(_) => {
                    self.drop_conn(idx, "write error");
                    return After::Drop("write error");
                }
            }
        }
        self.after_write(idx)
    }

    /// Writes what the connection's input produced (in `wbuf`), keeps what the
    /// socket does not take, and runs what must happen once output drains.
    fn flush(&mut self, idx: usize) -> After {
        let conn = &mut self.conns[idx];
        if !self.core.wbuf.is_empty() {
            debug_assert_eq!(conn.backlog(), 0, "frames go to `out` while it is non-empty");
            match write_some(&mut conn.stream, &self.core.wbuf) {
                Ok(n) if n == self.core.wbuf.len() => {}
                Ok(n) => {
                    conn.out.clear();
                    conn.out.extend_from_slice(&self.core.wbuf[n..]);
                    conn.out_pos = 0;
                }
                Err(_) => {
                    self.core.wbuf.clear();
                    self.drop_conn(idx, "write error");
                    return After::Drop("write error");
                }
            }
            self.core.wbuf.clear();
        }
        self.after_write(idx)
    }

    fn after_write(&mut self, idx: usize) -> After {
        let conn = &mut self.conns[idx];
        let token = Token(conn.token as usize);
        if conn.backlog() > 0 {
            if !conn.want_write {
                conn.want_write = true;
                if self
                    .poll
                    .registry()
                    .reregister(&mut conn.stream, token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    self.drop_conn(idx, "reregister failed");
                    return After::Drop("reregister failed");
                }
            }
            return After::Keep;
        }
        // Drained: give the buffer back.
        if conn.out.capacity() > 0 {
            conn.out = Vec::new();
            conn.out_pos = 0;
        }
        if conn.want_write {
            conn.want_write = false;
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, Interest::READABLE)
                .is_err()
            {
                self.drop_conn(idx, "reregister failed");
                return After::Drop("reregister failed");
            }
        }
        match conn.phase {
            Phase::CloseAfterFlush => {
                self.drop_conn(idx, "closed");
                After::Drop("closed")
            }
            Phase::Failing { write_shut: false } => {
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.phase = Phase::Failing { write_shut: true };
                After::Keep
            }
            _ => After::Keep,
        }
    }

    fn expire_timers(&mut self) {
        while let Some((_, token)) = self.core.timers.poll(self.core.now) {
            if token == ACCEPT_RETRY {
                self.core.accept_paused = false;
                self.accept();
                continue;
            }
            let Some(idx) = self.live_index(token) else {
                continue;
            };
            let conn = &mut self.conns[idx];
            conn.timer = None;
            let why = match conn.phase {
                Phase::Handshake(_) => "handshake timeout",
                Phase::Open => continue,
                _ => "close timeout",
            };
            self.drop_conn(idx, why);
        }
    }

    fn drop_conn(&mut self, idx: usize, why: &str) {
        let conn = self.conns.remove(idx);
        if let Some(key) = conn.timer {
            self.core.timers.cancel(key);
        }
        debug!("{}: dropped: {why}", conn.peer);
        // Closing the descriptor removes it from the poll set.
    }
}

impl Core {
    fn tick(&mut self) {
        self.now = self.start.elapsed().as_millis() as u64;
    }

    fn limits(&self) -> Limits {
        Limits {
            max_message_size: self.cfg.max_message_size,
        }
    }

    fn rearm(&mut self, conn: &mut Conn, at: u64, token: u64) {
        if let Some(key) = conn.timer.take() {
            self.timers.cancel(key);
        }
        conn.timer = Some(self.timers.schedule(at, token));
    }

    /// Handles bytes just read for `conn`, in place.
    fn on_bytes(&mut self, conn: &mut Conn, data: &mut [u8]) -> After {
        match &mut conn.phase {
            Phase::Handshake(pending) => {
                if pending.is_empty() {
                    self.on_handshake_bytes(conn, data, true)
                } else {
                    pending.extend_from_slice(data);
                    let mut pending = std::mem::take(pending);
                    let after = self.on_handshake_bytes(conn, &mut pending, false);
                    if let Phase::Handshake(p) = &mut conn.phase {
                        // Still incomplete: keep the bytes.
                        *p = pending;
                    }
                    after
                }
            }
            Phase::Open => self.on_frames(conn, data),
            Phase::CloseAfterFlush | Phase::Failing { .. } => After::Keep,
        }
    }

    fn on_handshake_bytes(&mut self, conn: &mut Conn, data: &mut [u8], fresh: bool) -> After {
        let policy = Policy {
            path: self.cfg.path.as_deref(),
            allowed_origins: self.cfg.allowed_origins.as_deref(),
        };
        match handshake::parse_request(data, &policy) {
            Outcome::Partial => {
                if fresh {
                    conn.phase = Phase::Handshake(data.to_vec());
                }
                After::Keep
            }
            Outcome::Reject(r) => {
                debug!("{}: handshake refused: {} {}", conn.peer, r.status, r.reason);
                handshake::write_rejection(&mut self.wbuf, &r);
                self.fail(conn);
                After::Keep
            }
            Outcome::Accept(a) => {
                handshake::write_accept(&mut self.wbuf, &a.accept);
                conn.phase = Phase::Open;
                if let Some(key) = conn.timer.take() {
                    self.timers.cancel(key);
                }
                debug!("{}: upgraded", conn.peer);
                // Frames that came with the request.
                self.on_frames(conn, &mut data[a.consumed..])
            }
        }
    }

    /// Enters the failing phase: what is queued is flushed, then the write
    /// side is shut and the client gets `close_timeout` to go away.
    fn fail(&mut self, conn: &mut Conn) {
        conn.phase = Phase::Failing { write_shut: false };
        let at = self.now + self.cfg.close_timeout.as_millis() as u64;
        let token = conn.token;
        self.rearm(conn, at, token);
    }

    fn on_frames(&mut self, conn: &mut Conn, data: &mut [u8]) -> After {
        let limits = self.limits();
        let echo = self.cfg.echo;
        let max_backpressure = self.cfg.max_backpressure;
        let mut pos = 0;
        loop {
            let backlog = conn.backlog();
            if backlog > max_backpressure {
                return After::Drop("backpressure");
            }
            let sink = if backlog > 0 { &mut conn.out } else { &mut self.wbuf };
            let open = matches!(conn.phase, Phase::Open);
            match conn.decoder.decode(&mut data[pos..], &limits) {
                Ok((_, None)) => return After::Keep,
                Ok((used, Some(msg))) => {
                    pos += used;
                    match msg {
                        Message::Text(t) if open && echo => frame::encode_frame(sink, OpCode::Text, t.as_bytes()),
                        Message::Binary(b) if open && echo => frame::encode_frame(sink, OpCode::Binary, b),
                        Message::Ping(p) if open => frame::encode_frame(sink, OpCode::Pong, p),
                        Message::Close(c) => {
                            if !open {
                                // The answer to our close: the handshake is done.
                                return After::Drop("closed");
                            }
                            match c {
                                Some((code, _)) => frame::encode_close(sink, code, ""),
                                None => frame::encode_frame(sink, OpCode::Close, &[]),
                            }
                            debug!("{}: client closed with {:?}", conn.peer, c.map(|c| c.0));
                            conn.phase = Phase::CloseAfterFlush;
                            return After::Keep;
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    debug!("{}: protocol error: {e}", conn.peer);
                    frame::encode_close(sink, e.code, e.reason);
                    self.fail(conn);
                    return After::Keep;
                }
            }
        }
    }
}

fn conn_token(idx: usize, generation: u32) -> u64 {
    ((generation as u64) << 32) | idx as u64
}

/// Writes as much of `buf` as the socket takes without blocking.
fn write_some<W: Write>(w: &mut W, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
