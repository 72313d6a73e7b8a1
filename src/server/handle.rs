//! A cloneable, `Send` handle that reaches the event loop from other
//! threads: commands go into a bounded queue and a `mio::Waker` wakes the
//! loop to run them.

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use mio::Waker;

use crate::handler::{Command, ConnId, Outgoing};

/// How many commands may wait for the loop before senders block. Bounds the
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
/// Commands are queued (at most 65,536 waiting; beyond that a call blocks
/// until the loop catches up) and run on the loop in order. Delivery is
/// fire-and-forget: a push to an id that is offline when the loop runs it
/// is dropped. Do not call a handle from inside a [`Handler`](crate::Handler)
/// callback — use its [`Control`](crate::Control) — or the loop may block
/// on its own queue.
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: SyncSender<Command>,
    pub(crate) waker: Arc<Waker>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    fn submit(&self, c: Command) -> Result<(), ServerGone> {
        self.tx.send(c).map_err(|_| ServerGone)?;
        self.waker.wake().map_err(|_| ServerGone)
    }

    /// Sends a message to the client with id `id`.
    pub fn send(&self, id: &str, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        self.submit(Command::SendId(id.into(), msg.into()))
    }

    /// Sends a message to one connection.
    pub fn send_conn(&self, conn: ConnId, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        self.submit(Command::SendConn(conn, msg.into()))
    }

    /// Sends a message to every open connection.
    pub fn broadcast(&self, msg: impl Into<Outgoing>) -> Result<(), ServerGone> {
        self.submit(Command::Broadcast(msg.into()))
    }

    /// Closes the connection of client `id` with 4003 and `reason`.
    pub fn kick(&self, id: &str, reason: &str) -> Result<(), ServerGone> {
        self.submit(Command::Kick(id.into(), reason.to_string()))
    }

    /// Starts a graceful shutdown: stop accepting, close every client with
    /// 1001, wait up to the shutdown timeout, then return from `run`. A
    /// second call stops at once.
    pub fn shutdown(&self) -> Result<(), ServerGone> {
        self.submit(Command::Shutdown)
    }
}
