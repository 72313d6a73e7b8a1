//! The command thread: the one writer of this node's state in Redis.
//!
//! It sends the binds and unbinds the loops queued, as one pipeline per
//! batch; renews the lease every third of `--node-lease`; every second
//! checks the epoch key (a Redis that restarted empty), publishes a probe to
//! its own channel (which the subscriber must see come back), and reaps the
//! nodes whose lease ran out. On every (re)connect, and whenever the state
//! here may differ from Redis's, it registers again every id held here.
//!
//! While Redis is unreachable it retries with backoff, logging once per
//! change of state; binds are dropped (the next registration covers them),
//! unbinds are kept (bounded) to be sent on reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use redis::{Connection, Value};

use super::directory::{ClusterDirectory, Op};
use super::scripts::{self, scripts};
use super::subscriber::settle;
use super::wire;
use super::{CONNECT_TIMEOUT, Delivery, IO_TIMEOUT, LocalNode, Settings, State};
use crate::presence::{ConnId, Directory, DuplicateId, OfflineReason};

/// Most changes sent in one pipeline.
const BATCH: usize = 4096;
/// Ids per script call or page while registering again or reaping.
const CHUNK: usize = 1000;
/// Unbinds kept while Redis is away; beyond, the sweep after reconnect
/// finds the rest (reason `error`).
const DOWN_RELEASES: usize = 65_536;
/// How often the thread looks at its clocks.
const TICK: Duration = Duration::from_millis(250);
const TICK_NOT_UP: Duration = Duration::from_millis(20);
/// Probes, epoch checks and reaping.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Probes that may be on their way before the subscription is deemed dead.
const PROBES_IN_FLIGHT: u64 = 2;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A unique token for this process's lease (the node id may be reused by a
/// later process).
pub(super) fn instance_token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

pub(super) fn connect(url: &str) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// `EVALSHA` of a loaded script, for pipelines.
pub(super) fn evalsha(script: &redis::Script, keys: &[&str], args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(args);
    c
}

pub(super) fn load_scripts(conn: &mut Connection) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for code in scripts::ALL {
        pipe.cmd("SCRIPT").arg("LOAD").arg(code);
    }
    pipe.query::<Vec<String>>(conn).map(|_| ())
}

fn lease_value(token: &str, local: &dyn LocalNode) -> String {
    let (clients, connections) = local.counts();
    format!("{token}|{clients}|{connections}|{}", now_ms())
}

