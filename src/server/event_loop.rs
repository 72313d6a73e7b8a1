//! One event loop: one thread, one `mio::Poll`, the connections it was
//! given. It reads the clock, waits for readiness or the next deadline, and
//! dispatches: sockets to its connection table, its waker to the command
//! queue and the messages of other loops, timers to sessions. Loop 0 also
//! holds the listeners (accepting for every loop), the admin API and the
//! signals, and leads the shutdown.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Poll};
use signal_hook_mio::v1_0::Signals;

use super::admin_conns::AdminConns;
use super::backend::{LoopBackend, client_infos, loop_numbers};
use super::commands::MAX_PENDING_BROADCASTS;
use super::connections::Connections;
use super::links::{Answer, LoopInbox, LoopMsg, Question, Shared};
use super::listener::Acceptor;
use super::token::Source;
use crate::handler::Command;
use crate::presence::{NodeEvent, PresenceEvent};
use crate::session::ms;

/// Marks a loop stopped when it ends, however it ends. Loop 0 then stops the
/// others: at once after a shutdown it led, else (it failed or panicked)
/// with a shutdown of their own, so their clients still get 1001. Another
/// loop wakes loop 0, which shuts the server down: a loop that died takes its
/// connections with it, and the server must not go on handing it new ones.
struct Stopped {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.shared.loops[self.index].stopped.store(true, Ordering::Release);
        // One count, so that of two loops stopping at once exactly one is last.
        if self.shared.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(cluster) = &self.shared.cluster {
                // The shutdown's offline events go to Redis, and this node
                // leaves the cluster.
                cluster.stop();
            }
            if let Some(w) = &self.shared.webhook {
                w.stop();
            }
            if let Some(f) = &self.shared.forwarder {
                // The last messages and offline events get what is left of
                // the shutdown's time (none after a second signal).
                f.stop(self.shared.time_to_flush());
            }
        }
        if self.index == 0 {
            let led = self.shared.shutting_down.load(Ordering::Acquire);
            for l in 1..self.shared.loops.len() {
                self.shared.send(l, if led { LoopMsg::Exit } else { LoopMsg::ShutDown });
            }
        } else {
            let _ = self.shared.loops[0].waker.wake();
        }
    }
}

/// Commands from other threads run per loop turn.
const COMMANDS_PER_TURN: usize = 1024;
/// Messages from other loops taken per loop turn.
const MESSAGES_PER_TURN: usize = 4096;

/// One event loop, ready to [`run`](EventLoop::run) on a thread of its own.
/// [`Server::run`](crate::Server::run) runs them all; an embedding program
/// that wants to place the threads itself takes them with
/// [`Server::into_loops`](crate::Server::into_loops) and must run every one.
pub struct EventLoop {
    pub(super) index: usize,
    pub(super) poll: Poll,
    pub(super) conns: Connections,
    /// Loop 0 only: the WebSocket listener.
    pub(super) acceptor: Option<Acceptor>,
    /// Loop 0 only; `None` once shutting down.
    pub(super) admin_listener: Option<TcpListener>,
    /// Admin connections (loop 0 only).
    pub(super) admin: AdminConns,
    pub(super) rbuf: Vec<u8>,
    pub(super) start: Instant,
    pub(super) inbox: LoopInbox,
    /// Loop 0 only, when the server handles signals.
    pub(super) signals: Option<Signals>,
    /// Commands being run (kept to reuse its capacity).
    pub(super) running: Vec<Command>,
    /// Set when a graceful shutdown began: its deadline.
    pub(super) shutdown_at: Option<u64>,
    /// A command asked for a shutdown; it begins once the commands are run.
    pub(super) shutdown_requested: bool,
    pub(super) exit_now: bool,
    /// Events being published (kept to reuse its capacity).
    pub(super) published: Vec<NodeEvent>,
    /// Commands were left queued while broadcasts ran.
    pub(super) commands_held: bool,
}

impl EventLoop {
    /// This loop's index (0 to `--threads` − 1).
    pub fn index(&self) -> usize {
        self.index
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.conns.shared
    }

