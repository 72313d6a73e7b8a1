//! One connection: its socket, its phase and the bytes it could not send yet.
//!
//! Memory is the product: an idle upgraded connection is this struct (88
//! bytes with its slab slot), one timer entry, and its id in the registry.
//! Everything else — unsent output, an incomplete upgrade request, a split
//! frame — lives behind pointers that are null while there is none.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::protocol::message::Decoder;
use crate::timer::TimerKey;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a complete upgrade request. The bytes of an incomplete
    /// request are kept in the spill (at most 8 KiB plus one read).
    Handshake,
    /// Upgraded: frames flow both ways.
    Open,
    /// The server sent a close frame (eviction, replacement, policy) and
    /// waits for the client's; frames are still decoded, but only a close
    /// frame matters.
    Closing,
    /// The client's close was answered; the TCP connection is closed as soon
    /// as the answer is flushed.
    CloseAfterFlush,
    /// Failed (protocol error, or a refused handshake): the last bytes are
    /// being flushed, then the write side is shut and input is discarded until
    /// the client closes or the close timeout passes. Draining the input
    /// instead of closing at once keeps the kernel from answering unread bytes
    /// with a reset that could destroy the response in flight.
    Failing { write_shut: bool },
}

/// Buffers a connection needs only now and then.
#[derive(Default)]
pub(crate) struct Spill {
    /// Bytes the socket did not take.
    pub out: Vec<u8>,
    /// How much of `out` is already written.
    pub out_pos: usize,
    /// An upgrade request not complete yet.
    pub handshake: Vec<u8>,
}

/// `S` is the transport: a `TcpStream` in the server, nothing at all in the
/// simulation that sizes a million connections without sockets.
pub(crate) struct Conn<S = TcpStream> {
    pub stream: S,
    /// `generation << 32 | slab index`: distinguishes this connection from
    /// earlier ones in the same slab slot.
    pub token: u64,
    pub phase: Phase,
    /// Whether WRITABLE interest is registered.
    pub want_write: bool,
    /// Upgraded and not yet reported closed (to the registry, the handler
    /// and the metrics): makes leaving happen exactly once.
    pub opened: bool,
    pub decoder: Decoder,
    pub spill: Option<Box<Spill>>,
    /// The connection's one timer: handshake deadline, then the earlier of
    /// the next server heartbeat and the liveness deadline, then the close
    /// deadline. Liveness is re-checked lazily when it fires, so frames only
    /// update `last_seen` and never touch the wheel.
    pub timer: Option<TimerKey>,
    /// Bound client id, shared with the registry, while the connection
    /// holds it.
    pub client_id: Option<Arc<str>>,
    /// Monotonic ms of the last liveness signal.
    pub last_seen: u64,
    /// Monotonic ms at which the next server heartbeat is due.
    pub next_beat: u64,
    /// Monotonic ms of the upgrade (accept time before it).
    pub connected_at: u64,
}

/// The peer address, looked up only when shown (a log line, the admin API):
/// keeping it would cost every connection 32 bytes.
pub(crate) struct Peer<'a>(pub &'a TcpStream);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.peer_addr() {
            Ok(a) => write!(f, "{a}"),
            Err(_) => f.write_str("(peer gone)"),
        }
    }
}

impl<S> Conn<S> {
    pub fn new(stream: S, token: u64, now: u64) -> Self {
        Conn {
            stream,
            token,
            phase: Phase::Handshake,
            want_write: false,
            opened: false,
            decoder: Decoder::new(),
            spill: None,
            timer: None,
            client_id: None,
            last_seen: now,
            next_beat: u64::MAX,
            connected_at: now,
        }
    }

    /// Heap bytes held in this connection's buffers (outbound bytes, a
    /// partial frame or message, an incomplete upgrade request).
    pub fn buffered_bytes(&self) -> usize {
        let spill = self.spill.as_ref().map_or(0, |s| {
            std::mem::size_of::<Spill>() + s.out.capacity() + s.handshake.capacity()
        });
        spill + self.decoder.heap_bytes()
    }

    /// Unsent bytes held by this connection.
    pub fn backlog(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.out.len() - s.out_pos)
    }

    /// Keeps `bytes` as the unsent output (the socket took what came before).
    pub fn keep_unsent(&mut self, bytes: &[u8]) {
        let s = self.spill.get_or_insert_with(Default::default);
        s.out.clear();
        s.out.extend_from_slice(bytes);
        s.out_pos = 0;
    }

    /// Gives back what the connection no longer needs.
    pub fn release_spill(&mut self) {
        if let Some(s) = &mut self.spill {
            if s.out_pos == s.out.len() && s.out.capacity() > 0 {
                s.out = Vec::new();
                s.out_pos = 0;
            }
            if s.out.capacity() == 0 && s.handshake.is_empty() {
                self.spill = None;
            }
        }
    }
}

impl Conn<TcpStream> {
    pub fn peer(&self) -> Peer<'_> {
        Peer(&self.stream)
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

/// The output buffer to append to while the connection is backed up (the
/// spill is created if missing). A free function over the field so it can be
/// borrowed alongside the decoder.
pub(crate) fn spill_out(spill: &mut Option<Box<Spill>>) -> &mut Vec<u8> {
    &mut spill.get_or_insert_with(Default::default).out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte here is paid a million times. (mio's stream carries an
    /// extra selector id in debug builds: 16 bytes instead of 4.)
    #[test]
    fn an_idle_connection_stays_small() {
        let stream = std::mem::size_of::<TcpStream>();
        assert!(
            std::mem::size_of::<Conn>() <= 80 + stream,
            "{}",
            std::mem::size_of::<Conn>()
        );
        assert_eq!(std::mem::size_of::<Phase>(), 1);
        assert_eq!(std::mem::size_of::<Decoder>(), 8);
        assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 8);
    }
}
