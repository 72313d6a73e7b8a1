//! The event loop: one thread, one `mio::Poll`, every connection in a slab,
//! every deadline on a timer wheel, every client id in the registry.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::admin_conn::AdminConn;
use super::connection::{Conn, Peer, Phase, spill_out};
use super::handle::{Handle, QUEUE_CAPACITY};
use super::handler::{AppMessage, Command, ConnId, ConnInfo, Control, Handler, NoopHandler, Outgoing};
use super::registry::{Bind, OfflineReason, PresenceEvent, Registry};
use crate::admin::metrics::Metrics;
use crate::config::{Config, Liveness, ServerHeartbeat};
use crate::protocol::frame::{self, OpCode};
use crate::protocol::handshake::{self, Outcome, Policy, Rejection};
use crate::protocol::heartbeat::{Due, Heartbeat, Schedule, parse_heartbeat};
use crate::protocol::message::{Limits, Message};
use crate::timer::TimerWheel;

/// Tokens with the top bit set are the loop's own; connection tokens are
/// `generation << 32 | slab index` with a 31-bit generation, so a token
/// that outlives its connection (a late event, a stale timer, a deferred
/// action) never reaches the connection that reuses the slot.
pub(super) const LISTENER: Token = Token(usize::MAX);
pub(super) const ADMIN_LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// Marks admin connection tokens (bit 63 stays clear: it marks the loop's own).
pub(super) const ADMIN_FLAG: u64 = 1 << 62;
pub(super) const GENERATION_MASK: u32 = 0x3FFF_FFFF;
/// Timer payloads of the loop's own.
const ACCEPT_RETRY: u64 = u64::MAX;
const SHUTDOWN_DEADLINE: u64 = u64::MAX - 1;
/// One read buffer for the whole loop. Large enough that a busy connection
/// needs few reads per turn; a connection keeps bytes of its own only when a
/// frame is split across reads.
pub(super) const READ_BUFFER: usize = 64 * 1024;
/// Most connections whose table is reserved at start-up (beyond it the table
/// grows as needed).
const MAX_PRESIZE: usize = 4 << 20;
/// Commands from other threads run per loop turn.
const COMMANDS_PER_TURN: usize = 1024;
/// Reads per connection per readiness event before others get their turn.
const MAX_READS_PER_EVENT: usize = 16;

/// Live numbers of a running server, readable from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicUsize,
    clients_online: AtomicUsize,
    timers: AtomicUsize,
}

impl Stats {
    /// Sockets held, in any phase (handshake, open, closing).
    pub fn connections_open(&self) -> usize {
        self.connections_open.load(Ordering::Relaxed)
    }
    /// Client ids in the registry.
    pub fn clients_online(&self) -> usize {
        self.clients_online.load(Ordering::Relaxed)
    }
    /// Pending timers (one per connection at most, plus the loop's own).
    pub fn timers(&self) -> usize {
        self.timers.load(Ordering::Relaxed)
    }
}

/// A WebSocket server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    pub(super) poll: Poll,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    pub(super) admin_listener: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
    pub(super) conns: Slab<Conn>,
    pub(super) admin: Slab<AdminConn>,
    pub(super) rbuf: Vec<u8>,
    pub(super) core: Core,
    stats: Arc<Stats>,
    handle: Handle,
    commands: Receiver<Command>,
    signals: Option<Signals>,
    /// Commands being run (kept to reuse its capacity).
    running: Vec<Command>,
    /// Set when a graceful shutdown began: its deadline.
    shutdown_at: Option<u64>,
    /// A descriptor held in reserve, released to refuse connections cleanly
    /// when the process runs out.
    reserve_fd: Option<std::fs::File>,
    fd_warned_at: Option<u64>,
    exit_now: bool,
}

/// Everything but the connections and the read buffer, so that a connection
/// and the bytes just read into the shared buffer can be borrowed alongside.
pub(super) struct Core {
    pub(super) cfg: Config,
    start: Instant,
    /// Monotonic ms since `start`, read once per loop turn.
    pub(super) now: u64,
    /// Unix ms, read with `now`; what users see.
    pub(super) wall: u64,
    pub(super) timers: TimerWheel<u64>,
    /// Outbound bytes of the connection being served, written with one
    /// syscall when it is done.
    wbuf: Vec<u8>,
    pub(super) next_generation: u32,
    accept_paused: bool,
    pub(super) registry: Registry,
    /// Presence changes of this turn, handed out at its end.
    pub(super) events: Vec<PresenceEvent>,
    /// Commands decided while serving one connection (by the handler, or a
    /// replacement), run once it is done.
    ctl: Control,
    pub(super) metrics: Metrics,
    handler: Box<dyn Handler>,
    /// False for the binary's handler: application messages are dropped.
    app_handler: bool,
}

