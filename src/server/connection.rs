//! One connection: its socket, its phase and the bytes it could not send yet.

use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::protocol::message::Decoder;
use crate::timer::TimerKey;

/// Where a connection is in its life.
pub(crate) enum Phase {
    /// Waiting for a complete upgrade request. The bytes of an incomplete
    /// request are kept (at most 8 KiB plus one read).
    Handshake(Vec<u8>),
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

pub(crate) struct Conn {
    pub stream: TcpStream,
    /// `generation << 32 | slab index`: distinguishes this connection from
    /// earlier ones in the same slab slot.
    pub token: u64,
    pub phase: Phase,
    pub decoder: Decoder,
    /// Bytes the socket did not take; allocated only while backed up.
    pub out: Vec<u8>,
    /// How much of `out` is already written.
    pub out_pos: usize,
    /// Whether WRITABLE interest is registered.
    pub want_write: bool,
    /// Upgraded and not yet reported closed (to the registry, the handler
    /// and the metrics): makes leaving happen exactly once.
    pub opened: bool,
    /// The connection's one timer: handshake deadline, then the earlier of
    /// the next server heartbeat and the liveness deadline, then the close
    /// deadline. Liveness is re-checked lazily when it fires, so frames only
    /// update `last_seen` and never touch the wheel.
    pub timer: Option<TimerKey>,
    pub peer: SocketAddr,
    /// Bound client id, while the connection holds it in the registry.
    pub client_id: Option<Box<str>>,
    /// Monotonic ms of the last liveness signal.
    pub last_seen: u64,
    /// Monotonic ms at which the next server heartbeat is due.
    pub next_beat: u64,
    /// Monotonic ms of the upgrade (accept time before it).
    pub connected_at: u64,
}

impl Conn {
    pub fn new(stream: TcpStream, token: u64, peer: SocketAddr, now: u64) -> Self {
        Conn {
            stream,
            token,
            phase: Phase::Handshake(Vec::new()),
            decoder: Decoder::new(),
            out: Vec::new(),
            out_pos: 0,
            want_write: false,
            opened: false,
            timer: None,
            peer,
            client_id: None,
            last_seen: now,
            next_beat: u64::MAX,
            connected_at: now,
        }
    }

    /// Heap bytes held in this connection's buffers (outbound bytes, a
    /// partial frame or message, an incomplete upgrade request).
    pub fn buffered_bytes(&self) -> usize {
        let handshake = match &self.phase {
            Phase::Handshake(b) => b.capacity(),
            _ => 0,
        };
        self.out.capacity() + self.decoder.heap_bytes() + handshake
    }

    /// Unsent bytes held by this connection.
    pub fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }
}
