//! The presence types: connection ids, why a client left, presence events,
//! and what a duplicate id does.

use std::sync::Arc;

/// Identifies one connection for as long as it lives, process-wide, and is
/// not reused by a later connection in the same slot: the slot index in its
/// loop's table is in the low 32 bits, the loop's index in the next 8, and
/// a 22-bit generation above them. The two top bits stay clear, so drivers
/// may tag it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Generations wrap at this mask (22 bits).
    pub(crate) const GENERATION_MASK: u32 = 0x3F_FFFF;
    /// Loops a process can run (8 bits of loop index).
    pub const MAX_LOOPS: usize = 256;

    /// The connection in table slot `slot` of loop `loop_index`, generation
    /// `generation` (taken modulo 2^22).
    pub(crate) fn new(slot: usize, loop_index: usize, generation: u32) -> ConnId {
        // A table never holds 2^32 connections (--max-connections is far
        // below), and loop indexes are below MAX_LOOPS (checked by Config).
        ConnId(
            u64::from(generation & Self::GENERATION_MASK) << 40
                | (loop_index as u64 & 0xFF) << 32
                | (slot as u64 & 0xFFFF_FFFF),
        )
    }

    /// Its slot in the table of the loop that holds it.
    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }

    /// The loop that holds it.
    pub fn loop_index(self) -> usize {
        ((self.0 >> 32) & 0xFF) as usize
    }

    /// Its generation.
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 40) as u32
    }

    #[doc(hidden)]
    pub fn from_raw(raw: u64) -> ConnId {
        ConnId(raw & ((1 << 62) - 1))
    }

    #[doc(hidden)]
    pub fn raw(self) -> u64 {
        self.0
    }
}

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
    /// The node holding it stopped renewing its lease (cluster).
    NodeLost,
}

impl OfflineReason {
    pub const ALL: [OfflineReason; 8] = [
        OfflineReason::Closed,
        OfflineReason::Error,
        OfflineReason::HeartbeatTimeout,
        OfflineReason::Replaced,
        OfflineReason::Kicked,
        OfflineReason::Backpressure,
        OfflineReason::Shutdown,
        OfflineReason::NodeLost,
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
            OfflineReason::NodeLost => "node_lost",
        }
    }

    /// The reason named `s` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<OfflineReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
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

/// A presence change and the node it happened on (`None`: this one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub node: Option<Arc<str>>,
    pub event: PresenceEvent,
}

impl From<PresenceEvent> for NodeEvent {
    fn from(event: PresenceEvent) -> Self {
        NodeEvent { node: None, event }
    }
}
