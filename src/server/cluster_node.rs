//! This server as the cluster's threads see it ([`LocalNode`]): deliveries
//! from other nodes go into the loops' queues without waiting; questions
//! about clients are asked of the loops like the admin API asks them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::backend::loop_client_infos;
use super::links::Shared;
use crate::admin::{ClientInfo, Unavailable};
use crate::cluster::{Delivery, LocalNode};
use crate::handler::Command;

/// Weak: the cluster's threads must not keep a stopped server alive.
pub(super) struct ServerNode {
    pub shared: Weak<Shared>,
}

impl ServerNode {
    /// Queues `c` for loop `to` without waiting; false when its queue is
    /// full (delivery between nodes is at most once) or it has stopped.
    fn queue(shared: &Shared, to: usize, c: Command) -> bool {
        let Some(link) = shared.loops.get(to) else {
            return false;
        };
        if link.commands.try_send(c).is_err() {
            return false;
        }
        let _ = link.waker.wake();
        true
    }
}

impl LocalNode for ServerNode {
    fn deliver(&self, d: Delivery) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let owner = |id: &str| shared.directory.lookup(id);
        match d {
            Delivery::Push(id, msg) => match owner(&id) {
                Some(conn) => Self::queue(&shared, conn.loop_index(), Command::SendConn(conn, msg)),
                None => false,
            },
            Delivery::Kick(id, reason) => match owner(&id) {
                Some(conn) => Self::queue(&shared, conn.loop_index(), Command::Kick(id, reason)),
                None => false,
            },
            // Only a connection that still holds the id: a connection
            // number alone may name another connection of a later process.
            Delivery::Replaced(id, conn) => {
                owner(&id) != Some(conn) || Self::queue(&shared, conn.loop_index(), Command::Replaced(conn))
            }
            Delivery::Rejected(id, conn) => {
                owner(&id) != Some(conn) || Self::queue(&shared, conn.loop_index(), Command::Rejected(conn))
            }
            Delivery::Broadcast(msg) => {
                let mut frame = Vec::new();
                msg.encode(&mut frame);
                let frame: Arc<[u8]> = frame.into();
                let mut all = true;
                for l in 0..shared.loops.len() {
                    all &= Self::queue(&shared, l, Command::LocalBroadcast(frame.clone()));
                }
                all
            }
        }
    }

    fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable> {
        let shared = self.shared.upgrade().ok_or(Unavailable)?;
        let Some(conn) = shared.directory.lookup(id) else {
            return Ok(None);
        };
        Ok(loop_client_infos(&shared, &[(id.into(), conn)], None)?.pop())
    }

    fn page(&self, after: Option<&str>, limit: usize) -> Result<(usize, Vec<ClientInfo>), Unavailable> {
        let shared = self.shared.upgrade().ok_or(Unavailable)?;
        let total = shared.directory.len();
        let wanted = shared.directory.page(after, limit);
        Ok((total, loop_client_infos(&shared, &wanted, None)?))
    }

    fn counts(&self) -> (usize, usize) {
        match self.shared.upgrade() {
            Some(shared) => (shared.directory.len(), shared.connections_open()),
            None => (0, 0),
        }
    }

    fn events_arrived(&self) {
        if let Some(shared) = self.shared.upgrade()
            && shared.subscribers.load(Ordering::Relaxed) > 0
        {
            let _ = shared.loops[0].waker.wake();
        }
    }
}