/// What to do with a connection after its input was handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum After {
    Keep,
    Drop(OfflineReason, &'static str),
}

impl Server {
    /// Binds the listeners, with the binary's behaviour for application
    /// messages (dropped, or echoed with `echo`). Nothing is served until
    /// [`run`](Server::run).
    pub fn bind(cfg: Config) -> io::Result<Server> {
        Self::build(cfg, Box::new(NoopHandler), false)
    }

    /// Binds the listeners; `handler` gets the connections' events and
    /// application messages.
    pub fn with_handler(cfg: Config, handler: impl Handler) -> io::Result<Server> {
        Self::build(cfg, Box::new(handler), true)
    }

    fn build(cfg: Config, handler: Box<dyn Handler>, app_handler: bool) -> io::Result<Server> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let mut listener = bind_listener(cfg.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {} (--listen): {e}", cfg.listen)))?;
        let local_addr = listener.local_addr()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let (admin_listener, admin_addr) = match cfg.admin_listen {
            Some(addr) => {
                let mut l = bind_listener(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} (--admin-listen): {e}")))?;
                let a = l.local_addr()?;
                poll.registry().register(&mut l, ADMIN_LISTENER, Interest::READABLE)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let signals = if cfg.handle_signals {
            let mut s = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
            poll.registry().register(&mut s, SIGNALS, Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // Reserve the connection table and the timer arena for the
        // configured maximum up front: the memory is only address space
        // until a connection touches its slot, so resident memory grows one
        // connection at a time instead of doubling (and copying) as a vector
        // would.
        let reserve = cfg.max_connections.min(MAX_PRESIZE);
        let (tx, commands) = sync_channel(QUEUE_CAPACITY);
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            admin_listener,
            admin_addr,
            conns: Slab::with_capacity(reserve),
            admin: Slab::new(),
            rbuf: vec![0; READ_BUFFER],
            core: Core {
                cfg,
                start: Instant::now(),
                now: 0,
                wall: 0,
                timers: TimerWheel::with_capacity(0, reserve + 16),
                wbuf: Vec::new(),
                next_generation: 0,
                accept_paused: false,
                registry: Registry::new(),
                events: Vec::new(),
                ctl: Control::default(),
                metrics: Metrics::default(),
                handler,
                app_handler,
            },
            stats: Arc::default(),
            handle: Handle { tx, waker },
            commands,
            signals,
            running: Vec::new(),
            shutdown_at: None,
            exit_now: false,
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            fd_warned_at: None,
        })
    }

    /// A handle for other threads: push, broadcast, kick, shut down.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address the admin API is bound to, if it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address the WebSocket listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Live numbers, updated at the end of every loop turn.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs the loop on the calling thread.
    pub fn run(mut self) -> io::Result<()> {
        info!("listening on ws://{}", self.local_addr);
        if let Some(a) = self.admin_addr {
            info!("admin API on http://{a}");
        }
        let cfg = &self.core.cfg;
        if cfg.server_heartbeat != ServerHeartbeat::Off && cfg.heartbeat_interval >= cfg.heartbeat_timeout {
            warn!(
                "--heartbeat-interval ({:?}) is not below --heartbeat-timeout ({:?}): clients that only answer server heartbeats will be evicted",
                cfg.heartbeat_interval, cfg.heartbeat_timeout
            );
        }
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
                    ADMIN_LISTENER => self.accept_admin(),
                    WAKER => self.take_commands(),
                    SIGNALS => self.on_signals(),
                    Token(t) => {
                        let hangup = ev.is_read_closed() || ev.is_error();
                        let readable = ev.is_readable() || hangup;
                        if t as u64 & ADMIN_FLAG != 0 {
                            self.admin_event(t as u64, readable, ev.is_writable());
                        } else {
                            self.connection_event(t, readable, hangup, ev.is_writable());
                        }
                    }
                }
                self.run_deferred();
            }
            self.expire_timers();
            self.end_turn();
            if let Some(deadline) = self.shutdown_at {
                self.admin_shutdown();
                if self.exit_now || self.core.now >= deadline || (self.conns.is_empty() && self.admin.is_empty()) {
                    if !self.conns.is_empty() {
                        warn!(
                            "shutdown: dropping {} connections that did not close in time",
                            self.conns.len()
                        );
                    }
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            info!("signal {sig} received");
            self.core.ctl.commands.push(Command::Shutdown);
        }
    }

    /// Moves commands from other threads to the loop, a bounded batch per
    /// turn: a producer that never pauses must not keep the loop from reading
    /// its sockets (heartbeats waiting there would go unseen and their
    /// senders be evicted).
    fn take_commands(&mut self) {
        for _ in 0..COMMANDS_PER_TURN {
            match self.commands.try_recv() {
                Ok(c) => self.core.ctl.commands.push(c),
                Err(_) => return,
            }
        }
        // More may be waiting: make sure the next turn comes back for them.
        let _ = self.handle.waker.wake();
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            warn!("second shutdown request: stopping now");
            self.exit_now = true;
            return;
        }
        let open = self.conns.len();
        info!(
            "shutting down: closing {open} connections (waiting up to {:?})",
            self.core.cfg.shutdown_timeout
        );
        let deadline = self.core.now + ms(self.core.cfg.shutdown_timeout);
        self.shutdown_at = Some(deadline);
        self.core.timers.schedule(deadline, SHUTDOWN_DEADLINE);
        // Stop accepting: closing the listeners refuses new connections.
        self.listener = None;
        self.admin_listener = None;
        let idxs: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for idx in idxs {
            let conn = &mut self.conns[idx];
            match conn.phase {
                Phase::Open => {
                    self.core.leave(conn, OfflineReason::Shutdown);
                    self.close_gracefully(idx, 1001, "server shutting down");
                }
                Phase::Handshake => self.drop_conn(idx, OfflineReason::Shutdown, "shutting down"),
                _ => {}
            }
        }
    }