/// At start-up: refuses a node id a live node holds (when Redis answers),
/// and takes the lease for this process.
pub(super) fn check_node_id(s: &Settings, token: &str) -> Result<(), String> {
    let mut conn = match connect(&s.url) {
        Ok(c) => c,
        Err(e) => {
            warn!("cluster: Redis at --cluster is unreachable ({e}); serving this node's clients and retrying");
            return Ok(());
        }
    };
    let held: redis::RedisResult<i64> = scripts()
        .renew
        .key(wire::lease_key(&s.node))
        .arg(token)
        .arg(format!("{token}|0|0|{}", now_ms()))
        .arg(s.lease.as_millis() as u64)
        .arg(&*s.node)
        .invoke(&mut conn);
    match held {
        Ok(-1) => Err(format!(
            "--node-id '{}' is held by a live node (its lease is renewed within --node-lease {:?}); choose another id or wait until that node is gone",
            s.node, s.lease
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            warn!("cluster: cannot register with Redis ({e}); retrying");
            Ok(())
        }
    }
}

struct Commander {
    s: Settings,
    state: Arc<State>,
    dir: Arc<ClusterDirectory>,
    local: Arc<dyn LocalNode>,
    conn: Option<Connection>,
    /// This node's lease is ours and its ids registered.
    registered: bool,
    /// The first registration of this process (leftovers of an earlier
    /// process with this node id are its clients lost with it).
    first: bool,
    epoch: Option<String>,
    down_releases: Vec<Op>,
    dropped_releases: bool,
    backoff: Duration,
    retry_at: Instant,
    renew_at: Instant,
    check_at: Instant,
    /// The subscription last judged (`State::subscriptions`), and the last
    /// probe published before it: it is proven once a later one returns.
    subscription: u64,
    probe_base: u64,
    /// A probe was published to prove the current subscription.
    proof_sent: bool,
    /// The subscription (`State::subscriptions`) the last complete
    /// registration began after.
    registered_for: u64,
    /// What was last logged about the state, so it is logged once.
    logged_up: Option<bool>,
    last_error: Option<String>,
}

pub(super) fn run(
    s: Settings,
    state: Arc<State>,
    dir: Arc<ClusterDirectory>,
    local: Arc<dyn LocalNode>,
    ops: Receiver<Op>,
) {
    let now = Instant::now();
    let mut c = Commander {
        s,
        state,
        dir,
        local,
        conn: None,
        registered: false,
        first: true,
        epoch: None,
        down_releases: Vec::new(),
        dropped_releases: false,
        backoff: BACKOFF_MIN,
        retry_at: now,
        renew_at: now,
        check_at: now,
        subscription: 0,
        probe_base: 0,
        proof_sent: false,
        registered_for: 0,
        logged_up: None,
        last_error: None,
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if c.state.stop.load(Ordering::Acquire) {
            batch.extend(ops.try_iter());
            c.finish(&mut batch);
            return;
        }
        // While not up, look often: a new subscription's proof, a reconnect
        // or a registration should count in milliseconds, not ticks.
        let tick = if c.state.up.load(Ordering::Acquire) {
            TICK
        } else {
            TICK_NOT_UP
        };
        match ops.recv_timeout(tick) {
            Ok(op) => {
                batch.push(op);
                batch.extend(ops.try_iter().take(BATCH - 1));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                c.finish(&mut batch);
                return;
            }
        }
        c.turn(&mut batch, &ops);
    }
}

impl Commander {
    fn turn(&mut self, batch: &mut Vec<Op>, ops: &Receiver<Op>) {
        let now = Instant::now();
        if self.conn.is_none() && now >= self.retry_at {
            self.reconnect();
        } else if self.conn.is_some() && !self.registered && now >= self.renew_at {
            // Another process held this node id: try again.
            let result = self.register();
            self.check(result);
        }
        if self.conn.is_none() || !self.registered {
            self.hold(batch);
        } else if !batch.is_empty() {
            let result = self.send(batch);
            self.check(result);
        }
        if self.conn.is_some() && self.registered {
            if now >= self.renew_at {
                let result = self.renew();
                self.check(result);
            }
            if self.conn.is_some() && now >= self.check_at {
                self.check_at = now + CHECK_EVERY;
                let result = self.periodic();
                self.check(result);
            }
            // A subscription made since the last registration began may
            // have missed what was said to this node meanwhile.
            let unregistered_subscription = self.state.subscriptions.load(Ordering::Acquire) != self.registered_for;
            if self.conn.is_some() && (self.state.resync.swap(false, Ordering::AcqRel) || unregistered_subscription) {
                // What is queued was decided before: it goes first, or a
                // stale bind could land after the registration.
                let mut result = Ok(());
                while result.is_ok() {
                    batch.extend(ops.try_iter().take(BATCH));
                    if batch.is_empty() {
                        break;
                    }
                    result = self.send(batch);
                }
                let result = result.and_then(|()| self.register_all());
                self.check(result);
            }
            if self.conn.is_some() && !self.proof_sent && self.state.subscribed.load(Ordering::Acquire) {
                // A new subscription: prove it now rather than at the next
                // periodic probe.
                self.proof_sent = true;
                let result = self.probe();
                self.check(result);
            }
        }
        self.update_state();
    }

    /// Keeps what Redis must still hear once back (unbinds); binds are
    /// covered by the registration after the reconnect.
    fn hold(&mut self, batch: &mut Vec<Op>) {
        for op in batch.drain(..) {
            if let Op::Release { .. } = op {
                if self.down_releases.len() < DOWN_RELEASES {
                    self.down_releases.push(op);
                } else {
                    self.dropped_releases = true;
                }
            }
        }
    }

    fn check(&mut self, result: redis::RedisResult<()>) {
        if let Err(e) = result {
            self.lost(e);
        }
    }

    /// The connection failed: serve locally, retry with backoff.
    fn lost(&mut self, e: redis::RedisError) {
        let msg = e.to_string();
        if self.last_error.as_deref() != Some(msg.as_str()) {
            warn!("cluster: Redis failed ({msg}); serving this node's clients, retrying");
            self.last_error = Some(msg);
        }
        self.conn = None;
        self.registered = false;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.update_state();
    }

    fn conn(&mut self) -> redis::RedisResult<&mut Connection> {
        self.conn
            .as_mut()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "not connected")))
    }

    fn reconnect(&mut self) {
        let result = connect(&self.s.url).and_then(|mut conn| {
            load_scripts(&mut conn)?;
            self.conn = Some(conn);
            self.epoch = None;
            self.register()
        });
        match result {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                self.last_error = None;
                self.state.connected.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => self.lost(e),
        }
    }

    /// Takes the lease, notes the epoch and registers every id held here.
    fn register(&mut self) -> redis::RedisResult<()> {
        let token = self.state.token.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(wire::EPOCH_KEY).arg(&token).arg("NX").ignore();
        pipe.cmd("GET").arg(wire::EPOCH_KEY);
        let (epoch,): (String,) = pipe.query(self.conn()?)?;
        self.epoch = Some(epoch);
        if self.renew_lease()? < 0 {
            return Ok(());
        }
        self.registered = true;
        self.register_all()
    }

    /// Renews the lease; -1 when another process holds this node id.
    fn renew_lease(&mut self) -> redis::RedisResult<i64> {
        let value = lease_value(&self.state.token, &*self.local);
        let lease_ms = self.s.lease.as_millis() as u64;
        let key = wire::lease_key(&self.s.node);
        let node = self.s.node.clone();
        let held: i64 = scripts()
            .renew
            .key(key)
            .arg(&self.state.token)
            .arg(value)
            .arg(lease_ms)
            .arg(&*node)
            .invoke(self.conn()?)?;
        self.renew_at = Instant::now() + self.s.lease / 3;
        if held < 0 {
            if self.logged_up != Some(false) || self.registered {
                error!(
                    "cluster: another live process holds --node-id '{}'; this node stays out of the cluster until it is gone",
                    self.s.node
                );
            }
            self.registered = false;
            // Try again soon, without dropping the connection.
            self.renew_at = Instant::now() + self.s.lease / 3;
        }
        Ok(held)
    }

    fn renew(&mut self) -> redis::RedisResult<()> {
        match self.renew_lease()? {
            0 => {
                warn!("cluster: this node's lease had expired (it was cut off); registering its clients again");
                self.register_all()
            }
            _ => Ok(()),
        }
    }

    /// The CLAIM script call for `id` (`resync`: settling after an outage).
    fn claim(&self, id: &str, conn: ConnId, at_ms: u64, resync: bool) -> redis::Cmd {
        let node = &*self.s.node;
        let mode: &[u8] = match self.s.duplicate_id {
            DuplicateId::Replace => b"replace",
            DuplicateId::Reject => b"reject",
        };
        evalsha(
            &scripts().claim,
            &[&wire::id_key(id), &wire::ids_key(node)],
            &[
                id.as_bytes(),
                node.as_bytes(),
                conn.raw().to_string().as_bytes(),
                at_ms.to_string().as_bytes(),
                mode,
                if resync { b"1" } else { b"0" },
            ],
        )
    }

    /// Sends a batch of binds and unbinds as one pipeline.
    fn send(&mut self, batch: &mut Vec<Op>) -> redis::RedisResult<()> {
        let node = self.s.node.clone();
        let ids_key = wire::ids_key(&node);
        let mut pipe = redis::pipe();
        for op in batch.iter() {
            match op {
                Op::Claim { id, conn, at_ms } => {
                    pipe.add_command(self.claim(id, *conn, *at_ms, false));
                }
                Op::Release {
                    id,
                    conn,
                    reason,
                    at_ms,
                } => {
                    pipe.add_command(evalsha(
                        &scripts().release,
                        &[&wire::id_key(id), &ids_key],
                        &[
                            id.as_bytes(),
                            node.as_bytes(),
                            conn.raw().to_string().as_bytes(),
                            reason.as_str().as_bytes(),
                            at_ms.to_string().as_bytes(),
                        ],
                    ));
                }
            }
        }
        let results: Vec<Value> = match pipe.query(self.conn()?) {
            Ok(r) => r,
            Err(e) => {
                // Unbinds must still reach Redis once it is back.
                self.hold(batch);
                return Err(e);
            }
        };
        for (op, result) in batch.drain(..).zip(results) {
            if let Op::Claim { id, conn, .. } = op
                && let Ok((status, _, _)) = redis::from_redis_value::<(String, String, String)>(result)
                && status == "rejected"
            {
                settle(&self.state, &*self.local, Delivery::Rejected((*id).into(), conn));
            }
        }
        Ok(())
    }

    /// Registers every id held here again, settles ids another node also
    /// took meanwhile, and lets go of those no longer held here.
    fn register_all(&mut self) -> redis::RedisResult<()> {
        let started = Instant::now();
        let subscription = self.state.subscriptions.load(Ordering::Acquire);
        let node = self.s.node.clone();
        let ids_key = wire::ids_key(&node);
        // Unbinds from while Redis was away, first (a failed part goes
        // back to be sent after the next reconnect).
        while !self.down_releases.is_empty() {
            let n = self.down_releases.len().min(BATCH);
            let mut part: Vec<Op> = self.down_releases.drain(..n).collect();
            self.send(&mut part)?;
        }
        let mut after: Option<Arc<str>> = None;
        let mut registered = 0usize;
        loop {
            // A node of many ids takes a while: its lease must not lapse.
            if Instant::now() >= self.renew_at {
                self.renew_lease()?;
            }
            let held = self.dir.held(after.as_deref(), CHUNK);
            if held.is_empty() {
                break;
            }
            after = held.last().map(|(id, _, _)| id.clone());
            let mut pipe = redis::pipe();
            for (id, conn, at_ms) in &held {
                pipe.add_command(self.claim(id, *conn, *at_ms, true));
            }
            let results: Vec<Value> = pipe.query(self.conn()?)?;
            for ((id, conn, _), result) in held.iter().zip(results) {
                let Ok((status, other, _)) = redis::from_redis_value::<(String, String, String)>(result) else {
                    continue;
                };
                if status == "lost" {
                    info!("cluster: {id} is also on node {other}, which keeps it");
                    let d = match self.s.duplicate_id {
                        DuplicateId::Replace => Delivery::Replaced((**id).into(), *conn),
                        DuplicateId::Reject => Delivery::Rejected((**id).into(), *conn),
                    };
                    settle(&self.state, &*self.local, d);
                }
            }
            registered += held.len();
        }
        // Ids Redis says are here but are not (they left while unheard).
        let reason = if self.first {
            OfflineReason::NodeLost
        } else {
            OfflineReason::Error
        };
        let mut cursor: u64 = 0;
        let mut swept = 0;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&ids_key)
                .arg(cursor)
                .arg("COUNT")
                .arg(CHUNK)
                .query(self.conn()?)?;
            let stale: Vec<&String> = ids.iter().filter(|id| self.dir.lookup(id).is_none()).collect();
            if !stale.is_empty() {
                let at = now_ms().to_string();
                let mut args: Vec<&[u8]> = vec![node.as_bytes(), reason.as_str().as_bytes(), at.as_bytes()];
                args.extend(stale.iter().map(|id| id.as_bytes()));
                let n: i64 = evalsha(&scripts().release_stale, &[&ids_key], &args).query(self.conn()?)?;
                swept += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if self.dropped_releases && swept > 0 {
            warn!("cluster: {swept} ids that left while Redis was away went offline with reason error");
        }
        self.dropped_releases = false;
        self.first = false;
        self.registered_for = subscription;
        info!(
            "cluster: node '{}' registered {registered} ids in {} ms",
            node,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// The epoch, a probe, and the dead nodes.
    fn periodic(&mut self) -> redis::RedisResult<()> {
        let epoch: Option<String> = redis::cmd("GET").arg(wire::EPOCH_KEY).query(self.conn()?)?;
        if epoch != self.epoch {
            warn!("cluster: Redis lost its state (restarted or flushed); registering this node again");
            self.epoch = None;
            self.registered = false;
            return self.register();
        }
        if self.state.subscribed.load(Ordering::Acquire) {
            self.probe()?;
        }
        self.reap()
    }

    /// Publishes a probe the subscriber must see come back.
    fn probe(&mut self) -> redis::RedisResult<()> {
        let seq = self.state.probe_sent.load(Ordering::Acquire) + 1;
        // Counted before it is sent: it may come back before PUBLISH returns.
        self.state.probe_sent.store(seq, Ordering::Release);
        let channel = wire::node_channel(&self.s.node);
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(wire::encode_probe(seq))
            .query::<i64>(self.conn()?)?;
        Ok(())
    }

    /// Takes the clients of every node whose lease ran out offline, once:
    /// the node that gets the reap lock does it.
    fn reap(&mut self) -> redis::RedisResult<()> {
        let listed: Vec<Vec<u8>> = scripts().nodes.invoke(self.conn()?)?;
        let mut live = 0;
        let mut dead = Vec::new();
        for pair in listed.chunks(2) {
            let [node, value] = pair else { continue };
            let node = String::from_utf8_lossy(node).into_owned();
            if value.is_empty() {
                if node != *self.s.node {
                    dead.push(node);
                }
            } else {
                live += 1;
            }
        }
        self.state.nodes.store(live, Ordering::Release);
        for node in dead {
            let lock: Option<String> = redis::cmd("SET")
                .arg(wire::reap_key(&node))
                .arg(&*self.s.node)
                .arg("NX")
                .arg("PX")
                .arg(self.s.lease.as_millis() as u64)
                .query(self.conn()?)?;
            if lock.is_none() {
                // Another node reaps it, unless the lock is this node's own
                // from a reaping it has not finished.
                let holder: Option<String> = redis::cmd("GET").arg(wire::reap_key(&node)).query(self.conn()?)?;
                if holder.as_deref() != Some(&*self.s.node) {
                    continue;
                }
            }
            let mut lost = 0;
            let mut alive = false;
            // Bounded per second (100,000 ids); a bigger node is finished in
            // the next seconds, under the same lock.
            for _ in 0..100 {
                if Instant::now() >= self.renew_at {
                    self.renew_lease()?;
                }
                let n: i64 = scripts()
                    .reap
                    .arg(&node)
                    .arg(CHUNK)
                    .arg(now_ms())
                    .invoke(self.conn()?)?;
                if n > 0 {
                    lost += n;
                }
                alive = n < 0;
                if n < CHUNK as i64 {
                    break;
                }
            }
            if alive {
                info!("cluster: node '{node}' renewed its lease again; not reaped");
            } else if lost > 0 {
                warn!("cluster: node '{node}' is gone (lease expired): {lost} of its ids went offline (node_lost)");
            }
        }
        Ok(())
    }

    fn update_state(&mut self) {
        let subscription = self.state.subscriptions.load(Ordering::Acquire);
        if subscription != self.subscription {
            // Judged from its start: probes sent before it do not count.
            self.subscription = subscription;
            self.probe_base = self.state.probe_sent.load(Ordering::Acquire);
            self.proof_sent = false;
        }
        let sent = self.state.probe_sent.load(Ordering::Acquire);
        let seen = self.state.probe_seen.load(Ordering::Acquire).max(self.probe_base);
        let subscribed = self.state.subscribed.load(Ordering::Acquire);
        let resubscribing = self.state.resubscribe.load(Ordering::Acquire);
        let probes_ok = sent.saturating_sub(seen) <= PROBES_IN_FLIGHT;
        if !probes_ok && self.conn.is_some() && subscribed && !resubscribing {
            warn!("cluster: this node's own probes stopped coming back; subscribing again");
            self.state.resubscribe.store(true, Ordering::Release);
        }
        // Proven: a probe published since it subscribed came back.
        let proven = self.state.probe_seen.load(Ordering::Acquire) > self.probe_base;
        let up = self.conn.is_some()
            && self.registered
            && subscribed
            && !self.state.resubscribe.load(Ordering::Acquire)
            && probes_ok
            && proven;
        self.state.up.store(up, Ordering::Release);
        if self.logged_up != Some(up) {
            if up {
                info!("cluster: up, as node '{}'", self.s.node);
            } else if self.logged_up.is_some() {
                warn!("cluster: down; operations that need other nodes answer 503 until it is back");
            }
            self.logged_up = Some(up);
        }
    }

    /// On shutdown: the last unbinds (the shutdown's offline events) go
    /// out, and the lease is given up so the node id is free at once.
    fn finish(&mut self, batch: &mut Vec<Op>) {
        self.state.up.store(false, Ordering::Release);
        if self.conn.is_none() {
            // The lease taken at start-up is this process's even if the
            // thread never got to connect: give it up if Redis answers.
            match connect(&self.s.url).and_then(|mut c| load_scripts(&mut c).map(|()| c)) {
                Ok(c) => self.conn = Some(c),
                Err(_) => return,
            }
        }
        let mut result = Ok(());
        while self.registered && !batch.is_empty() && result.is_ok() {
            let n = batch.len().min(BATCH);
            let mut part: Vec<Op> = batch.drain(..n).collect();
            result = self.send(&mut part);
        }
        let token = self.state.token.clone();
        let node = self.s.node.clone();
        let result = result.and_then(|()| {
            let conn = self.conn()?;
            scripts()
                .deregister
                .key(wire::lease_key(&node))
                .key(wire::ids_key(&node))
                .arg(&token)
                .arg(&*node)
                .invoke::<i64>(conn)
        });
        match result {
            Ok(_) => info!("cluster: node '{node}' left the cluster"),
            Err(e) => warn!("cluster: could not leave the cluster cleanly ({e}); its lease will expire"),
        }
    }
}
