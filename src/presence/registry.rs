//! The id map behind [`SharedRegistry`](super::SharedRegistry): client id ↔
//! connection, for every loop of the process.
//!
//! Entries are keyed to a connection *instance* (its [`ConnId`], which
//! carries a generation), not just to a slab slot or an id: when a reconnect
//! replaces an old connection, the old connection's later cleanup finds the
//! id bound to another connection and leaves it alone.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::types::{ConnId, DuplicateId};

/// Result of [`Registry::bind`].
#[derive(Debug, PartialEq, Eq)]
pub enum Bind {
    /// The id is now this connection's.
    Bound,
    /// The id is now this connection's; the connection `ConnId` lost
    /// it and must be closed with 4001.
    Replaced(ConnId),
    /// Another connection holds the id and keeps it.
    Rejected,
}

/// Ids of online clients, ordered so that listings can page by id.
#[derive(Default)]
pub struct Registry {
    /// Keys are shared with the connections holding them (one allocation
    /// per id, not two).
    by_id: BTreeMap<Arc<str>, ConnId>,
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

    /// The connection holding `id`.
    pub fn get(&self, id: &str) -> Option<ConnId> {
        self.by_id.get(id).copied()
    }

    /// Binds `id` to the connection `conn`.
    pub fn bind(&mut self, id: &Arc<str>, conn: ConnId, mode: DuplicateId) -> Bind {
        match self.by_id.get_mut(&**id) {
            None => {
                self.by_id.insert(id.clone(), conn);
                Bind::Bound
            }
            Some(t) if *t == conn => Bind::Bound,
            Some(t) => match mode {
                DuplicateId::Replace => Bind::Replaced(std::mem::replace(t, conn)),
                DuplicateId::Reject => Bind::Rejected,
            },
        }
    }

    /// Removes `id` if, and only if, it is still bound to `conn`.
    pub fn unbind(&mut self, id: &str, conn: ConnId) -> bool {
        if self.by_id.get(id) == Some(&conn) {
            self.by_id.remove(id);
            true
        } else {
            false
        }
    }

    /// Up to `limit` entries with ids after `after`, in id order.
    pub fn page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> impl Iterator<Item = (&'a Arc<str>, ConnId)> + 'a {
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.by_id
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> ConnId {
        ConnId::from_raw(n)
    }

    #[test]
    fn replace_keeps_the_newer_and_old_cleanup_is_harmless() {
        let mut r = Registry::new();
        assert_eq!(r.bind(&"dev".into(), c(1), DuplicateId::Replace), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), c(1), DuplicateId::Replace), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), c(2), DuplicateId::Replace), Bind::Replaced(c(1)));
        // The old connection's cleanup runs later: it must not unbind the new one.
        assert!(!r.unbind("dev", c(1)));
        assert_eq!(r.get("dev"), Some(c(2)));
        assert!(r.unbind("dev", c(2)));
        assert!(r.is_empty());
    }

    #[test]
    fn reject_keeps_the_older() {
        let mut r = Registry::new();
        assert_eq!(r.bind(&"dev".into(), c(1), DuplicateId::Reject), Bind::Bound);
        assert_eq!(r.bind(&"dev".into(), c(2), DuplicateId::Reject), Bind::Rejected);
        assert_eq!(r.get("dev"), Some(c(1)));
        assert!(!r.unbind("dev", c(2)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn paging_in_id_order() {
        let mut r = Registry::new();
        for (i, id) in ["c", "a", "e", "b", "d"].iter().enumerate() {
            r.bind(&(*id).into(), c(i as u64), DuplicateId::Replace);
        }
        let ids = |after, limit| r.page(after, limit).map(|(k, _)| k.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(None, 2), ["a", "b"]);
        assert_eq!(ids(Some("b"), 2), ["c", "d"]);
        assert_eq!(ids(Some("d"), 10), ["e"]);
        assert_eq!(ids(Some("bb"), 1), ["c"]);
        assert!(ids(Some("e"), 10).is_empty());
    }
}
