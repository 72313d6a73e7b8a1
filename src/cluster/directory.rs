//! [`ClusterDirectory`]: the [`Directory`] of a node in a cluster. The
//! loops bind and unbind through it exactly as on a single node, and never
//! wait for Redis: decisions between this node's own connections are taken
//! here at once (one registry for all loops), and each change is queued
//! for the cluster's command thread, which settles it with the other nodes
//! (replace: the older connection, wherever it is, is closed with 4001;
//! reject: the newer, with 4002).
//!
//! Presence events: while the cluster is up, `/events` shows what Redis
//! decided, for every node, in Redis's order (the scripts publish them);
//! while it is down, this node's own changes, as they happen here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::presence::{Bind, ConnId, Directory, DuplicateId, NodeEvent, OfflineReason, PresenceEvent, Registry};

use super::State;

/// Changes waiting for the command thread. Beyond this (Redis slower than
/// the connect rate for long), changes are dropped and the whole state is
/// registered again once the queue drains.
pub(super) const OP_QUEUE: usize = 1 << 18;

/// Events from Redis waiting for loop 0 to stream them; beyond, dropped.
const MAX_EVENTS: usize = 1 << 20;

/// A change for the command thread to settle in Redis.
#[derive(Debug)]
pub(super) enum Op {
    Claim {
        id: Arc<str>,
        conn: ConnId,
        at_ms: u64,
    },
    Release {
        id: Arc<str>,
        conn: ConnId,
        reason: OfflineReason,
        at_ms: u64,
    },
}

/// The ids of this node, and the cluster's view of presence.
pub struct ClusterDirectory {
    inner: Mutex<Inner>,
    ops: SyncSender<Op>,
    state: Arc<State>,
    watched: AtomicBool,
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    /// When each bound connection took its id (Unix ms): settles who keeps
    /// an id two nodes held while Redis was away.
    bound_at: HashMap<ConnId, u64>,
    events: Vec<NodeEvent>,
}

impl ClusterDirectory {
    pub(super) fn new(state: Arc<State>) -> (ClusterDirectory, Receiver<Op>) {
        let (ops, rx) = sync_channel(OP_QUEUE);
        let dir = ClusterDirectory {
            inner: Mutex::default(),
            ops,
            state,
            watched: AtomicBool::new(false),
        };
        (dir, rx)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change under the lock is one insert or remove: a panic
        // elsewhere leaves it consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, op: Op) {
        match self.ops.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.state.resync.store(true, Ordering::Release),
            // The command thread has stopped: the server is exiting.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Whether this node records its own events (the cluster is down).
    fn local_events(&self) -> bool {
        self.watched.load(Ordering::Relaxed) && !self.state.up.load(Ordering::Acquire)
    }

    /// Whether someone on this node streams `/events`.
    pub(super) fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// An event from Redis (any node's, this one's included).
    pub(super) fn record(&self, node: Arc<str>, event: PresenceEvent) {
        if self.watched.load(Ordering::Relaxed) {
            let mut inner = self.inner();
            // Loop 0 drains it every turn; a flood published into Redis
            // must still not grow it without bound.
            if inner.events.len() < MAX_EVENTS {
                inner.events.push(NodeEvent {
                    node: Some(node),
                    event,
                });
            }
        }
    }

    /// Every id held here, with its connection and when it was bound, in
    /// id order from `after`, at most `limit`.
    pub(super) fn held(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, ConnId, u64)> {
        let inner = self.inner();
        inner
            .registry
            .page(after, limit)
            .map(|(id, conn)| (id.clone(), conn, inner.bound_at.get(&conn).copied().unwrap_or(0)))
            .collect()
    }
}

impl Directory for ClusterDirectory {
    fn bind(&self, id: &Arc<str>, conn: ConnId, mode: DuplicateId, at_ms: u64) -> Bind {
        let local_events = self.local_events();
        let mut inner = self.inner();
        let bind = inner.registry.bind(id, conn, mode);
        match bind {
            Bind::Rejected => return bind,
            Bind::Replaced(old) => {
                inner.bound_at.remove(&old);
                if local_events {
                    let event = PresenceEvent::Offline {
                        id: id.clone(),
                        reason: OfflineReason::Replaced,
                        at_ms,
                    };
                    inner.events.push(event.into());
                }
            }
            Bind::Bound => {}
        }
        inner.bound_at.insert(conn, at_ms);
        if local_events {
            inner
                .events
                .push(PresenceEvent::Online { id: id.clone(), at_ms }.into());
        }
        // Queued under the lock (never blocks), so Redis hears the changes
        // of an id in the order they were decided here.
        self.queue(Op::Claim {
            id: id.clone(),
            conn,
            at_ms,
        });
        bind
    }

