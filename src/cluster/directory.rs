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
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::presence::{Bind, ConnId, Directory, DuplicateId, NodeEvent, OfflineReason, PresenceEvent, SharedRegistry};

use super::State;

/// Changes waiting for the command thread. Beyond this (Redis slower than
/// the connect rate for long), changes are dropped and the whole state is
/// registered again once the queue drains.
pub(super) const OP_QUEUE: usize = 1 << 18;

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
    /// This node's ids (decided here for all its loops) and the events
    /// waiting for `/events`.
    local: SharedRegistry,
    /// When each bound connection took its id (Unix ms): settles who keeps
    /// an id two nodes held while Redis was away. Changed only while
    /// `local` decides (its lock is taken first).
    bound_at: Mutex<HashMap<ConnId, u64>>,
    ops: SyncSender<Op>,
    state: Arc<State>,
}

impl ClusterDirectory {
    pub(super) fn new(state: Arc<State>) -> (ClusterDirectory, Receiver<Op>) {
        let (ops, rx) = sync_channel(OP_QUEUE);
        let dir = ClusterDirectory {
            local: SharedRegistry::new(),
            bound_at: Mutex::default(),
            ops,
            state,
        };
        (dir, rx)
    }

    fn bound_at(&self) -> MutexGuard<'_, HashMap<ConnId, u64>> {
        // One insert or remove at a time: a panic elsewhere leaves it whole.
        self.bound_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, op: Op) {
        match self.ops.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.state.resync.store(true, Ordering::Release),
            // The command thread has stopped: the server is exiting.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Whether this node records its own events (the cluster is down; while
    /// it is up they come back through Redis).
    fn local_events(&self) -> bool {
        !self.state.up.load(Ordering::Acquire)
    }

    /// Whether someone on this node streams `/events`.
    pub(super) fn is_watched(&self) -> bool {
        self.local.watched()
    }

    /// An event from Redis (any node's, this one's included).
    pub(super) fn record(&self, node: Arc<str>, event: PresenceEvent) {
        self.local.record(NodeEvent {
            node: Some(node),
            event,
        });
    }

    /// Every id held here, with its connection and when it was bound, in
    /// id order from `after`, at most `limit`.
    pub(super) fn held(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, ConnId, u64)> {
        let page = self.local.page(after, limit);
        let bound_at = self.bound_at();
        page.into_iter()
            .map(|(id, conn)| {
                let at = bound_at.get(&conn).copied().unwrap_or(0);
                (id, conn, at)
            })
            .collect()
    }
}

impl Directory for ClusterDirectory {
    fn bind(&self, id: &Arc<str>, conn: ConnId, mode: DuplicateId, at_ms: u64) -> Bind {
        self.local
            .bind_then(id, conn, mode, at_ms, self.local_events(), |bind| {
                if *bind == Bind::Rejected {
                    return;
                }
                let mut bound_at = self.bound_at();
                if let Bind::Replaced(old) = bind {
                    bound_at.remove(old);
                }
                bound_at.insert(conn, at_ms);
                drop(bound_at);
                // Queued under the registry's lock (never blocks), so Redis
                // hears the changes of an id in the order they were decided.
                self.queue(Op::Claim {
                    id: id.clone(),
                    conn,
                    at_ms,
                });
            })
    }

    fn unbind(&self, id: &Arc<str>, conn: ConnId, reason: OfflineReason, at_ms: u64) -> bool {
        self.local
            .unbind_then(id, conn, reason, at_ms, self.local_events(), || {
                self.bound_at().remove(&conn);
                self.queue(Op::Release {
                    id: id.clone(),
                    conn,
                    reason,
                    at_ms,
                });
            })
    }

    fn lookup(&self, id: &str) -> Option<ConnId> {
        self.local.lookup(id)
    }

    fn page(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, ConnId)> {
        self.local.page(after, limit)
    }

    fn len(&self) -> usize {
        self.local.len()
    }

    fn watch(&self, on: bool) {
        self.local.watch(on);
    }

    fn take_events(&self, into: &mut Vec<NodeEvent>) {
        self.local.take_events(into);
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
