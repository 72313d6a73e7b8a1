//! [`Server`]: binds the listeners, builds one [`EventLoop`] per
//! `--threads`, runs them, and hands out what other threads use to reach
//! them ([`Handle`], [`Stats`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::{info, warn};
use mio::{Interest, Poll, Waker};
use signal_hook_mio::v1_0::Signals;

use super::admin_conns::AdminConns;
use super::cluster_node::ServerNode;
use super::connections::Connections;
use super::event_loop::EventLoop;
use super::handle::{Handle, QUEUE_CAPACITY};
use super::links::{LoopLink, LoopMsg, Shared};
use super::listener::{Acceptor, bind_listener};
use super::token::Source;
use crate::auth::jwt::JwtVerifier;
use crate::auth::webhook::Webhook;
use crate::cluster::{Cluster, Settings as ClusterSettings};
use crate::config::{Auth, Config, ServerHeartbeat};
use crate::forward::Forwarder;
use crate::handler::{AppMessage, ConnInfo, Control, Handler, NoopHandler};
use crate::presence::{ConnId, Directory, OfflineReason, SharedRegistry};
use crate::session::{Context, Gate, ms};

/// One read buffer per loop. Large enough that a busy connection needs few
/// reads per turn; a connection keeps bytes of its own only when a frame is
/// split across reads.
const READ_BUFFER: usize = 64 * 1024;
/// Most connections whose table is reserved at start-up, per loop (beyond it
/// the table grows as needed).
const MAX_PRESIZE: usize = 4 << 20;

/// Live numbers of a running server, readable from any thread.
pub struct Stats {
    shared: Arc<Shared>,
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("connections_open", &self.connections_open())
            .field("clients_online", &self.clients_online())
            .field("timers", &self.timers())
            .finish()
    }
}

impl Stats {
    fn sum(&self, f: impl Fn(&LoopLink) -> &AtomicUsize) -> usize {
        self.shared.loops.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
    }
    /// Sockets held, in any phase (handshake, open, closing), by every loop
    /// at the end of its last turn.
    pub fn connections_open(&self) -> usize {
        self.shared.connections_open()
    }
    /// Client ids online.
    pub fn clients_online(&self) -> usize {
        self.shared.directory.len()
    }
    /// Pending timers (one per connection at most, plus admin connections').
    pub fn timers(&self) -> usize {
        self.sum(|l| &l.timers)
    }
    /// Connections held by each loop, by loop index.
    pub fn loop_connections(&self) -> Vec<usize> {
        self.shared
            .loops
            .iter()
            .map(|l| l.assigned.load(Ordering::Relaxed))
            .collect()
    }
}

/// A WebSocket server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    loops: Vec<EventLoop>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

/// One handler for every loop, taken in turn (for [`Server::with_handler`]
/// with more than one loop).
struct Serialized<H>(Arc<Mutex<H>>);

impl<H: Handler> Serialized<H> {
    fn with<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<H: Handler> Handler for Serialized<H> {
    fn on_open(&mut self, conn: &ConnInfo<'_>, ctl: &mut Control) {
        self.with(|h| h.on_open(conn, ctl))
    }
    fn on_bind(&mut self, conn: &ConnInfo<'_>, ctl: &mut Control) {
        self.with(|h| h.on_bind(conn, ctl))
    }
    fn on_heartbeat(&mut self, conn: &ConnInfo<'_>, ctl: &mut Control) {
        self.with(|h| h.on_heartbeat(conn, ctl))
    }
    fn on_message(&mut self, conn: &ConnInfo<'_>, msg: AppMessage<'_>, ctl: &mut Control) {
        self.with(|h| h.on_message(conn, msg, ctl))
    }
    fn on_close(&mut self, conn: &ConnInfo<'_>, reason: OfflineReason, ctl: &mut Control) {
        self.with(|h| h.on_close(conn, reason, ctl))
    }
}

impl Server {
    /// Binds the listeners, with the binary's behaviour for application
    /// messages (dropped, or echoed with `echo`). Nothing is served until
    /// [`run`](Server::run).
    pub fn bind(cfg: Config) -> io::Result<Server> {
        Self::build(cfg, |_| Box::new(NoopHandler), false)
    }

    /// Binds the listeners; `handler` gets the connections' events and
    /// application messages. With more than one loop (`threads`), the loops
    /// take turns with it (a lock around each callback); use
    /// [`with_handlers`](Server::with_handlers) for one handler per loop and
    /// no lock.
    pub fn with_handler<H: Handler>(cfg: Config, handler: H) -> io::Result<Server> {
        if cfg.threads <= 1 {
            let mut one = Some(handler);
            return Self::build(
                cfg,
                move |_| match one.take() {
                    Some(h) => Box::new(h),
                    None => Box::new(NoopHandler),
                },
                true,
            );
        }
        let shared = Arc::new(Mutex::new(handler));
        Self::build(cfg, move |_| Box::new(Serialized(shared.clone())), true)
    }