    fn unbind(&self, id: &Arc<str>, conn: ConnId, reason: OfflineReason, at_ms: u64) -> bool {
        let local_events = self.local_events();
        let mut inner = self.inner();
        if !inner.registry.unbind(id, conn) {
            return false;
        }
        inner.bound_at.remove(&conn);
        if local_events {
            let event = PresenceEvent::Offline {
                id: id.clone(),
                reason,
                at_ms,
            };
            inner.events.push(event.into());
        }
        self.queue(Op::Release {
            id: id.clone(),
            conn,
            reason,
            at_ms,
        });
        true
    }

    fn lookup(&self, id: &str) -> Option<ConnId> {
        self.inner().registry.get(id)
    }

    fn page(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, ConnId)> {
        self.inner()
            .registry
            .page(after, limit)
            .map(|(id, conn)| (id.clone(), conn))
            .collect()
    }

    fn len(&self) -> usize {
        self.inner().registry.len()
    }

    fn watch(&self, on: bool) {
        if self.watched.swap(on, Ordering::Relaxed) && !on {
            self.inner().events = Vec::new();
        }
    }

    fn take_events(&self, into: &mut Vec<NodeEvent>) {
        if self.watched.load(Ordering::Relaxed) {
            into.append(&mut self.inner().events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local decisions are immediate and each change is queued for Redis;
    /// while the cluster is down, events are this node's own.
    #[test]
    fn binds_decide_here_and_queue_for_redis() {
        let state = Arc::new(State::default());
        let (dir, ops) = ClusterDirectory::new(state.clone());
        dir.watch(true);
        let id: Arc<str> = "a".into();
        let (c1, c2) = (ConnId::from_raw(1), ConnId::from_raw(2));
        assert_eq!(dir.bind(&id, c1, DuplicateId::Replace, 10), Bind::Bound);
        assert_eq!(dir.bind(&id, c2, DuplicateId::Replace, 20), Bind::Replaced(c1));
        assert!(!dir.unbind(&id, c1, OfflineReason::Closed, 30), "a late unbind");
        assert_eq!(dir.held(None, 10), vec![(id.clone(), c2, 20)]);
        assert!(dir.unbind(&id, c2, OfflineReason::Kicked, 40));
        let queued: Vec<Op> = ops.try_iter().collect();
        assert!(matches!(
            queued.as_slice(),
            [
                Op::Claim { at_ms: 10, .. },
                Op::Claim { at_ms: 20, .. },
                Op::Release {
                    reason: OfflineReason::Kicked,
                    ..
                }
            ]
        ));
        let mut events = Vec::new();
        dir.take_events(&mut events);
        assert_eq!(events.len(), 4, "online, replaced, online, kicked: {events:?}");
        assert!(events.iter().all(|e| e.node.is_none()));

        // Up: this node's events come back through Redis instead.
        state.up.store(true, Ordering::Release);
        dir.bind(&id, c1, DuplicateId::Replace, 50);
        dir.record(
            "n2".into(),
            PresenceEvent::Online {
                id: "b".into(),
                at_ms: 1,
            },
        );
        dir.take_events(&mut events);
        assert_eq!(events.len(), 5);
        assert_eq!(events[4].node.as_deref(), Some("n2"));
    }
}
