//! How the loops of one process reach each other: per loop, a bounded queue
//! for commands from other threads (the library's `Handle`), an unbounded one
//! for messages between loops, the `mio::Waker` that wakes it, and the count
//! of connections it was given (for balance and `--max-connections`). Plus
//! what every loop shares: the id directory and the number of `/events`
//! subscribers (on loop 0, which serves the admin API).
//!
//! Loops never wait for one another, with one exception: loop 0, answering
//! an admin request, asks the others and waits (at most [`ASK_TIMEOUT`]) —
//! and they answer without waiting on anyone, so this cannot deadlock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use mio::Waker;

use crate::admin::{ClientInfo, RemoteResult};
use crate::cluster::Cluster;
use crate::handler::Command;
use crate::metrics::Metrics;
use crate::presence::{ConnId, Directory};

/// How long the admin loop waits for another loop's answer; every admin
/// answer comes well within the 2 s the API promises.
pub(super) const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

/// A message from one loop to another.
pub(super) enum LoopMsg {
    /// Run this command here (it names a connection of this loop).
    Command(Command),
    /// Serve this newly accepted connection.
    Adopt(mio::net::TcpStream),
    /// Answer the admin loop.
    Ask(Question, Sender<Answer>),
    /// From loop 0: the server is shutting down (a second one: stop now).
    ShutDown,
    /// To loop 0, from a handler on another loop: please shut the server
    /// down (as often as asked, it is one request).
    ShutdownRequest,
    /// Stop now (the process is exiting).
    Exit,
    /// To loop 0: the result of a remote admin operation, for the admin
    /// connection (and request) waiting for it.
    AdminReply((ConnId, u64), RemoteResult),
    /// The auth webhook's answer for a connection of this loop.
    Authorized(ConnId, crate::auth::webhook::Verdict),
}

pub(super) enum Question {
    /// What the admin API shows of these clients, if they are still here.
    Clients(Vec<(Arc<str>, ConnId)>),
    /// The loop's counters and gauges.
    Numbers,
    /// Start sending this frame to every open connection; how many.
    Broadcast(Arc<[u8]>),
}

pub(super) enum Answer {
    Clients(Vec<ClientInfo>),
    Numbers(Box<LoopNumbers>),
    Recipients(usize),
}

/// One loop's share of `/metrics`.
#[derive(Debug, Default, Clone)]
pub(super) struct LoopNumbers {
    pub metrics: Metrics,
    pub connections_open: usize,
    pub connections_buffering: usize,
    pub buffered_bytes: usize,
}

/// What reaches one loop.
pub(super) struct LoopLink {
    /// Commands from other threads; senders block while it is full.
    pub commands: SyncSender<Command>,
    /// Messages from other loops; never blocks a loop.
    pub inbox: Sender<LoopMsg>,
    pub waker: Arc<Waker>,
    /// Connections handed to the loop and not yet closed.
    pub assigned: AtomicUsize,
    /// Sockets held, as of the end of its last turn.
    pub connections_open: AtomicUsize,
    /// Pending timers, as of the end of its last turn.
    pub timers: AtomicUsize,
    /// Its `run` has returned.
    pub stopped: AtomicBool,
}

/// The receiving ends, taken by the loop itself.
pub(super) struct LoopInbox {
    pub commands: Receiver<Command>,
    pub inbox: Receiver<LoopMsg>,
}

/// Everything the loops of a process share.
pub(super) struct Shared {
    pub loops: Vec<LoopLink>,
    pub directory: Arc<dyn Directory>,
    /// Open `/events` streams on loop 0: other loops wake it for their
    /// presence changes only while someone listens.
    pub subscribers: AtomicUsize,
    /// Loop 0 has begun a shutdown.
    pub shutting_down: AtomicBool,
    /// This node's membership of a cluster (`--cluster`).
    pub cluster: Option<Cluster>,
    /// The auth webhook's threads (`--auth-webhook`).
    pub webhook: Option<Arc<crate::auth::webhook::Webhook>>,
    /// Where client messages and presence changes go (`--forward`).
    pub forwarder: Option<crate::forward::Forwarder>,
    /// How long the forwarder may try to deliver what is left once every
    /// loop has stopped, when no shutdown set a deadline (`--shutdown-timeout`).
    pub forward_flush: Duration,
    /// The end of the shutdown under way, for the forwarder's last flush.
    pub flush_by: std::sync::Mutex<Option<std::time::Instant>>,
    /// Loops whose `run` has not returned; the one that brings it to 0 stops
    /// the helper threads.
    pub running: AtomicUsize,
    /// The certificate of the TLS listeners (`--tls-cert`), swapped on
    /// SIGHUP; each new connection takes the one of the moment.
    pub tls: Option<Arc<crate::tls::TlsCerts>>,
    /// Reloads that worked and that failed (`wsbeat_tls_reloads_total`).
    pub tls_reloads: [std::sync::atomic::AtomicU64; 2],
}

