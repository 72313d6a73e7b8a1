//! Workers: the admin API's remote operations, and other nodes' questions
//! to this one. Each has a Redis connection of its own and may wait (for a
//! reply, for a loop); the event loops never do.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::debug;
use redis::Connection;
use serde_json::{Value, json};

use super::commands::{connect, load_scripts, now_ms};
use super::scripts::scripts;
use super::wire::{self, Query};
use super::{ADMIN_DEADLINE, Job, LocalNode, Settings, State};
use crate::admin::{ClientInfo, MAX_PAGE, NodeInfo, RemoteOp, RemoteResult};

/// A remote operation with less time than this left is not started.
const LATE: Duration = Duration::from_millis(100);

/// A failure that makes the answer 503.
struct Failed;

impl From<redis::RedisError> for Failed {
    fn from(e: redis::RedisError) -> Self {
        debug!("cluster worker: Redis failed: {e}");
        Failed
    }
}

struct Worker {
    s: Settings,
    state: Arc<State>,
    local: Arc<dyn LocalNode>,
    conn: Option<Connection>,
    /// `State::connected` when `conn` was made.
    made_at: u64,
}

pub(super) fn run(s: Settings, state: Arc<State>, local: Arc<dyn LocalNode>, jobs: Arc<Mutex<Receiver<Job>>>) {
    let mut w = Worker {
        s,
        state,
        local,
        conn: None,
        made_at: 0,
    };
    loop {
        if w.state.stop.load(Ordering::Acquire) {
            return;
        }
        let job = jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(Duration::from_millis(250));
        match job {
            Ok(Job::Admin(op, done, deadline)) => {
                // Too late to be of use (and a push must not land after a 503).
                let result = if Instant::now() + LATE < deadline {
                    w.admin(op, deadline).unwrap_or(RemoteResult::Unavailable)
                } else {
                    RemoteResult::Unavailable
                };
                done(result);
            }
            Ok(Job::Answer { arrived, .. }) if arrived.elapsed() > ADMIN_DEADLINE => {}
            Ok(Job::Answer { from, req, query, .. }) => {
                // Once more on a fresh connection: the asker is waiting.
                if w.answer(&from, req, &query).is_err() {
                    w.conn = None;
                    let _ = w.answer(&from, req, &query);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Worker {
    fn conn(&mut self) -> Result<&mut Connection, Failed> {
        let connected = self.state.connected.load(Ordering::Acquire);
        if self.made_at != connected {
            // The command thread reconnected since: this one may be to a
            // Redis that is gone.
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut c = connect(&self.s.url)?;
            load_scripts(&mut c)?;
            self.conn = Some(c);
            self.made_at = connected;
        }
        self.conn.as_mut().ok_or(Failed)
    }

    fn admin(&mut self, op: RemoteOp, deadline: Instant) -> Result<RemoteResult, Failed> {
        // Questions may be asked twice (on a fresh connection, if a stale
        // one failed); a push or kick is never sent twice.
        let retry = match &op {
            RemoteOp::Client { id } => Some(RemoteOp::Client { id: id.clone() }),
            RemoteOp::Page { after, limit, node } => Some(RemoteOp::Page {
                after: after.clone(),
                limit: *limit,
                node: node.clone(),
            }),
            RemoteOp::Nodes => Some(RemoteOp::Nodes),
            _ => None,
        };
        let mut result = self.admin_inner(op, deadline);
        if result.is_err() {
            self.conn = None;
            if let Some(op) = retry
                && Instant::now() < deadline
            {
                result = self.admin_inner(op, deadline);
                if result.is_err() {
                    self.conn = None;
                }
            }
        }
        result
    }

    fn admin_inner(&mut self, op: RemoteOp, deadline: Instant) -> Result<RemoteResult, Failed> {
        match op {
            RemoteOp::Client { id } => {
                let owner: String = scripts().owner.key(wire::id_key(&id)).invoke(self.conn()?)?;
                if owner.is_empty() || owner == *self.s.node {
                    return Ok(RemoteResult::Client(None));
                }
                let reply = self.ask(std::slice::from_ref(&owner), &Query::Client(id.clone()), deadline)?;
                let v = reply.into_iter().next().ok_or(Failed)?;
                match &v["client"] {
                    Value::Null => Ok(RemoteResult::Client(None)),
                    c => {
                        let c = ClientInfo::from_value(c).ok_or(Failed)?;
                        // Only an answer to the question asked, from the node asked.
                        if c.id != id || c.node != owner {
                            return Err(Failed);
                        }
                        Ok(RemoteResult::Client(Some(c)))
                    }
                }
            }
            RemoteOp::Push { id, msg } => self.send(&id, wire::encode_push(&id, &msg)),
            RemoteOp::Kick { id, reason } => self.send(&id, wire::encode_kick(&id, &reason)),
            RemoteOp::Broadcast { msg, here } => {
                let n: i64 = redis::cmd("PUBLISH")
                    .arg(wire::BROADCAST_CHANNEL)
                    .arg(wire::encode_broadcast(&self.s.node, &msg))
                    .query(self.conn()?)?;
                // Every subscribed node, this one included (it skips its own);
                // never more than the live nodes (a `redis-cli SUBSCRIBE`
                // watching the channel is no node).
                let live = self.live_nodes()?.len().max(1);
                Ok(RemoteResult::Broadcast {
                    recipients: here,
                    nodes: (n.max(1) as usize).min(live),
                })
            }
            RemoteOp::Page { after, limit, node } => self.page(after, limit, node, deadline),
            RemoteOp::Nodes => {
                let mut nodes = self.live_nodes()?;
                let (clients, connections) = self.local.counts();
                for n in &mut nodes {
                    if n.is_self {
                        n.clients = clients;
                        n.connections = connections;
                        n.last_seen_ms = now_ms();
                    }
                }
                Ok(RemoteResult::Nodes(nodes))
            }
        }
    }

    /// A push or kick for the live node holding `id`.
    fn send(&mut self, id: &str, message: Vec<u8>) -> Result<RemoteResult, Failed> {
        let node = self.s.node.clone();
        let (receivers, holder): (i64, String) = scripts()
            .send
            .key(wire::id_key(id))
            .arg(&*node)
            .arg(message)
            .invoke(self.conn()?)?;
        if holder.is_empty() {
            Ok(RemoteResult::Delivered(None))
        } else if receivers == 0 {
            // Alive by its lease, yet not listening: it did not get it.
            Err(Failed)
        } else {
            Ok(RemoteResult::Delivered(Some(holder)))
        }
    }

    /// Every live node, sorted by id.
    fn live_nodes(&mut self) -> Result<Vec<NodeInfo>, Failed> {
        let listed: Vec<Vec<u8>> = scripts().nodes.invoke(self.conn()?)?;
        let mut nodes = Vec::new();
        for pair in listed.chunks(2) {
            let [id, value] = pair else { continue };
            let (Ok(id), Ok(value)) = (std::str::from_utf8(id), std::str::from_utf8(value)) else {
                continue;
            };
            let mut f = value.split('|').skip(1).map(|x| x.parse::<u64>().unwrap_or(0));
            if value.is_empty() {
                continue;
            }
            let (clients, connections, last_seen_ms) = (
                f.next().unwrap_or(0) as usize,
                f.next().unwrap_or(0) as usize,
                f.next().unwrap_or(0),
            );
            nodes.push(NodeInfo {
                is_self: id == &*self.s.node,
                id: id.to_string(),
                clients,
                connections,
                last_seen_ms,
            });
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Asks each of `nodes` (never this one) the same question; their
    /// answers, in the same order, or `Failed` if one did not answer by
    /// `deadline`.
    fn ask(&mut self, nodes: &[String], query: &Query, deadline: Instant) -> Result<Vec<Value>, Failed> {
        let asked = self.post(nodes, query)?;
        asked.collect(deadline)
    }

    /// Publishes the question to each node; its replies come later.
    fn post(&mut self, nodes: &[String], query: &Query) -> Result<Asked, Failed> {
        let mut asked = Asked {
            state: self.state.clone(),
            waiting: Vec::with_capacity(nodes.len()),
        };
        for node in nodes {
            let req = self.state.next_request.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = sync_channel(1);
            self.state
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(req, tx);
            asked.waiting.push((req, rx));
            let heard: i64 = redis::cmd("PUBLISH")
                .arg(wire::node_channel(node))
                .arg(wire::encode_request(&self.s.node, req, query))
                .query(self.conn()?)?;
            if heard == 0 {
                return Err(Failed);
            }
        }
        Ok(asked)
    }

    /// A page of clients across `node` (or every live node), in id order.
    fn page(
        &mut self,
        after: Option<String>,
        limit: usize,
        node: Option<String>,
        deadline: Instant,
    ) -> Result<RemoteResult, Failed> {
        let mut targets: Vec<String> = self.live_nodes()?.into_iter().map(|n| n.id).collect();
        if let Some(only) = &node {
            targets.retain(|n| n == only);
        }
        let me = self.s.node.to_string();
        let here = targets.contains(&me);
        targets.retain(|n| *n != me);
        // One more than asked tells whether more follow.
        let query = Query::Page {
            after: after.clone(),
            limit: limit + 1,
        };
        // The other nodes work on it while this one asks its own loops.
        let asked = self.post(&targets, &query)?;
        let mut total: usize = 0;
        let mut clients = Vec::new();
        if here {
            let (n, mine) = self.local.page(after.as_deref(), limit + 1).map_err(|_| Failed)?;
            total = n;
            clients.extend(mine);
        }
        for (v, node) in asked.collect(deadline)?.into_iter().zip(&targets) {
            let n = v["total"].as_u64().ok_or(Failed)?;
            total = total.saturating_add(usize::try_from(n).map_err(|_| Failed)?);
            // A node sends at most what was asked, its own clients, after
            // `after`; anything else is no answer to this question.
            let theirs = v["clients"].as_array().ok_or(Failed)?;
            if theirs.len() > limit + 1 {
                return Err(Failed);
            }
            for c in theirs {
                let c = ClientInfo::from_value(c).ok_or(Failed)?;
                if c.node != *node || after.as_deref().is_some_and(|a| c.id.as_str() <= a) {
                    return Err(Failed);
                }
                clients.push(c);
            }
        }
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        // An id held twice for a moment (a replacement in flight) shows,
        // and counts, once.
        let listed = clients.len();
        clients.dedup_by(|a, b| a.id == b.id);
        total = total.saturating_sub(listed - clients.len());
        let more = clients.len() > limit;
        clients.truncate(limit);
        let next = if more {
            clients.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(RemoteResult::Page { total, clients, next })
    }

    /// Answers another node's question on its channel.
    fn answer(&mut self, from: &str, req: u64, query: &Query) -> Result<(), Failed> {
        let body = match query {
            Query::Client(id) => match self.local.client(id) {
                Ok(c) => json!({ "client": c.map(|c| c.to_value()) }),
                Err(_) => json!({ "error": "unavailable" }),
            },
            Query::Page { after, limit } => match self.local.page(after.as_deref(), (*limit).min(MAX_PAGE + 1)) {
                Ok((total, clients)) => json!({
                    "total": total,
                    "clients": clients.iter().map(ClientInfo::to_value).collect::<Vec<_>>(),
                }),
                Err(_) => json!({ "error": "unavailable" }),
            },
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        redis::cmd("PUBLISH")
            .arg(wire::node_channel(from))
            .arg(wire::encode_reply(req, &body))
            .query::<i64>(self.conn()?)?;
        Ok(())
    }
}

/// Questions published and waiting for replies; dropped, it forgets them
/// (a late reply finds no one and is ignored).
struct Asked {
    state: Arc<State>,
    waiting: Vec<(u64, Receiver<Vec<u8>>)>,
}

impl Asked {
    /// Every reply, in the order asked, or `Failed` if one did not come by
    /// `deadline` or was an error.
    fn collect(self, deadline: Instant) -> Result<Vec<Value>, Failed> {
        let mut answers = Vec::with_capacity(self.waiting.len());
        for (_, rx) in &self.waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            let body = rx.recv_timeout(left).map_err(|_| Failed)?;
            let v: Value = serde_json::from_slice(&body).map_err(|_| Failed)?;
            if v.get("error").is_some() {
                return Err(Failed);
            }
            answers.push(v);
        }
        Ok(answers)
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        let mut pending = self.state.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (req, _) in &self.waiting {
            pending.remove(req);
        }
    }
}
