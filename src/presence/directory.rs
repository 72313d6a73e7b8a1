//! "Who holds client id X, and how do I reach it": the one interface every
//! event loop binds, unbinds, looks up and lists ids through, whatever
//! holds them. Today that is [`SharedRegistry`], one in-process registry
//! for all the loops of a process; a cluster plugs in another form of it.
//!
//! Reaching a holder needs no more than its [`ConnId`]: the id names the
//! loop that owns the connection, and the loops route a push, a kick or a
//! replacement there (`crate::server`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::registry::{Bind, Registry};
use super::types::{ConnId, DuplicateId, NodeEvent, OfflineReason, PresenceEvent};

/// Every change also becomes a [`PresenceEvent`], recorded in the order the
/// changes were decided (across all loops) while someone [`watch`]es, for
/// [`take_events`] (the admin API's `/events`).
///
/// [`watch`]: Directory::watch
/// [`take_events`]: Directory::take_events
pub trait Directory: Send + Sync {
    /// Binds `id` to `conn` at Unix ms `at_ms`. Decided atomically: of two
    /// connections binding the same id at once, on any loops, exactly one
    /// keeps it. A replacement records the older's offline event first.
    fn bind(&self, id: &Arc<str>, conn: ConnId, mode: DuplicateId, at_ms: u64) -> Bind;
    /// Removes `id` if, and only if, `conn` still holds it (a late unbind
    /// never erases a newer binding), recording why.
    fn unbind(&self, id: &Arc<str>, conn: ConnId, reason: OfflineReason, at_ms: u64) -> bool;
    /// The connection holding `id`.
    fn lookup(&self, id: &str) -> Option<ConnId>;
    /// Up to `limit` ids after `after`, in id order, with their holders.
    fn page(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, ConnId)>;
    /// Ids bound.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts (or stops) recording events; stopping drops what is recorded.
    fn watch(&self, on: bool);
    /// Moves the recorded events, oldest first, to `into`.
    fn take_events(&self, into: &mut Vec<NodeEvent>);
}

/// The in-process form: one [`Registry`] behind a mutex, shared by every
/// loop. The lock is taken to bind (a connection's first id), unbind,
/// look up (a push or kick by id) and list — never for a frame, a
/// heartbeat that repeats a bound id, or a timer.
#[derive(Default)]
pub struct SharedRegistry {
    inner: Mutex<Inner>,
    watched: AtomicBool,
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    /// Events recorded while watched, oldest first.
    events: Vec<NodeEvent>,
}

impl SharedRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; if something ever did, the map
        // itself is still consistent (every change is one insert or remove).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether someone watches (`/events`).
    pub fn watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// [`Directory::bind`], recording its events only if `record`, and
    /// running `then` with the decision before letting go of the lock (so
    /// what `then` does happens in the order the decisions were taken).
    pub fn bind_then(
        &self,
        id: &Arc<str>,
        conn: ConnId,
        mode: DuplicateId,
        at_ms: u64,
        record: bool,
        then: impl FnOnce(&Bind),
    ) -> Bind {
        let mut inner = self.inner();
        let bind = inner.registry.bind(id, conn, mode);
        if record && self.watched() {
            if let Bind::Replaced(_) = bind {
                inner.events.push(
                    PresenceEvent::Offline {
                        id: id.clone(),
                        reason: OfflineReason::Replaced,
                        at_ms,
                    }
                    .into(),
                );
            }
            if bind != Bind::Rejected {
                inner
                    .events
                    .push(PresenceEvent::Online { id: id.clone(), at_ms }.into());
            }
        }
        then(&bind);
        bind
    }

    /// [`Directory::unbind`], recording its event only if `record`, and
    /// running `then`, if it unbound, before letting go of the lock.
    pub fn unbind_then(
        &self,
        id: &Arc<str>,
        conn: ConnId,
        reason: OfflineReason,
        at_ms: u64,
        record: bool,
        then: impl FnOnce(),
    ) -> bool {
        let mut inner = self.inner();
        let unbound = inner.registry.unbind(id, conn);
        if unbound && record && self.watched() {
            inner.events.push(
                PresenceEvent::Offline {
                    id: id.clone(),
                    reason,
                    at_ms,
                }
                .into(),
            );
        }
        if unbound {
            then();
        }
        unbound
    }

    /// Records an event from elsewhere (another node's), while watched and
    /// while fewer than `MAX_EVENTS` wait: loop 0 drains them every turn,
    /// and a flood must still not grow them without bound.
    pub fn record(&self, event: NodeEvent) {
        if self.watched() {
            let mut inner = self.inner();
            if inner.events.len() < MAX_EVENTS {
                inner.events.push(event);
            }
        }
    }
}

