//! A cloneable, `Send` handle that reaches the event loops from other
//! threads: commands go into the bounded queue of the loop that holds the
//! connection concerned, and its `mio::Waker` wakes it to run them.

use std::fmt;
use std::sync::Arc;

use super::links::Shared;
use crate::handler::{Command, ConnId, Outgoing};

/// How many commands may wait for a loop before senders block. Bounds the
/// memory a busy producer can pin while the loop catches up.
pub(crate) const QUEUE_CAPACITY: usize = 65_536;

/// The server has stopped; nothing can reach it any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerGone;

impl fmt::Display for ServerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server has stopped")
    }
}

impl std::error::Error for ServerGone {}

/// Talks to a running [`Server`](crate::Server) from any thread.
///
/// Commands are queued (at most 65,536 waiting per loop; beyond that a call
/// blocks until the loop catches up) and run on the loop that holds the
/// client, in order. Delivery is fire-and-forget: a push to an id that is
/// offline when the loop runs it is dropped. Do not call a handle from
/// inside a [`Handler`](crate::Handler) callback — use its
/// [`Control`](crate::Control) — or the loop may block on its own queue.
#[derive(Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    fn submit(&self, to: usize, c: Command) -> Result<(), ServerGone> {
        let link = self.shared.loops.get(to).ok_or(ServerGone)?;
        link.commands.send(c).map_err(|_| ServerGone)?;
        link.waker.wake().map_err(|_| ServerGone)
    }

    /// The loop to run a command about client `id` on: the one holding it,
    /// or loop 0 (which looks again when it runs the command).
    fn owner(&self, id: &str) -> usize {
        self.shared.directory.lookup(id).map_or(0, ConnId::loop_index)
    }

    /// Sends a message to the client with id `id`.
    pub fn send(&self, id: &str, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        self.submit(self.owner(id), Command::SendId(id.into(), msg.into()))
    }

    /// Sends a message to one connection.
    pub fn send_conn(&self, conn: ConnId, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        self.submit(conn.loop_index(), Command::SendConn(conn, msg.into()))
    }

    /// Sends a message to every open connection, on every loop. Encoded
    /// once; each loop gets it in its queue, after what this handle sent it
    /// before.
    pub fn broadcast(&self, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        let mut frame = Vec::new();
        msg.into().encode(&mut frame);
        let frame: std::sync::Arc<[u8]> = frame.into();
        for l in 0..self.shared.loops.len() {
            self.submit(l, Command::LocalBroadcast(frame.clone()))?;
        }
        Ok(())
    }

    /// Closes the connection of client `id` with 4003 and `reason`.
    pub fn kick(&self, id: &str, reason: &str) -> Result<(), ServerGone> {
        self.submit(self.owner(id), Command::Kick(id.into(), reason.to_string()))
    }

    /// Starts a graceful shutdown: stop accepting, close every client with
    /// 1001, wait up to the shutdown timeout, then return from `run`. A
    /// second call stops at once.
    pub fn shutdown(&self) -> Result<(), ServerGone> {
        self.submit(0, Command::Shutdown)
    }

    /// Reads the TLS certificate and key files again (what SIGHUP does for
    /// the binary): connections accepted from now on use them; on error the
    /// pair in use stays. `Ok(false)` when the server has no TLS.
    pub fn reload_tls(&self) -> Result<bool, crate::tls::LoadError> {
        self.shared.reload_tls()
    }
}
