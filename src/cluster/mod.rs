//! A cluster of wsbeat nodes through Redis (SPEC §9): ids unique across
//! nodes, pushes, kicks, broadcasts and the admin API reaching clients on
//! any node, presence events of every node, and a dead node's clients going
//! offline (`node_lost`) when its lease runs out.
//!
//! Nothing here runs on an event loop. The loops bind and unbind through
//! [`ClusterDirectory`] (no waiting); helper threads talk to Redis with the
//! `redis` crate's synchronous API:
//!
//! - the command thread (`commands.rs`) sends each batch of queued binds and
//!   unbinds as one pipeline of Lua scripts (`scripts.rs`), renews this
//!   node's lease, reaps dead nodes, probes its own subscription, and after
//!   every reconnect (or a Redis that restarted empty) registers again every
//!   id held here;
//! - the subscriber thread (`subscriber.rs`) reads this node's channel, the
//!   broadcasts and the presence events, with a read timeout and PINGs;
//! - workers (`workers.rs`) answer the admin API's remote requests and other
//!   nodes' questions, each within a deadline.
//!
//! What they need of the server is `LocalNode`; what reaches the loops
//! goes through it. The wire format is `wire.rs`.

mod commands;
mod directory;
mod scripts;
mod subscriber;
pub mod wire;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::warn;

use crate::admin::{ClientInfo, RemoteOp, RemoteResult, Unavailable};
use crate::handler::Outgoing;
use crate::presence::{ConnId, DuplicateId};

pub use directory::ClusterDirectory;
use directory::Op;

/// The most a stopping server waits for the cluster's threads.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// Connect timeout for every Redis connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read and write timeout of the command and worker connections.
const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// The admin API answers within 2 s; remote operations end before.
const ADMIN_DEADLINE: Duration = Duration::from_millis(1700);
/// Workers running this node's remote admin operations.
const WORKERS: usize = 4;
/// Workers answering other nodes' questions (each waits on a loop at most).
const RESPONDERS: usize = 2;
/// Remote operations (or other nodes' questions) waiting for a worker;
/// beyond, they answer 503. A worker gets through a few hundred a second;
/// more than this could not be served within the deadline anyway.
const JOB_QUEUE: usize = 256;

/// Checks a `--cluster` URL: `redis://[[user]:password@]host[:port][/db]`.
pub fn check_url(url: &str) -> Result<(), String> {
    const WANT: &str = "expected redis://[[user]:password@]host[:port][/db]";
    if !url.starts_with("redis://") {
        return Err(WANT.into());
    }
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{WANT} ({e})")),
    }
}

/// What the cluster's threads need of this node's server.
pub(crate) trait LocalNode: Send + Sync + 'static {
    /// Hands a delivery to the loop concerned without waiting; false when
    /// it could not be queued (the loop is busy past its queue, or gone).
    fn deliver(&self, d: Delivery) -> bool;
    /// The CLIENT of `id` if this node holds it (may wait for a loop).
    fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable>;
    /// Clients held here, and up to `limit` of them after `after`.
    fn page(&self, after: Option<&str>, limit: usize) -> Result<(usize, Vec<ClientInfo>), Unavailable>;
    /// Client ids held and connections open here.
    fn counts(&self) -> (usize, usize);
    /// Presence events arrived for `/events`.
    fn events_arrived(&self);
}

/// What another node asks of this one's loops.
#[derive(Debug)]
pub(crate) enum Delivery {
    Push(Box<str>, Outgoing),
    Kick(Box<str>, String),
    /// A newer connection elsewhere took this connection's id: 4001, if
    /// the connection still holds that id here.
    Replaced(Box<str>, ConnId),
    /// Reject mode: another node holds the id this connection claimed:
    /// 4002, if the connection still holds that id here.
    Rejected(Box<str>, ConnId),
    Broadcast(Outgoing),
}

/// The cluster's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: String,
    pub node: Arc<str>,
    pub lease: Duration,
    pub duplicate_id: DuplicateId,
}

/// What the threads and the directory share.
#[derive(Default)]
pub(crate) struct State {
    /// This process's lease token.
    pub token: String,
    /// Live nodes, as last counted.
    pub nodes: AtomicUsize,
    /// Redis reachable, this node registered, its ids registered, its
    /// subscription proven: operations that need other nodes may run.
    pub up: AtomicBool,
    /// The subscriber is subscribed (set by it, cleared when it is not).
    pub subscribed: AtomicBool,
    /// Everything held here must be registered again (set by the directory
    /// after dropping a change, and when a delivery could not be queued; a
    /// new subscription asks the same through `subscriptions`).
    pub resync: AtomicBool,
    /// The subscriber must reconnect (its probes stopped coming back).
    pub resubscribe: AtomicBool,
    /// The last probe this node received on its own channel.
    pub probe_seen: AtomicU64,
    /// The last probe it published (a probe numbered above it is forged).
    pub probe_sent: AtomicU64,
    /// Subscriptions made so far (each must prove itself with a probe).
    pub subscriptions: AtomicU64,
    pub stop: AtomicBool,
    /// Counts the command thread's successful connections: a worker whose
    /// connection is older reconnects (Redis may have restarted).
    pub connected: AtomicU64,
    /// Requests to other nodes waiting for their replies, by number.
    pub pending: Mutex<HashMap<u64, SyncSender<Vec<u8>>>>,
    pub next_request: AtomicU64,
}

