//! What the embedding program sees: the [`Handler`] it implements, and the
//! commands it (or the admin API, or a [`Handle`](crate::Handle)) can give.

use std::fmt;
use std::net::SocketAddr;

use crate::presence::OfflineReason;
use crate::protocol::frame::{self, OpCode};

pub use crate::presence::ConnId;

/// Where a connection's peer address comes from: its socket, looked up only
/// when shown (a log line, the admin API), since keeping the address would
/// cost every connection 32 bytes. A connection without a socket (the
/// simulation, the fuzz target) has none.
pub trait PeerAddr {
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl PeerAddr for () {
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

impl PeerAddr for mio::net::TcpStream {
    fn peer_addr(&self) -> Option<SocketAddr> {
        mio::net::TcpStream::peer_addr(self).ok()
    }
}

/// Shows a peer address in log lines, looked up when written.
pub(crate) struct Peer<'a>(pub &'a dyn PeerAddr);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.peer_addr() {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("(peer gone)"),
        }
    }
}

/// A connection, as handed to [`Handler`] callbacks.
#[derive(Clone, Copy)]
pub struct ConnInfo<'a> {
    pub conn: ConnId,
    /// The client id, once the connection has one.
    pub id: Option<&'a str>,
    pub(crate) peer: &'a dyn PeerAddr,
}

impl fmt::Debug for ConnInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("conn", &self.conn)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ConnInfo<'_> {
    /// The peer's address (looked up when asked: connections do not store
    /// it). `None` once the peer is gone.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.peer_addr()
    }
}

/// An application message from a client (heartbeats are not application
/// messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppMessage<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A message to send to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

impl AppMessage<'_> {
    /// Appends it as one unmasked server frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            AppMessage::Text(t) => frame::encode_frame(out, OpCode::Text, t.as_bytes()),
            AppMessage::Binary(b) => frame::encode_frame(out, OpCode::Binary, b),
        }
    }
}

impl Outgoing {
    /// Borrowed as the message it is.
    pub fn as_message(&self) -> AppMessage<'_> {
        match self {
            Outgoing::Text(t) => AppMessage::Text(t),
            Outgoing::Binary(b) => AppMessage::Binary(b),
        }
    }

    /// Appends it as one unmasked server frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.as_message().encode(out);
    }
}

impl From<&str> for Outgoing {
    fn from(s: &str) -> Self {
        Outgoing::Text(s.to_string())
    }
}

impl From<String> for Outgoing {
    fn from(s: String) -> Self {
        Outgoing::Text(s)
    }
}

impl From<Vec<u8>> for Outgoing {
    fn from(b: Vec<u8>) -> Self {
        Outgoing::Binary(b)
    }
}

/// Something to do on a loop, from a handler, a handle, the admin API or
/// another loop.
#[derive(Debug)]
pub(crate) enum Command {
    SendConn(ConnId, Outgoing),
    SendId(Box<str>, Outgoing),
    /// To every open connection of every loop.
    Broadcast(Outgoing),
    /// An encoded frame for every open connection of this loop (one part of
    /// a broadcast, the bytes shared by all loops).
    LocalBroadcast(std::sync::Arc<[u8]>),
    Kick(Box<str>, String),
    Shutdown,
    /// A newer connection took this one's id.
    Replaced(ConnId),
    /// Another node holds the id this connection claimed, and keeps it
    /// (`--duplicate-id reject`).
    Rejected(ConnId),
}

/// Lets a [`Handler`] act on the server from inside a callback. Commands run
/// right after the callback returns, in order — on the loop holding the
/// connection they name; a message for one client waits behind a broadcast
/// its loop is still sending.
#[derive(Debug, Default)]
pub struct Control {
    pub(crate) commands: Vec<Command>,
}

impl Control {
    /// Sends to one connection (e.g. a reply).
    pub fn send(&mut self, to: ConnId, msg: impl Into<Outgoing>) {
        self.commands.push(Command::SendConn(to, msg.into()));
    }

    /// Sends to the connection holding client id `id`, if it is online.
    pub fn send_to_id(&mut self, id: &str, msg: impl Into<Outgoing>) {
        self.commands.push(Command::SendId(id.into(), msg.into()));
    }

    /// Sends to every open connection.
    pub fn broadcast(&mut self, msg: impl Into<Outgoing>) {
        self.commands.push(Command::Broadcast(msg.into()));
    }

    /// Closes the connection holding `id` with 4003 and `reason`.
    pub fn kick(&mut self, id: &str, reason: &str) {
        self.commands.push(Command::Kick(id.into(), reason.to_string()));
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&mut self) {
        self.commands.push(Command::Shutdown);
    }
}

/// Callbacks from the event loops, each on the thread of the loop holding
/// the connection (with [`Server::with_handler`](crate::Server::with_handler)
/// and several loops, one handler taken in turn). Every method has a default
/// that does nothing, so a handler implements only what it needs. Callbacks
/// must not block: the loop serves all its connections.
pub trait Handler: Send + 'static {
    /// A connection completed its upgrade (`id` is set if it named itself
    /// in the query string).
    fn on_open(&mut self, _conn: &ConnInfo<'_>, _ctl: &mut Control) {}
    /// The connection's client id was bound (`conn.id` is set): at the
    /// upgrade (right after `on_open`: `?client_id=`, a JWT's `sub`, the auth
    /// webhook's id) or by its first heartbeat that names one. Called at most
    /// once per connection. In a cluster with `--duplicate-id reject`,
    /// another node may still turn out to hold the id: `on_close` then
    /// follows with `Error`.
    fn on_bind(&mut self, _conn: &ConnInfo<'_>, _ctl: &mut Control) {}
    /// A client heartbeat arrived (after any id in it was bound).
    fn on_heartbeat(&mut self, _conn: &ConnInfo<'_>, _ctl: &mut Control) {}
    /// An application message arrived.
    fn on_message(&mut self, _conn: &ConnInfo<'_>, _msg: AppMessage<'_>, _ctl: &mut Control) {}
    /// An open connection ended (or began closing) for `reason`. Called
    /// once per connection that was opened.
    fn on_close(&mut self, _conn: &ConnInfo<'_>, _reason: OfflineReason, _ctl: &mut Control) {}
}

/// The handler of the `wsbeat` binary: application messages are dropped
/// (and counted), or echoed with `--echo`.
#[derive(Debug, Default)]
pub struct NoopHandler;

impl Handler for NoopHandler {}
