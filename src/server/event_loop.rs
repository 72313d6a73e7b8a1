//! The event loop: one thread, one `mio::Poll`. It reads the clock, waits
//! for readiness or the next deadline, and dispatches: listeners to the
//! acceptors, sockets to the connection tables, the waker to the command
//! queue, signals and the shutdown deadline to the shutdown sequence.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};
use signal_hook_mio::v1_0::Signals;

use super::admin_conns::AdminConns;
use super::backend::LoopBackend;
use super::connections::Connections;
use super::handle::{Handle, QUEUE_CAPACITY};
use super::listener::{Acceptor, bind_listener};
use super::token::Source;
use crate::config::{Config, ServerHeartbeat};
use crate::handler::{Command, Handler, NoopHandler};
use crate::presence::PresenceEvent;
use crate::session::Context;
use crate::session::ms;

/// One read buffer for the whole loop. Large enough that a busy connection
/// needs few reads per turn; a connection keeps bytes of its own only when a
/// frame is split across reads.
const READ_BUFFER: usize = 64 * 1024;
/// Most connections whose table is reserved at start-up (beyond it the table
/// grows as needed).
const MAX_PRESIZE: usize = 4 << 20;
/// Commands from other threads run per loop turn.
const COMMANDS_PER_TURN: usize = 1024;

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
    poll: Poll,
    acceptor: Acceptor,
    local_addr: SocketAddr,
    /// `None` when not served, and once shutting down.
    admin_listener: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
    conns: Connections,
    admin: AdminConns,
    rbuf: Vec<u8>,
    start: Instant,
    stats: Arc<Stats>,
    handle: Handle,
    commands: Receiver<Command>,
    signals: Option<Signals>,
    /// Commands being run (kept to reuse its capacity).
    running: Vec<Command>,
    /// Set when a graceful shutdown began: its deadline.
    shutdown_at: Option<u64>,
    /// A command asked for a shutdown; it begins once the commands are run.
    shutdown_requested: bool,
    exit_now: bool,
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
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let poll = Poll::new()?;
        let mut listener = bind_listener(cfg.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {} (--listen): {e}", cfg.listen)))?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, Source::Listener.token(), Interest::READABLE)?;
        let (admin_listener, admin_addr) = match cfg.admin_listen {
            Some(addr) => {
                let mut l = bind_listener(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} (--admin-listen): {e}")))?;
                let a = l.local_addr()?;
                poll.registry()
                    .register(&mut l, Source::AdminListener.token(), Interest::READABLE)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let signals = if cfg.handle_signals {
            let mut s = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
            poll.registry()
                .register(&mut s, Source::Signals.token(), Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        // Reserve the connection table and the timer arena for the
        // configured maximum up front: the memory is only address space
        // until a connection touches its slot, so resident memory grows one
        // connection at a time instead of doubling (and copying) as a vector
        // would.
        let reserve = cfg.max_connections.min(MAX_PRESIZE);
        let (tx, commands) = sync_channel(QUEUE_CAPACITY);
        let admin = AdminConns::new(&cfg, poll.registry().try_clone()?, READ_BUFFER);
        let cx = Context::new(cfg, handler, app_handler, reserve);
        let conns = Connections::new(cx, poll.registry().try_clone()?, reserve);
        Ok(Server {
            poll,
            acceptor: Acceptor::new(listener),
            local_addr,
            admin_listener,
            admin_addr,
            conns,
            admin,
            rbuf: vec![0; READ_BUFFER],
            start: Instant::now(),
            stats: Arc::default(),
            handle: Handle { tx, waker },
            commands,
            signals,
            running: Vec::new(),
            shutdown_at: None,
            shutdown_requested: false,
            exit_now: false,
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
        let cfg = &self.conns.cx.cfg;
        if cfg.server_heartbeat != ServerHeartbeat::Off && cfg.heartbeat_interval >= cfg.heartbeat_timeout {
            warn!(
                "--heartbeat-interval ({:?}) is not below --heartbeat-timeout ({:?}): clients that only answer server heartbeats will be evicted",
                cfg.heartbeat_interval, cfg.heartbeat_timeout
            );
        }
        let mut events = Events::with_capacity(1024);
        loop {
            self.tick();
            let now = self.conns.cx.now();
            let timeout = self
                .next_deadline()
                .map(|t| Duration::from_millis(t.saturating_sub(now)));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.tick();
            for ev in events.iter() {
                let hangup = ev.is_read_closed() || ev.is_error();
                let readable = ev.is_readable() || hangup;
                match Source::of(ev.token()) {
                    Source::Listener => self.acceptor.accept(&mut self.conns, &mut self.rbuf),
                    Source::AdminListener => {
                        if let Some(l) = &self.admin_listener {
                            self.admin.accept(l, self.conns.cx.now());
                        }
                    }
                    Source::Waker => self.take_commands(),
                    Source::Signals => self.on_signals(),
                    Source::Conn(slot) => {
                        if let Some(idx) = self.conns.live_token(slot, ev.token()) {
                            self.conns
                                .on_event(idx, readable, hangup, ev.is_writable(), &mut self.rbuf);
                        }
                    }
                    Source::Admin(slot) => {
                        if let Some(idx) = self.admin.live_token(slot, ev.token()) {
                            self.admin_event(idx, readable, ev.is_writable());
                        }
                    }
                }
                self.run_deferred();
            }
            self.expire_timers();
            self.end_turn();
            if let Some(deadline) = self.shutdown_at {
                self.admin.shut_down();
                let now = self.conns.cx.now();
                let drained = self.conns.table.is_empty() && self.admin.is_empty();
                if self.exit_now || now >= deadline || drained {
                    if !self.conns.table.is_empty() {
                        warn!(
                            "shutdown: dropping {} connections that did not close in time",
                            self.conns.table.len()
                        );
                    }
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    /// Reads the clock once for everything this turn does.
    fn tick(&mut self) {
        let now = self.start.elapsed().as_millis() as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.conns.cx.tick(now, wall);
    }

    /// The earliest deadline of any kind: sessions, admin connections, an
    /// accept retry, the shutdown.
    fn next_deadline(&self) -> Option<u64> {
        [
            self.conns.cx.timers.next_expiry(),
            self.admin.next_expiry(),
            self.acceptor.retry_at,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn admin_event(&mut self, idx: usize, readable: bool, writable: bool) {
        let now = self.conns.cx.now();
        let mut backend = LoopBackend {
            conns: &mut self.conns,
            running: &mut self.running,
            shutdown: &mut self.shutdown_requested,
            admin_connections: self.admin.len(),
            sse_subscribers: self.admin.subscribers(),
            admin_requests: self.admin.requests,
        };
        self.admin
            .on_event(idx, readable, writable, now, &mut self.rbuf, &mut backend);
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            info!("signal {sig} received");
            // A second one, while already shutting down, stops at once.
            self.begin_shutdown();
        }
    }

    /// Moves commands from other threads to the loop, a bounded batch per
    /// turn: a producer that never pauses must not keep the loop from reading
    /// its sockets (heartbeats waiting there would go unseen and their
    /// senders be evicted).
    fn take_commands(&mut self) {
        for _ in 0..COMMANDS_PER_TURN {
            match self.commands.try_recv() {
                Ok(c) => self.conns.cx.ctl.commands.push(c),
                Err(_) => return,
            }
        }
        // More may be waiting: make sure the next turn comes back for them.
        let _ = self.handle.waker.wake();
    }

    /// Runs what handlers, replacements and other threads queued, then a
    /// shutdown if one was asked for.
    fn run_deferred(&mut self) {
        self.shutdown_requested |= self.conns.run_deferred(&mut self.running);
        while std::mem::take(&mut self.shutdown_requested) {
            self.begin_shutdown();
            self.shutdown_requested |= self.conns.run_deferred(&mut self.running);
        }
    }

    /// Runs the timers due now.
    fn expire_timers(&mut self) {
        self.acceptor.retry(&mut self.conns, &mut self.rbuf);
        self.run_deferred();
        let now = self.conns.cx.now();
        while let Some((_, id)) = self.conns.cx.timers.poll(now) {
            if let Some(idx) = self.conns.live(id) {
                self.conns.on_timer(idx);
                self.run_deferred();
            }
        }
        self.admin.expire(now);
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            warn!("second shutdown request: stopping now");
            self.exit_now = true;
            return;
        }
        let open = self.conns.table.len();
        let timeout = self.conns.cx.cfg.shutdown_timeout;
        info!("shutting down: closing {open} connections (waiting up to {timeout:?})");
        self.shutdown_at = Some(self.conns.cx.now() + ms(timeout));
        // Stop accepting: closing the listeners refuses new connections.
        self.acceptor.listener = None;
        self.admin_listener = None;
        self.conns.shut_down_all();
    }

    fn end_turn(&mut self) {
        let cx = &mut self.conns.cx;
        // Numbers first: whoever hears of an event can already see it counted.
        self.stats
            .connections_open
            .store(self.conns.table.len(), Ordering::Relaxed);
        self.stats.clients_online.store(cx.registry.len(), Ordering::Relaxed);
        let timers = cx.timers.len() + self.admin.timers();
        self.stats.timers.store(timers, Ordering::Relaxed);
        if !cx.events.is_empty() {
            for ev in &cx.events {
                match ev {
                    PresenceEvent::Online { id, .. } => debug!("online {id}"),
                    PresenceEvent::Offline { id, reason, .. } => debug!("offline {id}: {}", reason.as_str()),
                }
            }
            self.admin.publish(&cx.events);
            cx.events.clear();
        }
    }
}