    /// Binds the listeners; `make(i)` builds the handler of loop `i`, which
    /// gets the events and messages of that loop's connections.
    pub fn with_handlers<H: Handler>(cfg: Config, mut make: impl FnMut(usize) -> H) -> io::Result<Server> {
        Self::build(cfg, move |i| Box::new(make(i)), true)
    }

    fn build(
        mut cfg: Config,
        mut handler: impl FnMut(usize) -> Box<dyn Handler>,
        app_handler: bool,
    ) -> io::Result<Server> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // Every server, the binary's or an embedded one, needs a descriptor
        // per connection: without this, an embedding program would refuse
        // connections past the usual 1024 with `out_of_descriptors`.
        if let Err(e) = super::raise_fd_limit(cfg.max_connections, cfg.threads) {
            warn!("cannot read or raise the open-file limit: {e}");
        }
        // The files were checked by the command line; a library caller
        // hears of a bad one here.
        let tls = match &cfg.tls {
            Some(files) => {
                Some(Arc::new(crate::tls::TlsCerts::load(files.clone()).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
                })?))
            }
            None => None,
        };
        let n = cfg.threads;
        let polls = (0..n).map(|_| Poll::new()).collect::<io::Result<Vec<_>>>()?;
        let mut links = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for poll in &polls {
            let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
            let (link, inbox) = LoopLink::new(waker, QUEUE_CAPACITY);
            links.push(link);
            inboxes.push(inbox);
        }
        let first = &polls[0];
        let mut listener = bind_listener(cfg.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {} (--listen): {e}", cfg.listen)))?;
        let local_addr = listener.local_addr()?;
        first
            .registry()
            .register(&mut listener, Source::Listener.token(), Interest::READABLE)?;
        let (admin_listener, admin_addr) = match cfg.admin_listen {
            Some(addr) => {
                let mut l = bind_listener(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} (--admin-listen): {e}")))?;
                let a = l.local_addr()?;
                first
                    .registry()
                    .register(&mut l, Source::AdminListener.token(), Interest::READABLE)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let signals = if cfg.handle_signals {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            // SIGHUP reloads the certificate (and is ignored without one).
            let mut s = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
            first
                .registry()
                .register(&mut s, Source::Signals.token(), Interest::READABLE)?;
            Some(s)
        } else {
            None
        };

        let node = cfg
            .node_id
            .get_or_insert_with(|| crate::config::default_node_id(local_addr.port()))
            .clone();
        let cluster = match &cfg.cluster {
            Some(url) => Some(
                Cluster::new(ClusterSettings {
                    url: url.clone(),
                    node: node.as_str().into(),
                    lease: cfg.node_lease,
                    duplicate_id: cfg.duplicate_id,
                })
                .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let jwt = match &cfg.auth {
            Auth::Jwt(settings) => Some(Arc::new(
                JwtVerifier::new(settings).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            )),
            _ => None,
        };
        let webhook = match &cfg.auth {
            Auth::Webhook(settings) => {
                // Answers go straight to the loop holding the connection.
                let routes: Vec<_> = links.iter().map(|l| (l.inbox.clone(), l.waker.clone())).collect();
                let deliver = Box::new(move |conn: ConnId, verdict| {
                    if let Some((inbox, waker)) = routes.get(conn.loop_index())
                        && inbox.send(LoopMsg::Authorized(conn, verdict)).is_ok()
                    {
                        let _ = waker.wake();
                    }
                });
                Some(Arc::new(Webhook::start(settings, deliver)?))
            }
            _ => None,
        };
        let forwarder = match &cfg.forward {
            Some(settings) => Some(Forwarder::start(settings, node.as_str().into())?),
            None => None,
        };
        let directory: Arc<dyn Directory> = match &cluster {
            Some(c) => c.directory(),
            None => Arc::new(SharedRegistry::new()),
        };
        let shared = Arc::new(Shared {
            loops: links,
            directory,
            subscribers: AtomicUsize::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            cluster,
            webhook: webhook.clone(),
            forwarder,
            forward_flush: cfg.shutdown_timeout,
            flush_by: Mutex::new(None),
            running: AtomicUsize::new(n),
            tls,
            tls_reloads: Default::default(),
        });
        if let Some(c) = &shared.cluster {
            c.start(Arc::new(ServerNode {
                shared: Arc::downgrade(&shared),
            }))?;
        }

        // Reserve each connection table and timer arena for its share of the
        // configured maximum up front: the memory is only address space until
        // a connection touches its slot, so resident memory grows one
        // connection at a time instead of doubling (and copying) as a vector
        // would.
        let reserve = cfg.max_connections.div_ceil(n).min(MAX_PRESIZE);
        let start = Instant::now();
        let mut listener = Some(listener);
        let mut admin_listener = admin_listener;
        let mut signals = signals;
        let mut loops = Vec::with_capacity(n);
        for (index, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
            let mut cx = Context::new(
                cfg.clone(),
                shared.directory.clone(),
                handler(index),
                app_handler,
                reserve,
            );
            cx.gate = match (&jwt, &webhook, &cfg.auth) {
                (Some(v), _, _) => Gate::Jwt(v.clone()),
                (_, Some(w), Auth::Webhook(s)) => Gate::Webhook(w.clone(), ms(s.timeout)),
                _ => Gate::Open,
            };
            if shared.forwarder.is_some() {
                cx.forwarding = Some(Vec::new());
            }
            let conns = Connections::new(cx, index, shared.clone(), poll.registry().try_clone()?, reserve);
            let admin_tls = shared.tls.clone().filter(|_| cfg.admin_tls);
            let admin = AdminConns::new(&cfg, poll.registry().try_clone()?, READ_BUFFER, admin_tls);
            loops.push(EventLoop {
                index,
                poll,
                conns,
                acceptor: listener.take().map(Acceptor::new),
                admin_listener: admin_listener.take(),
                admin,
                rbuf: vec![0; READ_BUFFER],
                start,
                inbox,
                signals: signals.take(),
                running: Vec::new(),
                shutdown_at: None,
                shutdown_requested: false,
                exit_now: false,
                published: Vec::new(),
                commands_held: false,
            });
        }
        Ok(Server {
            loops,
            shared,
            local_addr,
            admin_addr,
        })
    }

    /// A handle for other threads: push, broadcast, kick, shut down.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The address the admin API is bound to, if it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address the WebSocket listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id (`--node-id`, or `<hostname>-<listen port>`).
    pub fn node_id(&self) -> &str {
        self.loops
            .first()
            .and_then(|l| l.conns.cx.cfg.node_id.as_deref())
            .unwrap_or_default()
    }

    /// Event loops (`threads`).
    pub fn threads(&self) -> usize {
        self.loops.len()
    }

    /// Live numbers, updated at the end of every loop turn.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::new(Stats {
            shared: self.shared.clone(),
        })
    }

    /// The event loops, for a program that runs each on a thread of its
    /// choosing (pinned to a CPU, say). Every one must be run; loop 0 (the
    /// first) leads: it accepts for all, serves the admin API and signals,
    /// and stops the others when it stops.
    pub fn into_loops(self) -> Vec<EventLoop> {
        self.loops
    }

    /// Runs every loop: loop 0 on the calling thread, the others on threads
    /// of their own. Returns once all have stopped.
    pub fn run(self) -> io::Result<()> {
        let scheme = if self.shared.tls.is_some() { "wss" } else { "ws" };
        info!("listening on {scheme}://{}", self.local_addr);
        info!("{} event loops (--threads)", self.loops.len());
        let cfg = &self.loops[0].conns.cx.cfg;
        if let Some(a) = self.admin_addr {
            let scheme = if cfg.admin_tls { "https" } else { "http" };
            info!("admin API on {scheme}://{a}");
        } else {
            info!("admin API off (--admin-listen off)");
        }
        if cfg.server_heartbeat != ServerHeartbeat::Off && cfg.heartbeat_interval >= cfg.heartbeat_timeout {
            warn!(
                "--heartbeat-interval ({:?}) is not below --heartbeat-timeout ({:?}): clients that only answer server heartbeats will be evicted",
                cfg.heartbeat_interval, cfg.heartbeat_timeout
            );
        }
        let mut loops = self.loops.into_iter();
        let Some(first) = loops.next() else {
            return Ok(());
        };
        let mut threads = Vec::new();
        let mut spawned = Ok(());
        for l in loops {
            let name = format!("wsbeat-loop-{}", l.index());
            match std::thread::Builder::new().name(name).spawn(move || l.run()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    spawned = Err(e);
                    break;
                }
            }
        }
        let mut result = match spawned {
            Err(e) => {
                // Stop the loops already running.
                for l in 1..self.shared.loops.len() {
                    self.shared.send(l, super::links::LoopMsg::Exit);
                }
                Err(e)
            }
            Ok(()) => first.run(),
        };
        for t in threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an event loop thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}
