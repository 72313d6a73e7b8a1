//! The sans-IO protocol core: bytes and time in, decisions out. Nothing here
//! touches a socket or a clock, so every rule is unit-tested and fuzzed
//! directly.

pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod http;
pub mod message;

/// A protocol violation: the connection is failed with `code` (RFC 6455
/// §7.4.1) and `reason` goes into the close frame and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
}

impl ProtocolError {
    pub const fn protocol(reason: &'static str) -> Self {
        ProtocolError { code: 1002, reason }
    }
    pub const fn bad_utf8() -> Self {
        ProtocolError {
            code: 1007,
            reason: "invalid UTF-8",
        }
    }
    pub const fn too_big() -> Self {
        ProtocolError {
            code: 1009,
            reason: "message too big",
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}