    fn end_turn(&mut self) {
        // Numbers first: whoever hears of an event can already see it counted.
        self.stats.connections_open.store(self.conns.len(), Ordering::Relaxed);
        self.stats
            .clients_online
            .store(self.core.registry.len(), Ordering::Relaxed);
        self.stats.timers.store(self.core.timers.len(), Ordering::Relaxed);
        if !self.core.events.is_empty() {
            for ev in &self.core.events {
                match ev {
                    PresenceEvent::Online { id, .. } => debug!("online {id}"),
                    PresenceEvent::Offline { id, reason, .. } => debug!("offline {id}: {}", reason.as_str()),
                }
            }
            self.publish_events();
            self.core.events.clear();
        }
    }

    fn accept(&mut self) {
        if self.core.accept_paused {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.core.metrics.connections_accepted += 1;
                    if self.conns.len() >= self.core.cfg.max_connections {
                        self.core.metrics.reject("max_connections");
                        self.refuse(stream, "server at its connection limit");
                        debug!("{peer}: refused, at --max-connections");
                        continue;
                    }
                    let mut stream = stream;
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
                    let mut conn = Conn::new(stream, token, self.core.now);
                    let deadline = self.core.now + ms(self.core.cfg.handshake_timeout);
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
                    self.core.metrics.accept_errors += 1;
                    // Out of descriptors: give back the reserve one, take the
                    // waiting connection, refuse it with a 503 so the client
                    // knows at once, and take the reserve again.
                    if is_out_of_fds(&e) && self.reserve_fd.take().is_some() {
                        // Linux reports EMFILE before it looks at the queue,
                        // so only this accept tells whether anyone waits.
                        let refused = self.listener.as_ref().map(|l| l.accept());
                        let waiting = matches!(refused, Some(Ok(_)));
                        if let Some(Ok((stream, peer))) = refused {
                            self.core.metrics.connections_accepted += 1;
                            self.core.metrics.reject("out_of_descriptors");
                            self.refuse(stream, "server out of file descriptors");
                            debug!("{peer}: refused, out of file descriptors");
                        }
                        self.reserve_fd = std::fs::File::open("/dev/null").ok();
                        if !waiting && self.reserve_fd.is_some() {
                            return;
                        }
                        if self.reserve_fd.is_some() {
                            if self.fd_warned_at.is_none_or(|t| self.core.now >= t + 10_000) {
                                warn!("out of file descriptors ({e}): refusing new connections with 503");
                                self.fd_warned_at = Some(self.core.now);
                            }
                            continue;
                        }
                    }
                    // Without a reserve (or on other errors, e.g. ENOMEM):
                    // the pending connections stay queued, and with
                    // edge-triggered readiness nothing would wake us for them
                    // again, so retry on a timer rather than spin.
                    warn!("accept failed: {e}; retrying in 100 ms");
                    self.core.accept_paused = true;
                    let at = self.core.now + 100;
                    self.core.timers.schedule(at, ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Answers a connection that will not be served with `503` and closes
    /// it. What the client already sent is read first, so that closing does
    /// not turn into a reset that could destroy the answer in flight.
    fn refuse(&mut self, mut stream: mio::net::TcpStream, reason: &'static str) {
        self.core.metrics.handshake_failure(503);
        let _ = stream.read(&mut self.rbuf);
        let mut out = Vec::new();
        handshake::write_rejection(&mut out, &Rejection { status: 503, reason });
        // Best effort: the socket buffer of a new connection takes these few
        // bytes at once.
        let _ = stream.write(&out);
        let _ = stream.shutdown(Shutdown::Write);
    }

    fn connection_event(&mut self, token: usize, readable: bool, hangup: bool, writable: bool) {
        let Some(idx) = self.live_index(token as u64) else {
            return;
        };
        if writable && self.on_writable(idx) != After::Keep {
            return;
        }
        if readable {
            self.on_readable(idx, hangup);
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

    /// Reads and handles what the connection sent. `hangup`: the event also
    /// reported the peer's FIN or a reset, which raise no further event, so
    /// read on until the socket says so.
    fn on_readable(&mut self, idx: usize, hangup: bool) {
        for _ in 0..MAX_READS_PER_EVENT {
            let conn = &mut self.conns[idx];
            let n = match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    let (reason, why) = match conn.phase {
                        Phase::Failing { .. } | Phase::Closing | Phase::CloseAfterFlush => {
                            (OfflineReason::Closed, "closed")
                        }
                        _ => (
                            OfflineReason::Error,
                            "peer closed the TCP connection without a close frame",
                        ),
                    };
                    self.drop_conn(idx, reason, why);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "read error");
                    return;
                }
            };
            self.core.metrics.bytes_received += n as u64;
            let after = self.core.on_bytes(conn, &mut self.rbuf[..n]);
            if let After::Drop(reason, why) = after {
                self.core.wbuf.clear();
                self.drop_conn(idx, reason, why);
                return;
            }
            if self.flush(idx) != After::Keep {
                return;
            }
            // A short read drained the socket: with edge-triggered readiness
            // the next byte to arrive raises a new event, so another read
            // now would only return WouldBlock. Not so for a FIN or a reset
            // reported with this event: only a read shows it.
            if n < self.rbuf.len() && !hangup {
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
            self.drop_conn(idx, OfflineReason::Error, "reregister failed");
        }
    }

    fn on_writable(&mut self, idx: usize) -> After {
        let conn = &mut self.conns[idx];
        if let Some(spill) = conn.spill.as_deref_mut().filter(|s| s.out_pos < s.out.len()) {
            match write_some(&mut conn.stream, &spill.out[spill.out_pos..]) {
                Ok(n) => {
                    spill.out_pos += n;
                    self.core.metrics.bytes_sent += n as u64;
                }
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return After::Drop(OfflineReason::Error, "write error");
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
            let written = write_some(&mut conn.stream, &self.core.wbuf);
            if let Ok(n) = written {
                self.core.metrics.bytes_sent += n as u64;
            }
            match written {
                Ok(n) if n == self.core.wbuf.len() => {}
                Ok(n) => conn.keep_unsent(&self.core.wbuf[n..]),
                Err(_) => {
                    self.core.wbuf.clear();
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return After::Drop(OfflineReason::Error, "write error");
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
                    self.drop_conn(idx, OfflineReason::Error, "reregister failed");
                    return After::Drop(OfflineReason::Error, "reregister failed");
                }
            }
            return After::Keep;
        }
        // Drained: give the buffer back.
        conn.release_spill();
        if conn.want_write {
            conn.want_write = false;
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, Interest::READABLE)
                .is_err()
            {
                self.drop_conn(idx, OfflineReason::Error, "reregister failed");
                return After::Drop(OfflineReason::Error, "reregister failed");
            }
        }
        match conn.phase {
            Phase::CloseAfterFlush => {
                self.drop_conn(idx, OfflineReason::Closed, "closed");
                After::Drop(OfflineReason::Closed, "closed")
            }
            Phase::Failing { write_shut: false } => {
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.phase = Phase::Failing { write_shut: true };
                After::Keep
            }
            _ => After::Keep,
        }
    }

    /// Sends frames to a connection outside of its own input handling (server
    /// heartbeats, evictions, replacements).
    fn send_out_of_band(&mut self, idx: usize, encode: impl FnOnce(&mut Vec<u8>)) -> After {
        let conn = &mut self.conns[idx];
        let backlog = conn.backlog();
        if backlog > self.core.cfg.max_backpressure {
            self.drop_conn(idx, OfflineReason::Backpressure, "backpressure");
            return After::Drop(OfflineReason::Backpressure, "backpressure");
        }
        if backlog > 0 {
            encode(spill_out(&mut conn.spill));
            return After::Keep;
        }
        debug_assert!(self.core.wbuf.is_empty());
        encode(&mut self.core.wbuf);
        self.flush(idx)
    }

    /// Sends a close frame and waits `--close-timeout` for the client's. The
    /// connection has already left the registry.
    fn close_gracefully(&mut self, idx: usize, code: u16, reason: &str) {
        let conn = &mut self.conns[idx];
        conn.phase = Phase::Closing;
        let at = self.core.now + ms(self.core.cfg.close_timeout);
        self.core.arm(conn, at);
        self.send_out_of_band(idx, |out| frame::encode_close(out, code, reason));
    }

    /// Runs queued commands, including those the commands themselves queue
    /// (a kick's `on_close` may send, and so on).
    pub(super) fn run_deferred(&mut self) {
        while !self.core.ctl.commands.is_empty() {
            std::mem::swap(&mut self.running, &mut self.core.ctl.commands);
            let mut batch = std::mem::take(&mut self.running);
            for c in batch.drain(..) {
                self.execute(c);
            }
            self.running = batch;
        }
    }

    fn execute(&mut self, c: Command) {
        match c {
            Command::Replaced(token) => {
                let Some(idx) = self.live_index(token) else { return };
                let conn = &mut self.conns[idx];
                // The registry already points at the newer connection and
                // the offline event is out: let go of the id, then close.
                if matches!(conn.phase, Phase::Open) {
                    debug!("{}: replaced by a newer connection", conn.peer());
                    self.core.leave(conn, OfflineReason::Replaced);
                    self.close_gracefully(idx, 4001, "replaced by a newer connection");
                }
            }
            Command::SendConn(ConnId(token), msg) => {
                if let Some(idx) = self.live_index(token) {
                    self.push_to(idx, &msg);
                }
            }
            Command::SendId(id, msg) => {
                self.push(&id, msg);
            }
            Command::Broadcast(msg) => {
                self.broadcast(msg);
            }
            Command::Kick(id, reason) => {
                self.kick(&id, &reason);
            }
            Command::Shutdown => self.begin_shutdown(),
        }
    }

    /// Queues a message for an open connection; false if it is not open.
    fn push_to(&mut self, idx: usize, msg: &Outgoing) -> bool {
        if !matches!(self.conns[idx].phase, Phase::Open) {
            return false;
        }
        self.core.metrics.messages_sent += 1;
        self.send_out_of_band(idx, |out| match msg {
            Outgoing::Text(t) => frame::encode_frame(out, OpCode::Text, t.as_bytes()),
            Outgoing::Binary(b) => frame::encode_frame(out, OpCode::Binary, b),
        });
        true
    }

    pub(super) fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        match self.core.registry.get(id).and_then(|t| self.live_index(t)) {
            Some(idx) => self.push_to(idx, &msg),
            None => false,
        }
    }

    /// Sends to every open connection (one frame encoded once); how many.
    pub(super) fn broadcast(&mut self, msg: Outgoing) -> usize {
        let mut bytes = Vec::new();
        match &msg {
            Outgoing::Text(t) => frame::encode_frame(&mut bytes, OpCode::Text, t.as_bytes()),
            Outgoing::Binary(b) => frame::encode_frame(&mut bytes, OpCode::Binary, b),
        }
        let idxs: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Open))
            .map(|(k, _)| k)
            .collect();
        for &idx in &idxs {
            self.core.metrics.messages_sent += 1;
            self.send_out_of_band(idx, |out| out.extend_from_slice(&bytes));
        }
        idxs.len()
    }

