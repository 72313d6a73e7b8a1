//! The sans-IO protocol core: bytes and time in, decisions out. Nothing here
//! touches a socket or a clock, so every rule is unit-tested and fuzzed
//! directly.

pub mod frame;
pub mod handshake;
pub mod heartbeat;
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

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`); `None` on a
/// malformed escape. Bytes, not checked as UTF-8.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}
