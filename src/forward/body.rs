//! The JSON body of one request (sans-IO).

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::Item;
use crate::presence::PresenceEvent;

/// Appends `{"node", "messages": [...], "events": [...]}` for `items` to
/// `out`. `items` is walked twice (messages, then events), each kind in
/// order. `scratch` is reused for base64 between calls.
pub(crate) fn encode<'a, I>(node: &str, items: I, out: &mut Vec<u8>, scratch: &mut String)
where
    I: Iterator<Item = &'a Item> + Clone,
{
    out.extend_from_slice(b"{\"node\":");
    string(out, node);
    out.extend_from_slice(b",\"messages\":[");
    let mut first = true;
    for item in items.clone() {
        let Item::Message {
            id,
            conn,
            binary,
            data,
            at_ms,
        } = item
        else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"id\":");
        match id {
            Some(id) => string(out, id),
            None => out.extend_from_slice(b"null"),
        }
        // A string: ids go past 2^53, where JSON numbers lose digits.
        out.extend_from_slice(b",\"conn\":\"");
        number(out, conn.raw());
        if *binary {
            out.extend_from_slice(b"\",\"type\":\"binary\",\"data\":\"");
            scratch.clear();
            STANDARD.encode_string(data, scratch);
            // The base64 alphabet needs no JSON escaping.
            out.extend_from_slice(scratch.as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(b"\",\"type\":\"text\",\"data\":");
            // Text frames are checked UTF-8 by the protocol layer; lossy
            // rather than trusting it blindly.
            string(out, &String::from_utf8_lossy(data));
        }
        out.extend_from_slice(b",\"at_ms\":");
        number(out, *at_ms);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"events\":[");
    let mut first = true;
    for item in items {
        let Item::Event(event) = item else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        match event {
            PresenceEvent::Online { id, at_ms } => {
                out.extend_from_slice(b"{\"event\":\"online\",\"id\":");
                string(out, id);
                out.extend_from_slice(b",\"at_ms\":");
                number(out, *at_ms);
            }
            PresenceEvent::Offline { id, reason, at_ms } => {
                out.extend_from_slice(b"{\"event\":\"offline\",\"id\":");
                string(out, id);
                out.extend_from_slice(b",\"reason\":");
                string(out, reason.as_str());
                out.extend_from_slice(b",\"at_ms\":");
                number(out, *at_ms);
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `s` as a JSON string, escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    // Serializing a str into a Vec cannot fail (no I/O error, no map keys).
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::presence::{ConnId, OfflineReason};

    fn encoded(items: &[Item]) -> Value {
        let mut out = Vec::new();
        let mut scratch = String::new();
        encode("node-1", items.iter(), &mut out, &mut scratch);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    fn message(id: Option<&str>, conn: u64, binary: bool, data: &[u8], at_ms: u64) -> Item {
        Item::Message {
            id: id.map(Arc::from),
            conn: ConnId::from_raw(conn),
            binary,
            data: data.into(),
            at_ms,
        }
    }

    #[test]
    fn empty_batch() {
        assert_eq!(encoded(&[]), json!({"node": "node-1", "messages": [], "events": []}));
    }

    #[test]
    fn messages_and_events_in_order() {
        let big = (1u64 << 61) + 12345;
        let items = [
            message(Some("a"), 7, false, b"hello", 1),
            Item::Event(PresenceEvent::Online {
                id: Arc::from("b"),
                at_ms: 2,
            }),
            message(None, big, true, &[0, 1, 2, 0xfe, 0xff], 3),
            Item::Event(PresenceEvent::Offline {
                id: Arc::from("b"),
                reason: OfflineReason::HeartbeatTimeout,
                at_ms: 4,
            }),
        ];
        assert_eq!(
            encoded(&items),
            json!({
                "node": "node-1",
                "messages": [
                    {"id": "a", "conn": "7", "type": "text", "data": "hello", "at_ms": 1},
                    {"id": null, "conn": big.to_string(), "type": "binary", "data": "AAEC/v8=", "at_ms": 3},
                ],
                "events": [
                    {"event": "online", "id": "b", "at_ms": 2},
                    {"event": "offline", "id": "b", "reason": "heartbeat_timeout", "at_ms": 4},
                ],
            })
        );
    }

    #[test]
    fn text_is_escaped() {
        let text = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 漢 🎉 </script>";
        let items = [message(Some("id \"x\"\n"), 1, false, text.as_bytes(), 0)];
        let v = encoded(&items);
        assert_eq!(v["messages"][0]["data"], text);
        assert_eq!(v["messages"][0]["id"], "id \"x\"\n");
    }

    #[test]
    fn invalid_utf8_text_does_not_panic() {
        let items = [message(None, 1, false, b"ok \xff\xfe end", 0)];
        assert_eq!(encoded(&items)["messages"][0]["data"], "ok \u{fffd}\u{fffd} end");
    }

    #[test]
    fn empty_binary_and_max_numbers() {
        let items = [message(None, 0, true, b"", u64::MAX)];
        let mut out = Vec::new();
        encode("n", items.iter(), &mut out, &mut String::new());
        // Parsed as u64, not as a lossy float.
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["messages"][0]["data"], "");
        assert_eq!(v["messages"][0]["at_ms"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn scratch_is_reused_between_items() {
        let items = [message(None, 1, true, b"abc", 0), message(None, 2, true, b"x", 0)];
        let v = encoded(&items);
        assert_eq!(v["messages"][0]["data"], "YWJj");
        assert_eq!(v["messages"][1]["data"], "eA==");
    }
}
