//! Client id ↔ connection, and the presence events its changes produce.
//!
//! Entries are keyed to a connection *instance* (its token, which carries a
//! generation), not just to a slab slot or an id: when a reconnect replaces an
//! old connection, the old connection's later cleanup finds the id bound to
//! another token and leaves it alone.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// What happens when a second connection claims an id already online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DuplicateId {
    /// The newer connection keeps the id; the older is closed with 4001.
    #[default]
    Replace,
    /// The newer connection is closed with 4002.
    Reject,
}

/// Why a client went offline (the `reason` of presence events and the label
/// of eviction metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OfflineReason {
    /// The client closed the connection with a close frame.
    Closed,
    /// A protocol or policy violation, a network error, or the TCP connection
    /// ending without a close frame.
    Error,
    HeartbeatTimeout,
    /// A newer connection took the id.
    Replaced,
    /// Closed through the admin API or the library handle.
    Kicked,
    /// Too many unsent bytes.
    Backpressure,
    /// The server is shutting down.
    Shutdown,
}

impl OfflineReason {
    pub const ALL: [OfflineReason; 7] = [
        OfflineReason::Closed,
        OfflineReason::Error,
        OfflineReason::HeartbeatTimeout,
        OfflineReason::Replaced,
        OfflineReason::Kicked,
        OfflineReason::Backpressure,
        OfflineReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::Closed => "closed",
            OfflineReason::Error => "error",
            OfflineReason::HeartbeatTimeout => "heartbeat_timeout",
            OfflineReason::Replaced => "replaced",
            OfflineReason::Kicked => "kicked",
            OfflineReason::Backpressure => "backpressure",
            OfflineReason::Shutdown => "shutdown",
        }
    }
}

/// A presence change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    Online {
        id: Arc<str>,
        at_ms: u64,
    },
    Offline {
        id: Arc<str>,
        reason: OfflineReason,
        at_ms: u64,
    },
}

/// Result of [`Registry::bind`].
#[derive(Debug, PartialEq, Eq)]
pub enum Bind {
    /// The id is now this connection's.
    Bound,
    /// The id is now this connection's; the connection with this token lost
    /// it and must be closed with 4001.
    Replaced(u64),
    /// Another connection holds the id and keeps it.
    Rejected,
}

/// Ids of online clients, ordered so that listings can page by id.
#[derive(Default)]
pub struct Registry {
    /// Keys are shared with the connections holding them (one allocation
    /// per id, not two).
    by_id: BTreeMap<Arc<str>, u64>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The token of the connection holding `id`.
    pub fn get(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Binds `id` to the connection `token`.
    pub fn bind(&mut self, id: &Arc<str>, token: u64, mode: DuplicateId) -> Bind {
        match self.by_id.get_mut(&**id) {
            None => {
                self.by_id.insert(id.clone(), token);
                Bind::Bound
            }
            Some(t) if *t == token => Bind::Bound,
            Some(t) => match mode {
                DuplicateId::Replace => Bind::Replaced(std::mem::replace(t, token)),
                DuplicateId::Reject => Bind::Rejected,
            },
        }
    }

    /// Removes `id` if, and only if, it is still bound to `token`.
    pub fn unbind(&mut self, id: &str, token: u64) -> bool {
        if self.by_id.get(id) == Some(&token) {
            self.by_id.remove(id);
            true
        } else {
            false
        }
    }

    /// Up to `limit` entries with ids after `after`, in id order.
    pub fn page<'a>(&'a self, after: Option<&'a str>, limit: usize) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.by_id
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (&**k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_newer_and_old_cleanup_is_harmless() {
        let mut r = Registry::new();
        assert_eq!(r.bind(&"dev".into(), 1, DuplicateId::Replace), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), 1, DuplicateId::Replace), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), 2, DuplicateId::Replace), Bind::Replaced(1));
        // The old connection's cleanup runs later: it must not unbind the new one.
        assert!(!r.unbind("dev", 1));
        assert_eq!(r.get("dev"), Some(2));
        assert!(r.unbind("dev", 2));
        assert!(r.is_empty());
    }

    #[test]
    fn reject_keeps_the_older() {
        let mut r = Registry::new();
        assert_eq!(r.bind(&"dev".into(), 1, DuplicateId::Reject), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), 2, DuplicateId::Reject), Bind::Rejected);
        assert_eq!(r.get("dev"), Some(1));
        assert!(!r.unbind("dev", 2));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn paging_in_id_order() {
        let mut r = Registry::new();
        for (i, id) in ["c", "a", "e", "b", "d"].iter().enumerate() {
            r.bind(&(*id).into(), i as u64, DuplicateId::Replace);
        }
        let ids = |after, limit| r.page(after, limit).map(|(k, _)| k.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(None, 2), ["a", "b"]);
        assert_eq!(ids(Some("b"), 2), ["c", "d"]);
        assert_eq!(ids(Some("d"), 10), ["e"]);
        assert_eq!(ids(Some("bb"), 1), ["c"]);
        assert!(ids(Some("e"), 10).is_empty());
    }
}
