//! What a client heartbeat is, and which client ids are acceptable.

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// A client id is 1 to 128 bytes of `A-Z a-z 0-9 . _ ~ : @ -`: safe in a
/// URL path, a log line and a JSON string without escaping.
pub fn is_valid_client_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'@' | b'-'))
}

/// How a text message reads as a heartbeat.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Heartbeat<'a> {
    /// Not a heartbeat: an application message.
    NotHeartbeat,
    /// `heartbeat`: refreshes liveness.
    Plain,
    /// `heartbeat:ID` or `heartbeat ID` with a valid id.
    WithId(&'a str),
    /// `heartbeat:` or `heartbeat ` followed by something that is not a valid id.
    InvalidId,
}

/// Classifies a text message. The message is trimmed of ASCII white space;
/// it is a heartbeat when it is `heartbeat` alone or `heartbeat` followed by
/// `:` or white space and an id. `heartbeats`, `heartbeat2` and the like are
/// application messages: the word must end where the keyword ends.
pub fn parse_heartbeat(text: &str) -> Heartbeat<'_> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let Some(rest) = t.strip_prefix("heartbeat") else {
        return Heartbeat::NotHeartbeat;
    };
    let id = if rest.is_empty() {
        return Heartbeat::Plain;
    } else if let Some(id) = rest.strip_prefix(':') {
        id
    } else if rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        rest.trim_start_matches(|c: char| c.is_ascii_whitespace())
    } else {
        return Heartbeat::NotHeartbeat;
    };
    if is_valid_client_id(id.as_bytes()) {
        Heartbeat::WithId(id)
    } else {
        Heartbeat::InvalidId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        let ok = ["a", "device-42", "A.b_c~d:e@f-g", "0", long.as_str()];
        let bad = ["", "a b", "a/b", "é", "a\0", "a%20", "a+b", "a\"b", too_long.as_str()];
        for id in ok {
            assert!(is_valid_client_id(id.as_bytes()), "{id:?}");
        }
        for id in bad {
            assert!(!is_valid_client_id(id.as_bytes()), "{id:?}");
        }
    }

    #[test]
    fn heartbeat_forms() {
        use Heartbeat::*;
        let cases = [
            ("heartbeat", Plain),
            ("  heartbeat\r\n", Plain),
            ("\theartbeat \t", Plain),
            ("heartbeat:device-42", WithId("device-42")),
            ("heartbeat device-42", WithId("device-42")),
            ("heartbeat   device-42  ", WithId("device-42")),
            (" heartbeat:a:b@c ", WithId("a:b@c")),
            ("heartbeat:", InvalidId),
            ("heartbeat: x", InvalidId),
            ("heartbeat bad id", InvalidId),
            ("heartbeat:é", InvalidId),
            ("heartbeats", NotHeartbeat),
            ("heartbeat2", NotHeartbeat),
            ("Heartbeat", NotHeartbeat),
            ("hello", NotHeartbeat),
            ("", NotHeartbeat),
            ("heart", NotHeartbeat),
        ];
        for (text, want) in cases {
            assert_eq!(parse_heartbeat(text), want, "{text:?}");
        }
        let long = format!("heartbeat:{}", "x".repeat(129));
        assert_eq!(parse_heartbeat(&long), InvalidId);
    }
}