    /// Runs the loop on the calling thread until the server stops.
    pub fn run(mut self) -> io::Result<()> {
        // Whatever ends this loop, a panic included, the others hear of it.
        let _stopped = Stopped {
            shared: self.shared().clone(),
            index: self.index,
        };
        self.serve()
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut fanning_out = false;
        loop {
            self.tick();
            let now = self.conns.cx.now();
            let timeout = if fanning_out {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|t| Duration::from_millis(t.saturating_sub(now)))
            };
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
                    Source::Listener => {
                        if let Some(a) = &mut self.acceptor {
                            a.accept(&mut self.conns, &mut self.rbuf);
                        }
                    }
                    Source::AdminListener => {
                        if let Some(l) = &self.admin_listener {
                            self.admin.accept(l, self.conns.cx.now());
                        }
                    }
                    Source::Waker => {
                        self.take_commands();
                        self.take_messages();
                    }
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
            fanning_out = self.conns.run_fanouts();
            self.run_deferred();
            if !fanning_out && std::mem::take(&mut self.commands_held) {
                self.take_commands();
                self.run_deferred();
            }
            self.conns.new_turn();
            self.end_turn();
            if self.index == 0 && self.shutdown_at.is_none() {
                self.check_loops();
            }
            if self.exit_now && self.shutdown_at.is_none() {
                // Told to stop (loop 0 has ended) without a shutdown.
                return Ok(());
            }
            if let Some(deadline) = self.shutdown_at {
                let now = self.conns.cx.now();
                let others_stopped = self.index != 0
                    || self.shared().loops[1..]
                        .iter()
                        .all(|l| l.stopped.load(Ordering::Acquire));
                if others_stopped && self.index == 0 {
                    // Their last presence changes were recorded before they
                    // stopped: publish them, then let `/events` streams end.
                    self.publish_events();
                    self.admin.shut_down();
                }
                let served = self.conns.table.is_empty() && self.admin.is_empty() && others_stopped;
                if self.index == 0
                    && served
                    && let Some(f) = &self.shared().forwarder
                {
                    // Every loop is done: nothing more will be pushed, and
                    // the forwarder hurries.
                    f.finish_by(self.start + Duration::from_millis(deadline));
                }
                let drained = served && !self.forwarding();
                if self.exit_now || now >= deadline || drained {
                    if !self.conns.table.is_empty() {
                        warn!(
                            "shutdown: dropping {} connections that did not close in time",
                            self.conns.table.len()
                        );
                    }
                    if self.index == 0 {
                        info!("stopped");
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Loop 0: another loop that stopped while the server runs has died
    /// (its thread panicked, or its poller failed): shut down rather than
    /// hand it connections it will never serve.
    fn check_loops(&mut self) {
        let shared = self.shared().clone();
        if let Some(dead) = (1..shared.loops.len()).find(|&l| shared.loops[l].stopped.load(Ordering::Acquire)) {
            log::error!("event loop {dead} stopped unexpectedly: shutting down");
            self.begin_shutdown();
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

    /// Loop 0, shutting down: the forwarder still holds messages or events.
    /// The loop stays (and keeps taking signals: a second one ends the
    /// wait) until they are delivered or the shutdown's time is up.
    fn forwarding(&self) -> bool {
        self.index == 0
            && self
                .shared()
                .forwarder
                .as_ref()
                .is_some_and(|f| f.stats().buffered_bytes > 0)
    }

    /// The earliest deadline of any kind: sessions, admin connections, an
    /// accept retry, the shutdown (and, while it waits for the forwarder,
    /// a look at it every 20 ms).
    fn next_deadline(&self) -> Option<u64> {
        let forwarder_check = (self.shutdown_at.is_some() && self.forwarding()).then(|| self.conns.cx.now() + 20);
        [
            self.conns.cx.timers.next_expiry(),
            self.admin.next_expiry(),
            self.acceptor.as_ref().and_then(|a| a.retry_at),
            self.shutdown_at,
            forwarder_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs `f` with the admin connections and the server as they see it
    /// (and the read buffer, and the time).
    fn with_admin<R>(&mut self, f: impl FnOnce(&mut AdminConns, &mut LoopBackend<'_>, &mut [u8], u64) -> R) -> R {
        let now = self.conns.cx.now();
        let mut backend = LoopBackend {
            conns: &mut self.conns,
            running: &mut self.running,
            shutdown: &mut self.shutdown_requested,
            admin_connections: self.admin.len(),
            sse_subscribers: self.admin.subscribers(),
            admin_requests: self.admin.requests,
        };
        f(&mut self.admin, &mut backend, &mut self.rbuf, now)
    }

    fn admin_event(&mut self, idx: usize, readable: bool, writable: bool) {
        self.with_admin(|admin, backend, rbuf, now| admin.on_event(idx, readable, writable, now, rbuf, backend));
        // A new `/events` subscriber is recorded for from now on, not from
        // the end of the turn.
        self.publish_events();
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            if sig == signal_hook::consts::SIGHUP {
                self.reload_tls();
                continue;
            }
            info!("signal {sig} received");
            // A second one, while already shutting down, stops at once.
            self.begin_shutdown();
        }
    }

    /// SIGHUP: the certificate and key are read again. New connections get
    /// them; open ones keep theirs; a bad file keeps the pair in use.
    fn reload_tls(&mut self) {
        let shared = self.shared().clone();
        match shared.reload_tls() {
            Ok(false) => info!("SIGHUP received: no --tls-cert to reload"),
            Ok(true) => {
                if let Some(f) = shared.tls.as_ref().map(|c| c.files()) {
                    info!("SIGHUP: reloaded {} and {}", f.cert.display(), f.key.display());
                }
            }
            Err(e) => log::error!("SIGHUP: cannot reload the TLS certificate, keeping the one in use: {e}"),
        }
    }

    /// Moves commands from other threads to the loop, a bounded batch per
    /// turn: a producer that never pauses must not keep the loop from reading
    /// its sockets (heartbeats waiting there would go unseen and their
    /// senders be evicted).
    fn take_commands(&mut self) {
        if self.conns.fanouts.len() >= MAX_PENDING_BROADCASTS {
            // Enough broadcasts under way: leave the rest queued, so that
            // their senders wait (the queue is bounded) instead of this loop
            // holding every frame. The broadcasts keep the loop turning.
            self.commands_held = true;
            return;
        }
        for _ in 0..COMMANDS_PER_TURN {
            match self.inbox.commands.try_recv() {
                Ok(c) => self.conns.cx.ctl.commands.push(c),
                Err(_) => return,
            }
        }
        // More may be waiting: make sure the next turn comes back for them.
        let _ = self.shared().loops[self.index].waker.wake();
    }

    /// Takes what other loops sent, a bounded batch per turn.
    fn take_messages(&mut self) {
        for _ in 0..MESSAGES_PER_TURN {
            let msg = match self.inbox.inbox.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            match msg {
                LoopMsg::Command(c) => self.conns.cx.ctl.commands.push(c),
                LoopMsg::Adopt(stream) => {
                    if self.shutdown_at.is_some() {
                        // Accepted as the shutdown began: not served.
                        self.shared().loops[self.index].assigned.fetch_sub(1, Ordering::Relaxed);
                    } else if let Err(e) = self.conns.insert(stream) {
                        warn!("cannot register an adopted connection: {e}");
                    }
                }
                LoopMsg::Ask(q, reply) => {
                    let answer = match q {
                        Question::Clients(wanted) => Answer::Clients(client_infos(&self.conns, &wanted)),
                        Question::Numbers => Answer::Numbers(Box::new(loop_numbers(&self.conns))),
                        Question::Broadcast(frame) => Answer::Recipients(self.conns.start_fanout(frame)),
                    };
                    // The asker may have given up waiting.
                    let _ = reply.send(answer);
                }
                LoopMsg::ShutDown => self.begin_shutdown(),
                LoopMsg::ShutdownRequest => {
                    if self.shutdown_at.is_none() {
                        self.begin_shutdown();
                    }
                }
                LoopMsg::Exit => self.exit_now = true,
                LoopMsg::AdminReply(waiter, result) => {
                    self.with_admin(|admin, backend, _, now| admin.on_remote_result(waiter, result, now, backend));
                }
                LoopMsg::Authorized(conn, verdict) => {
                    if let Some(idx) = self.conns.live(conn) {
                        let after = self.conns.table[idx].on_authorized(&mut self.conns.cx, verdict);
                        let _ = self.conns.apply(idx, after);
                    }
                }
            }
            self.run_deferred();
        }
        let _ = self.shared().loops[self.index].waker.wake();
    }

    /// Runs what handlers, replacements and other threads queued, then a
    /// shutdown if one was asked for: loop 0 leads it; another loop asks
    /// loop 0, which tells every loop.
    fn run_deferred(&mut self) {
        self.shutdown_requested |= self.conns.run_deferred(&mut self.running);
        while std::mem::take(&mut self.shutdown_requested) {
            if self.index == 0 {
                self.begin_shutdown();
            } else {
                self.shared().send(0, LoopMsg::ShutdownRequest);
            }
            self.shutdown_requested |= self.conns.run_deferred(&mut self.running);
        }
    }

    /// Runs the timers due now.
    fn expire_timers(&mut self) {
        if let Some(a) = &mut self.acceptor {
            a.retry(&mut self.conns, &mut self.rbuf);
            self.run_deferred();
        }
        let now = self.conns.cx.now();
        while let Some((_, id)) = self.conns.cx.timers.poll(now) {
            if let Some(idx) = self.conns.live(id) {
                self.conns.on_timer(idx);
                self.run_deferred();
            }
        }
        self.admin.expire(now);
        if self.admin.has_resumable() {
            self.with_admin(|admin, backend, _, now| admin.resume(now, backend));
        }
    }

    fn begin_shutdown(&mut self) {
        if self.index == 0 {
            // Every loop closes its own clients; a second request stops them
            // all at once.
            let shared = self.shared().clone();
            shared.shutting_down.store(true, Ordering::Release);
            for l in 1..shared.loops.len() {
                shared.send(l, LoopMsg::ShutDown);
            }
        }
        if self.shutdown_at.is_some() {
            warn!("second shutdown request: stopping now");
            self.exit_now = true;
            self.shared().flush_until(Instant::now());
            return;
        }
        let open = self.conns.table.len();
        let timeout = self.conns.cx.cfg.shutdown_timeout;
        if self.index == 0 {
            info!("shutting down: closing connections (waiting up to {timeout:?})");
        }
        debug!("loop {}: closing {open} connections", self.index);
        self.shutdown_at = Some(self.conns.cx.now() + ms(timeout));
        if self.index == 0 {
            self.shared().flush_until(Instant::now() + timeout);
        }
        // Stop accepting: closing the listeners refuses new connections.
        self.acceptor = None;
        self.admin_listener = None;
        self.conns.shut_down_all();
    }

    fn end_turn(&mut self) {
        let shared = self.conns.shared.clone();
        let link = &shared.loops[self.index];
        // Numbers first: whoever hears of an event can already see it counted.
        link.connections_open.store(self.conns.table.len(), Ordering::Relaxed);
        let timers = self.conns.cx.timers.len() + self.admin.timers();
        link.timers.store(timers, Ordering::Relaxed);
        let cx = &mut self.conns.cx;
        if self.index != 0 && !cx.events.is_empty() && shared.subscribers.load(Ordering::Relaxed) > 0 {
            // Loop 0 publishes the directory's record, in the order the
            // changes were decided on every loop: tell it there is news.
            let _ = shared.loops[0].waker.wake();
        }
        if let (Some(items), Some(f)) = (&mut cx.forwarding, &shared.forwarder)
            && !items.is_empty()
        {
            f.push(items);
        }
        for ev in cx.events.drain(..) {
            match ev {
                PresenceEvent::Online { id, .. } => debug!("online {id}"),
                PresenceEvent::Offline { id, reason, .. } => debug!("offline {id}: {}", reason.as_str()),
            }
        }
        if self.index == 0 {
            self.publish_events();
        }
    }

    /// Loop 0: hands the presence changes of every loop to the `/events`
    /// subscribers, and has them recorded only while there are some.
    fn publish_events(&mut self) {
        let shared = self.conns.shared.clone();
        let subscribers = self.admin.subscribers();
        shared.subscribers.store(subscribers, Ordering::Relaxed);
        shared.directory.watch(subscribers > 0);
        let mut events = std::mem::take(&mut self.published);
        shared.directory.take_events(&mut events);
        if !events.is_empty() {
            let node = self.conns.cx.cfg.node_id.as_deref().unwrap_or_default();
            self.admin.publish(&events, node);
            events.clear();
        }
        self.published = events;
    }
}