    /// Closes client `id` with 4003; false if it is not online.
    pub(super) fn kick(&mut self, id: &str, reason: &str) -> bool {
        let Some(idx) = self.core.registry.get(id).and_then(|t| self.live_index(t)) else {
            return false;
        };
        let conn = &mut self.conns[idx];
        info!("kicked {id} ({})", conn.peer());
        self.core.leave(conn, OfflineReason::Kicked);
        self.close_gracefully(idx, 4003, reason);
        true
    }

    fn expire_timers(&mut self) {
        while let Some((_, token)) = self.core.timers.poll(self.core.now) {
            if token == ACCEPT_RETRY {
                self.core.accept_paused = false;
                self.accept();
                continue;
            }
            if token == SHUTDOWN_DEADLINE {
                continue;
            }
            if token & ADMIN_FLAG != 0 {
                self.admin_timer(token);
                continue;
            }
            let Some(idx) = self.live_index(token) else {
                continue;
            };
            self.conns[idx].timer = None;
            self.on_timer(idx);
            self.run_deferred();
        }
    }

    fn on_timer(&mut self, idx: usize) {
        let now = self.core.now;
        let conn = &mut self.conns[idx];
        match conn.phase {
            Phase::Handshake => {
                self.core.metrics.reject("handshake_timeout");
                self.drop_conn(idx, OfflineReason::Error, "handshake timeout")
            }
            Phase::Open => match self.core.schedule().on_timer(now, conn.last_seen, conn.next_beat) {
                Due::Evict => {
                    info!(
                        "evicted {} ({}): heartbeat timeout",
                        conn.client_id.as_deref().unwrap_or("-"),
                        conn.peer()
                    );
                    self.core.leave(conn, OfflineReason::HeartbeatTimeout);
                    self.close_gracefully(idx, 4000, "heartbeat timeout");
                }
                Due::Wait {
                    beat,
                    next_beat,
                    wake_at,
                } => {
                    conn.next_beat = next_beat;
                    if beat {
                        let mode = self.core.cfg.server_heartbeat;
                        self.core.metrics.heartbeats_sent += 1;
                        if mode != ServerHeartbeat::Ping {
                            self.core.metrics.messages_sent += 1;
                        }
                        let after = self.send_out_of_band(idx, |out| {
                            if matches!(mode, ServerHeartbeat::Ping | ServerHeartbeat::Both) {
                                frame::encode_frame(out, OpCode::Ping, b"");
                            }
                            if matches!(mode, ServerHeartbeat::Text | ServerHeartbeat::Both) {
                                frame::encode_frame(out, OpCode::Text, b"heartbeat");
                            }
                        });
                        if after != After::Keep {
                            return;
                        }
                    }
                    let conn = &mut self.conns[idx];
                    self.core.arm(conn, wake_at);
                }
            },
            _ => self.drop_conn(idx, OfflineReason::Closed, "close timeout"),
        }
    }