/// Events waiting for loop 0 to stream them; beyond, dropped.
pub const MAX_EVENTS: usize = 1 << 20;

impl Directory for SharedRegistry {
    fn bind(&self, id: &Arc<str>, conn: ConnId, mode: DuplicateId, at_ms: u64) -> Bind {
        self.bind_then(id, conn, mode, at_ms, true, |_| {})
    }

    fn unbind(&self, id: &Arc<str>, conn: ConnId, reason: OfflineReason, at_ms: u64) -> bool {
        self.unbind_then(id, conn, reason, at_ms, true, || {})
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
        if self.watched() {
            into.append(&mut self.inner().events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events come out in the order the changes were decided, and only while
    /// watched.
    #[test]
    fn events_are_recorded_in_order_while_watched() {
        let dir = SharedRegistry::new();
        let id: Arc<str> = "a".into();
        dir.bind(&id, ConnId::from_raw(1), DuplicateId::Replace, 1);
        dir.watch(true);
        dir.bind(&id, ConnId::from_raw(2), DuplicateId::Replace, 2);
        assert_eq!(
            dir.bind(&id, ConnId::from_raw(3), DuplicateId::Reject, 3),
            Bind::Rejected
        );
        assert!(
            !dir.unbind(&id, ConnId::from_raw(1), OfflineReason::Closed, 4),
            "a late unbind"
        );
        assert!(dir.unbind(&id, ConnId::from_raw(2), OfflineReason::Kicked, 5));
        let mut got = Vec::new();
        dir.take_events(&mut got);
        let mut got: Vec<PresenceEvent> = got.into_iter().map(|e| e.event).collect();
        let offline = |reason, at_ms| PresenceEvent::Offline {
            id: id.clone(),
            reason,
            at_ms,
        };
        assert_eq!(
            got,
            [
                offline(OfflineReason::Replaced, 2),
                PresenceEvent::Online {
                    id: id.clone(),
                    at_ms: 2
                },
                offline(OfflineReason::Kicked, 5),
            ]
        );
        dir.watch(false);
        dir.bind(&id, ConnId::from_raw(4), DuplicateId::Replace, 6);
        let mut more = Vec::new();
        dir.take_events(&mut more);
        got.extend(more.into_iter().map(|e| e.event));
        assert_eq!(got.len(), 3, "nothing recorded while unwatched");
    }

    /// Many threads bind the same ids at once: every id ends with exactly
    /// one holder, and every replacement names the holder it displaced.
    #[test]
    fn concurrent_binds_leave_one_holder() {
        for mode in [DuplicateId::Replace, DuplicateId::Reject] {
            let dir = Arc::new(SharedRegistry::new());
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let dir = dir.clone();
                    std::thread::spawn(move || {
                        let mut kept = Vec::new();
                        for i in 0..1000u64 {
                            let id: Arc<str> = format!("id-{i}").into();
                            let conn = ConnId::from_raw(t << 32 | i);
                            match dir.bind(&id, conn, mode, 0) {
                                Bind::Bound | Bind::Replaced(_) => kept.push((id, conn)),
                                Bind::Rejected => {}
                            }
                        }
                        kept
                    })
                })
                .collect();
            let kept: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
            assert_eq!(dir.len(), 1000);
            let holders: usize = kept.iter().filter(|(id, c)| dir.lookup(id) == Some(*c)).count();
            assert_eq!(holders, 1000, "{mode:?}");
            if mode == DuplicateId::Reject {
                assert_eq!(kept.len(), 1000, "reject: only the first binder of each id kept it");
            }
            for (id, c) in &kept {
                dir.unbind(id, *c, OfflineReason::Closed, 0);
            }
            assert!(dir.is_empty());
        }
    }
}