impl LoopLink {
    pub fn new(waker: Arc<Waker>, queue: usize) -> (LoopLink, LoopInbox) {
        let (commands, commands_rx) = mpsc::sync_channel(queue);
        let (inbox, inbox_rx) = mpsc::channel();
        (
            LoopLink {
                commands,
                inbox,
                waker,
                assigned: AtomicUsize::new(0),
                connections_open: AtomicUsize::new(0),
                timers: AtomicUsize::new(0),
                stopped: AtomicBool::new(false),
            },
            LoopInbox {
                commands: commands_rx,
                inbox: inbox_rx,
            },
        )
    }
}

impl Shared {
    /// Reloads the TLS pair (SIGHUP, [`Handle::reload_tls`]) and counts
    /// the outcome. `Ok(false)`: no TLS.
    ///
    /// [`Handle::reload_tls`]: crate::Handle::reload_tls
    pub fn reload_tls(&self) -> Result<bool, crate::tls::LoadError> {
        let Some(certs) = &self.tls else { return Ok(false) };
        let result = certs.reload();
        let i = usize::from(result.is_err());
        self.tls_reloads[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result.map(|()| true)
    }

    /// The shutdown must end by `t` (a second signal: now).
    pub fn flush_until(&self, t: std::time::Instant) {
        let mut by = self.flush_by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *by = Some(by.map_or(t, |old| old.min(t)));
    }

    /// What is left of the shutdown's time for the forwarder's last flush.
    pub fn time_to_flush(&self) -> Duration {
        let by = *self.flush_by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by.map_or(self.forward_flush, |t| {
            t.saturating_duration_since(std::time::Instant::now())
        })
    }

    /// Sends `msg` to loop `to` and wakes it. False when it has stopped
    /// (the message was not queued).
    pub fn send(&self, to: usize, msg: LoopMsg) -> bool {
        let Some(link) = self.loops.get(to) else { return false };
        if link.inbox.send(msg).is_err() {
            return false;
        }
        if let Err(e) = link.waker.wake() {
            // Queued all the same; it is read on the loop's next wake-up.
            log::warn!("cannot wake event loop {to}: {e}");
        }
        true
    }

    /// Asks every loop in `to` its question at once and waits for the
    /// answers, all within one [`ASK_TIMEOUT`] (see the module doc); `None`
    /// for a loop that did not answer in time.
    pub fn ask_all(&self, to: Vec<(usize, Question)>) -> Vec<Option<Answer>> {
        let deadline = std::time::Instant::now() + ASK_TIMEOUT;
        let pending: Vec<Option<mpsc::Receiver<Answer>>> = to
            .into_iter()
            .map(|(l, q)| {
                let (tx, rx) = mpsc::channel();
                self.send(l, LoopMsg::Ask(q, tx)).then_some(rx)
            })
            .collect();
        pending
            .into_iter()
            .map(|rx| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                rx?.recv_timeout(left).ok()
            })
            .collect()
    }

    /// The loop with the fewest connections (the lowest index among
    /// equals), which takes the next one: within one of every other loop
    /// whatever the clients' addresses.
    pub fn least_loaded(&self) -> usize {
        let mut best = 0;
        let mut fewest = usize::MAX;
        for (i, l) in self.loops.iter().enumerate() {
            let n = l.assigned.load(Ordering::Relaxed);
            if n < fewest {
                best = i;
                fewest = n;
            }
        }
        best
    }

    /// Sockets held by every loop, as of the end of their last turns.
    pub fn connections_open(&self) -> usize {
        self.loops
            .iter()
            .map(|l| l.connections_open.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections held by every loop.
    pub fn total_assigned(&self) -> usize {
        self.loops.iter().map(|l| l.assigned.load(Ordering::Relaxed)).sum()
    }
}