/// A remote admin operation and where its result goes.
pub(crate) type Done = Box<dyn FnOnce(RemoteResult) + Send>;

enum Job {
    /// Its deadline runs from when it was submitted: a job that waited past
    /// it is answered 503 and not carried out (the admin connection has
    /// given up on it, and a push must not land after a 503).
    Admin(RemoteOp, Done, Instant),
    /// Another node's question, and when it arrived (the asker gives up
    /// after its own deadline: a question older than that is dropped).
    Answer {
        from: String,
        req: u64,
        query: wire::Query,
        arrived: Instant,
    },
}

/// A running cluster membership: the directory the loops use, and the
/// threads behind it.
pub(crate) struct Cluster {
    settings: Settings,
    state: Arc<State>,
    directory: Arc<ClusterDirectory>,
    ops: Mutex<Option<Receiver<Op>>>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each holds one value swapped whole: a panic cannot leave it half-made.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Prepares the membership; [`start`](Self::start) runs it. Checks that
    /// no live node holds this node's id, if Redis answers now (an
    /// unreachable Redis is not fatal: the node serves its own clients and
    /// retries).
    pub fn new(settings: Settings) -> Result<Cluster, String> {
        check_url(&settings.url).map_err(|e| format!("invalid --cluster '{}': {e}", settings.url))?;
        let token = commands::instance_token();
        commands::check_node_id(&settings, &token)?;
        let state = Arc::new(State {
            // Request numbers start anywhere: a reply is not guessed from 0.
            next_request: AtomicU64::new(commands::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            token,
            ..State::default()
        });
        let (directory, ops) = ClusterDirectory::new(state.clone());
        Ok(Cluster {
            settings,
            state,
            directory: Arc::new(directory),
            ops: Mutex::new(Some(ops)),
            jobs: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        })
    }

    pub fn directory(&self) -> Arc<ClusterDirectory> {
        self.directory.clone()
    }

    /// Starts the threads.
    pub fn start(&self, local: Arc<dyn LocalNode>) -> std::io::Result<()> {
        let Some(ops) = locked(&self.ops).take() else {
            return Ok(());
        };
        let mut threads = locked(&self.threads);
        let (jobs, job_rx) = sync_channel(JOB_QUEUE);
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Other nodes' questions have workers of their own: answering them
        // must never wait behind this node's own questions to them.
        let (answers, answer_rx) = sync_channel(JOB_QUEUE);
        let answer_rx = Arc::new(Mutex::new(answer_rx));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name).spawn(f);
        let (s, st, dir, l) = (
            self.settings.clone(),
            self.state.clone(),
            self.directory.clone(),
            local.clone(),
        );
        threads.push(spawn(
            "wsbeat-cluster-cmd".into(),
            Box::new(move || commands::run(s, st, dir, l, ops)),
        )?);
        let (s, st, dir, l, j) = (
            self.settings.clone(),
            self.state.clone(),
            self.directory.clone(),
            local.clone(),
            answers,
        );
        threads.push(spawn(
            "wsbeat-cluster-sub".into(),
            Box::new(move || subscriber::run(s, st, dir, l, j)),
        )?);
        for i in 0..WORKERS + RESPONDERS {
            let rx = if i < WORKERS { job_rx.clone() } else { answer_rx.clone() };
            let (s, st, l) = (self.settings.clone(), self.state.clone(), local.clone());
            threads.push(spawn(
                format!("wsbeat-cluster-w{i}"),
                Box::new(move || workers::run(s, st, l, rx)),
            )?);
        }
        *locked(&self.jobs) = Some(jobs);
        Ok(())
    }

    /// Live nodes, as last counted (this one included once registered).
    pub fn nodes(&self) -> usize {
        self.state.nodes.load(Ordering::Acquire)
    }

    /// Whether operations that need other nodes can run now.
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Acquire)
    }

    /// Runs a remote admin operation off the loop; `done` gets its result
    /// within the admin API's deadline (at once when it cannot start).
    pub fn submit(&self, op: RemoteOp, done: Done) {
        let job = Job::Admin(op, done, Instant::now() + ADMIN_DEADLINE);
        let refused = match &*locked(&self.jobs) {
            Some(jobs) if self.is_up() => match jobs.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
            },
            _ => job,
        };
        if let Job::Admin(_, done, _) = refused {
            done(RemoteResult::Unavailable);
        }
    }

    /// Stops the threads: the command thread first sends what is queued
    /// (the offline events of a shutdown) and gives up this node's lease.
    /// Waits for them at most `STOP_WAIT`: a slow Redis must not hold up
    /// the exit (the lease then expires on its own).
    pub fn stop(&self) {
        self.state.stop.store(true, Ordering::Release);
        *locked(&self.jobs) = None;
        let threads = std::mem::take(&mut *locked(&self.threads));
        let me = std::thread::current().id();
        let until = Instant::now() + STOP_WAIT;
        // Never itself: a cluster thread may hold the server last.
        for t in threads.into_iter().filter(|t| t.thread().id() != me) {
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                warn!("cluster: a helper thread did not stop in time; leaving it");
            } else if t.join().is_err() {
                warn!("a cluster thread panicked");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
