//! Client frames into `Decoder::decode`, whole and split into reads, checked against each other and
//! against a plain reference model of RFC 6455 framing (`common::model`).
//!
//! Input layout:
//!   byte 0      max_message_size: 0..=127 -> that many bytes; 128..=254 -> (b - 127) * 512;
//!               255 -> usize::MAX (no limit)
//!   byte 1      N = 1 + (b % 16): how many read sizes follow
//!   N bytes     read sizes, each b + 1 (1..=256), used cyclically to split the stream
//!   the rest    the client byte stream (masked frames)
//! Short inputs are padded with nothing: missing parameter bytes read as absent.
//!
//! Checked:
//! - one decoder fed the stream in a single read and another fed it in the reads above produce
//!   the same messages (owned copies) and end with the same error code, or none; both equal the
//!   reference model's;
//! - at a clean end, `is_idle()` is true exactly when the stream ended on a frame boundary with no
//!   fragmented message open; a whole single-frame message is handed out zero-copy, others not;
//!   `take_fragment_done()` agrees with the non-final frames completed in each read;
//! - `frame::parse_header` at every offset never panics, agrees with the model's header parser,
//!   a complete header re-encodes (`encode_header`) to the same bytes, and each of its prefixes
//!   is incomplete or fails the same way; `parse_header_any` agrees on masked frames.
#![no_main]

mod common;

use common::{check_against_model, decode_stream, model, model_header, reads};
use libfuzzer_sys::fuzz_target;
use wsbeat::protocol::frame::{self, OpCode};
use wsbeat::protocol::message::Limits;

fn max_message_size(b: u8) -> usize {
    match b {
        0..=127 => b as usize,
        128..=254 => (b as usize - 127) * 512,
        255 => usize::MAX,
    }
}

fn check_headers(stream: &[u8]) {
    for i in 0..stream.len() {
        let s = &stream[i..];
        let got = frame::parse_header(s);
        let want = model_header(s);
        match (&got, &want) {
            (Ok(None), Ok(None)) => {}
            (Err(e), Err(())) => assert_eq!(e.code, 1002),
            (Ok(Some((h, n))), Ok(Some(w))) => {
                assert_eq!(
                    (h.fin, h.opcode as u8, h.mask, h.len, *n),
                    (w.fin, w.opcode, Some(w.mask), w.len, w.header_len),
                    "header at offset {i}"
                );
                assert_eq!(*n, frame::header_len(h.len as usize, true));
                let mut again = Vec::new();
                frame::encode_header(&mut again, h.fin, h.opcode, h.len as usize, h.mask);
                assert_eq!(again, &s[..*n], "header at offset {i} does not re-encode to itself");
                assert_eq!(OpCode::from_u8(h.opcode as u8), Some(h.opcode));
                // Prefixes of a good header are incomplete, never errors.
                for k in 0..*n {
                    assert_eq!(frame::parse_header(&s[..k]), Ok(None), "prefix {k} at offset {i}");
                }
            }
            _ => panic!("parse_header at offset {i}: {got:?}, model {want:?}"),
        }
        if let Err(e) = &got {
            // Prefixes of a bad header are incomplete or already bad.
            for k in 0..s.len().min(frame::MAX_HEADER_LEN) {
                match frame::parse_header(&s[..k]) {
                    Ok(None) => {}
                    Err(p) => assert_eq!(p.code, e.code),
                    Ok(Some(x)) => panic!("prefix {k} of a bad header at {i} parses: {x:?}"),
                }
            }
        }
        // The lenient parser agrees wherever the frame is masked.
        if let Ok(Some(x)) = got {
            assert_eq!(frame::parse_header_any(s), Ok(Some(x)));
        } else if let Ok(Some((h, _))) = frame::parse_header_any(s) {
            assert!(h.mask.is_none(), "parse_header refused a masked header at {i}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = (1 + n as usize % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let limits = Limits {
        max_message_size: max_message_size(limit),
    };

    check_headers(stream);

    let whole_reads = reads(stream.len(), &[]);
    let split_reads = reads(stream.len(), sizes);
    let whole = decode_stream(stream, &whole_reads, &limits);
    let split = decode_stream(stream, &split_reads, &limits);
    assert_eq!(whole.events, split.events, "one read vs reads of {sizes:?}");
    let m = model(stream, &limits);
    check_against_model(&whole, &m, &whole_reads, "one read");
    check_against_model(&split, &m, &split_reads, "split reads");
});
