//! What nodes read from Redis pub/sub (`cluster::wire`), on arbitrary bytes: anyone who reaches
//! Redis can publish on the cluster's channels.
//!
//! Checked: the parsers never panic; whatever parses re-encodes to a message that parses to the
//! same thing (the encoders and parsers agree), and ids/node names that parsed hold no newline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbeat::cluster::wire::{self, Directed};

fuzz_target!(|data: &[u8]| {
    if let Some(d) = wire::parse_directed(data) {
        let again = match &d {
            Directed::Push { id, msg } => Some(wire::encode_push(id, msg)),
            Directed::Kick { id, reason } => Some(wire::encode_kick(id, reason)),
            Directed::Probe(seq) => Some(wire::encode_probe(*seq)),
            Directed::Request { from, req, query } => Some(wire::encode_request(from, *req, query)),
            Directed::Reply { req, body } => Some(wire::encode_reply(*req, body)),
            Directed::Replaced { id, .. } | Directed::Rejected { id, .. } => {
                assert!(!id.contains('\n'));
                None
            }
        };
        if let Some(bytes) = again {
            assert_eq!(wire::parse_directed(&bytes).as_ref(), Some(&d), "re-encoded {bytes:?}");
        }
    }
    if let Some((from, msg)) = wire::parse_broadcast(data) {
        assert!(!from.contains('\n'));
        let bytes = wire::encode_broadcast(from, &msg);
        assert_eq!(wire::parse_broadcast(&bytes), Some((from, msg)));
    }
    if let Some((node, _event)) = wire::parse_event(data) {
        assert!(!node.contains('\n'));
    }
});