    fn drop_conn(&mut self, idx: usize, reason: OfflineReason, why: &str) {
        let mut conn = self.conns.remove(idx);
        if let Some(key) = conn.timer.take() {
            self.core.timers.cancel(key);
        }
        match reason {
            OfflineReason::Backpressure => info!(
                "dropped {} ({}): backpressure",
                conn.client_id.as_deref().unwrap_or("-"),
                conn.peer()
            ),
            _ => debug!("{}: dropped: {why}", conn.peer()),
        }
        self.core.leave(&mut conn, reason);
        // Closing the descriptor removes it from the poll set.
    }
}

impl Core {
    fn tick(&mut self) {
        self.now = self.start.elapsed().as_millis() as u64;
        self.wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            interval: ms(self.cfg.heartbeat_interval),
            timeout: ms(self.cfg.heartbeat_timeout),
            beats: self.cfg.server_heartbeat != ServerHeartbeat::Off,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_message_size: self.cfg.max_message_size,
        }
    }

    /// Points the connection's one timer at `at`.
    fn arm(&mut self, conn: &mut Conn, at: u64) {
        if let Some(key) = conn.timer
            && self.timers.reset(key, at)
        {
            return;
        }
        conn.timer = Some(self.timers.schedule(at, conn.token));
    }

    /// The connection leaves the open state for `reason`: its id leaves the
    /// registry (if it still holds it) with an offline event, and the
    /// handler hears of it. Idempotent.
    pub(super) fn leave(&mut self, conn: &mut Conn, reason: OfflineReason) {
        if !conn.opened {
            return;
        }
        conn.opened = false;
        self.metrics.eviction(reason);
        let info = ConnInfo {
            conn: ConnId(conn.token),
            id: conn.client_id.as_deref(),
            stream: &conn.stream,
        };
        self.handler.on_close(&info, reason, &mut self.ctl);
        if let Some(id) = conn.client_id.take()
            && self.registry.unbind(&id, conn.token)
        {
            self.events.push(PresenceEvent::Offline {
                id,
                reason,
                at_ms: self.wall,
            });
        }
    }

    /// Binds `id` to the connection. False when `--duplicate-id reject` keeps
    /// it with another connection.
    fn bind(&mut self, conn: &mut Conn, id: &str) -> bool {
        let id: Arc<str> = id.into();
        match self.registry.bind(&id, conn.token, self.cfg.duplicate_id) {
            Bind::Bound => {}
            Bind::Replaced(old) => {
                // Offline first, so a subscriber never sees the id go
                // offline after it came back.
                self.events.push(PresenceEvent::Offline {
                    id: id.clone(),
                    reason: OfflineReason::Replaced,
                    at_ms: self.wall,
                });
                self.ctl.commands.push(Command::Replaced(old));
            }
            Bind::Rejected => return false,
        }
        conn.client_id = Some(id.clone());
        self.events.push(PresenceEvent::Online { id, at_ms: self.wall });
        true
    }

    /// Handles bytes just read for `conn`, in place.
    fn on_bytes(&mut self, conn: &mut Conn, data: &mut [u8]) -> After {
        match &mut conn.phase {
            Phase::Handshake => match conn.spill.as_mut().filter(|s| !s.handshake.is_empty()) {
                None => self.on_handshake_bytes(conn, data, true),
                Some(s) => {
                    let mut pending = std::mem::take(&mut s.handshake);
                    pending.extend_from_slice(data);
                    let after = self.on_handshake_bytes(conn, &mut pending, false);
                    if conn.phase == Phase::Handshake {
                        // Still incomplete: keep the bytes.
                        conn.spill.get_or_insert_with(Default::default).handshake = pending;
                    } else {
                        conn.release_spill();
                    }
                    after
                }
            },
            Phase::Open | Phase::Closing => self.on_frames(conn, data),
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
                    conn.spill.get_or_insert_with(Default::default).handshake = data.to_vec();
                }
                After::Keep
            }
            Outcome::Reject(r) => {
                debug!("{}: handshake refused: {} {}", conn.peer(), r.status, r.reason);
                self.metrics.handshake_failure(r.status);
                self.metrics.reject("handshake_failed");
                handshake::write_rejection(&mut self.wbuf, &r);
                self.fail(conn);
                After::Keep
            }
            Outcome::Accept(a) => {
                handshake::write_accept(&mut self.wbuf, &a.accept);
                conn.phase = Phase::Open;
                conn.opened = true;
                conn.connected_at = self.now;
                conn.last_seen = self.now;
                let (next_beat, wake_at) = self.schedule().start(self.now);
                conn.next_beat = next_beat;
                self.arm(conn, wake_at);
                debug!("{}: upgraded", conn.peer());
                let mut rejected = false;
                if let Some(id) = a.client_id {
                    rejected = !self.bind(conn, &id);
                }
                let info = ConnInfo {
                    conn: ConnId(conn.token),
                    id: conn.client_id.as_deref(),
                    stream: &conn.stream,
                };
                self.handler.on_open(&info, &mut self.ctl);
                if rejected {
                    self.close_inline(conn, 4002, "client id already in use", OfflineReason::Error);
                }
                // Frames that came with the request.
                self.on_frames(conn, &mut data[a.consumed..])
            }
        }
    }

    /// Enters the failing phase: what is queued is flushed, then the write
    /// side is shut and the client gets `close_timeout` to go away.
    fn fail(&mut self, conn: &mut Conn) {
        self.leave(conn, OfflineReason::Error);
        conn.phase = Phase::Failing { write_shut: false };
        let at = self.now + ms(self.cfg.close_timeout);
        self.arm(conn, at);
    }

    /// Queues a close frame for the connection being served and waits for
    /// the client's.
    fn close_inline(&mut self, conn: &mut Conn, code: u16, reason: &'static str, why: OfflineReason) {
        if (1000..4000).contains(&code) {
            self.metrics.protocol_error(code);
        }
        self.leave(conn, why);
        let sink = if conn.backlog() > 0 {
            spill_out(&mut conn.spill)
        } else {
            &mut self.wbuf
        };
        frame::encode_close(sink, code, reason);
        conn.phase = Phase::Closing;
        let at = self.now + ms(self.cfg.close_timeout);
        self.arm(conn, at);
    }

    fn on_frames(&mut self, conn: &mut Conn, data: &mut [u8]) -> After {
        let limits = self.limits();
        let any_frame_counts = self.cfg.liveness == Liveness::Any;
        let mut alive = false;
        let mut pos = 0;
        let after = loop {
            let backlog = conn.backlog();
            if backlog > self.cfg.max_backpressure {
                break After::Drop(OfflineReason::Backpressure, "backpressure");
            }
            let open = matches!(conn.phase, Phase::Open);
            let sink = if backlog > 0 {
                spill_out(&mut conn.spill)
            } else {
                &mut self.wbuf
            };
            let msg = match conn.decoder.decode(&mut data[pos..], &limits) {
                Ok((_, None)) => break After::Keep,
                Ok((used, Some(msg))) => {
                    pos += used;
                    msg
                }
                Err(e) => {
                    debug!("{}: protocol error: {e}", Peer(&conn.stream));
                    self.metrics.protocol_error(e.code);
                    frame::encode_close(sink, e.code, e.reason);
                    self.fail(conn);
                    break After::Keep;
                }
            };
            alive |= any_frame_counts;
            if !open {
                // Closing: only the client's close matters, and it ends the
                // close handshake.
                if matches!(msg, Message::Close(_)) {
                    break After::Drop(OfflineReason::Closed, "closed");
                }
                continue;
            }
            let app = match msg {
                Message::Text(t) => {
                    self.metrics.messages_received += 1;
                    match parse_heartbeat(t) {
                        Heartbeat::NotHeartbeat => Some(AppMessage::Text(t)),
                        Heartbeat::Plain => {
                            self.heartbeat(conn);
                            alive = true;
                            None
                        }
                        Heartbeat::WithId(id) => {
                            alive = true;
                            match conn.client_id.as_deref() {
                                Some(current) if current == id => self.heartbeat(conn),
                                Some(_) => self.close_inline(conn, 1008, "client id mismatch", OfflineReason::Error),
                                None => {
                                    let id = id.to_string();
                                    if self.bind(conn, &id) {
                                        self.heartbeat(conn);
                                    } else {
                                        self.close_inline(conn, 4002, "client id already in use", OfflineReason::Error);
                                    }
                                }
                            }
                            None
                        }
                        Heartbeat::InvalidId => {
                            self.close_inline(conn, 1008, "invalid client id", OfflineReason::Error);
                            None
                        }
                    }
                }
                Message::Binary(b) => {
                    self.metrics.messages_received += 1;
                    Some(AppMessage::Binary(b))
                }
                Message::Ping(p) => {
                    frame::encode_frame(sink, OpCode::Pong, p);
                    None
                }
                Message::Pong(_) => None,
                Message::Close(c) => {
                    match c {
                        Some((code, _)) => frame::encode_close(sink, code, ""),
                        None => frame::encode_frame(sink, OpCode::Close, &[]),
                    }
                    debug!("{}: client closed with {:?}", Peer(&conn.stream), c.map(|c| c.0));
                    self.leave(conn, OfflineReason::Closed);
                    conn.phase = Phase::CloseAfterFlush;
                    break After::Keep;
                }
            };
            if let Some(m) = app {
                if self.cfg.echo {
                    // Nothing was queued since the top of the loop for an
                    // application message, so `backlog` still tells the sink.
                    let sink = if backlog > 0 {
                        spill_out(&mut conn.spill)
                    } else {
                        &mut self.wbuf
                    };
                    match m {
                        AppMessage::Text(t) => frame::encode_frame(sink, OpCode::Text, t.as_bytes()),
                        AppMessage::Binary(b) => frame::encode_frame(sink, OpCode::Binary, b),
                    }
                    self.metrics.messages_sent += 1;
                }
                if self.app_handler {
                    let info = ConnInfo {
                        conn: ConnId(conn.token),
                        id: conn.client_id.as_deref(),
                        stream: &conn.stream,
                    };
                    self.handler.on_message(&info, m, &mut self.ctl);
                } else if !self.cfg.echo {
                    self.metrics.messages_dropped += 1;
                }
            }
        };
        if any_frame_counts && conn.decoder.take_fragment_done() {
            alive = true;
        }
        if alive {
            conn.last_seen = self.now;
        }
        after
    }

    /// A heartbeat from an open connection (after its id, if any, is bound).
    fn heartbeat(&mut self, conn: &Conn) {
        self.metrics.heartbeats_received += 1;
        let info = ConnInfo {
            conn: ConnId(conn.token),
            id: conn.client_id.as_deref(),
            stream: &conn.stream,
        };
        self.handler.on_heartbeat(&info, &mut self.ctl);
    }
}

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

fn is_out_of_fds(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128 / 2) as u64
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
