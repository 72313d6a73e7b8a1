//! Text messages with arbitrary payload bytes, cut into fragments and encoded with
//! `frame::encode_frame_masked`, fed to the decoder in arbitrary reads: the decoder must hand out
//! `Message::Text(s)` exactly when the payload is valid UTF-8 (with `s` equal to it), and fail with
//! 1007 otherwise, in the very read that brings the first byte proving the payload invalid.
//!
//! Input layout (a 22-byte parameter block, then the payload):
//!   byte 0        F = 1 + (b % 8) fragments
//!   bytes 1..8    sizes of fragments 1..F-1 (each b bytes, capped by what is left); the last
//!                 fragment takes the rest of the payload
//!   byte 8        R = 1 + (b % 8) read sizes
//!   bytes 9..17   read sizes, each b + 1 (1..=256), the first R used cyclically
//!   bytes 17..21  the masking key
//!   byte 21       flags: bit 0 puts a ping after every non-final fragment; bit 1 appends a
//!                 single-frame "Hello" text message after the message
//!   bytes 22..    the payload
#![no_main]

mod common;

use common::{Event, decode_stream, read_of, reads};
use libfuzzer_sys::fuzz_target;
use wsbeat::protocol::frame::{OpCode, encode_frame_masked};
use wsbeat::protocol::message::Limits;

const PARAMS: usize = 22;

/// Index of the payload byte whose arrival proves the payload is not UTF-8, if one does (`None`
/// when the payload is valid, or is only invalid because it ends inside a character).
fn first_bad_byte(payload: &[u8]) -> Option<usize> {
    let e = std::str::from_utf8(payload).err()?;
    let l = e.error_len()?;
    let end = e.valid_up_to() + l;
    // Either the last byte of the invalid sequence is itself impossible, or the sequence is a
    // valid start cut short by the byte after it.
    let bad_at_end = std::str::from_utf8(&payload[..end]).is_err_and(|e| e.error_len().is_some());
    Some(if bad_at_end { end - 1 } else { end })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < PARAMS {
        return;
    }
    let (p, payload) = data.split_at(PARAMS);
    let nfrag = 1 + p[0] as usize % 8;
    let nreads = 1 + p[8] as usize % 8;
    let read_sizes = &p[9..9 + nreads];
    let mask = [p[17], p[18], p[19], p[20]];
    let pings = p[21] & 1 != 0;
    let hello = p[21] & 2 != 0;

    // Build the stream; remember where each payload byte and each ping ends up.
    let mut stream = Vec::new();
    let mut payload_at = Vec::with_capacity(payload.len());
    let mut ping_ends = Vec::new();
    let mut left = payload;
    for i in 0..nfrag {
        let last = i + 1 == nfrag;
        let size = if last {
            left.len()
        } else {
            (p[1 + i] as usize).min(left.len())
        };
        let (frag, rest) = left.split_at(size);
        left = rest;
        let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
        let before = stream.len();
        encode_frame_masked(&mut stream, last, op, frag, mask);
        let header = stream.len() - before - frag.len();
        payload_at.extend((0..frag.len()).map(|k| before + header + k));
        if pings && !last {
            encode_frame_masked(&mut stream, true, OpCode::Ping, &[b'p', i as u8], mask);
            ping_ends.push(stream.len());
        }
    }
    let message_end = stream.len();
    if hello {
        encode_frame_masked(&mut stream, true, OpCode::Text, b"Hello", mask);
    }

    let rs = reads(stream.len(), read_sizes);
    let limits = Limits {
        max_message_size: usize::MAX,
    };
    let run = decode_stream(&stream, &rs, &limits);
    let ping = |i: usize| Event::Ping(vec![b'p', i as u8]);

    match std::str::from_utf8(payload) {
        Ok(s) => {
            let mut want: Vec<Event> = (0..ping_ends.len()).map(ping).collect();
            want.push(Event::Text(s.to_owned()));
            if hello {
                want.push(Event::Text("Hello".into()));
            }
            assert_eq!(run.events, want);
            assert!(run.idle, "decoder holds state after complete messages");
        }
        Err(_) => {
            // The offset whose arrival makes the error certain: the first impossible byte, or
            // the end of the message when it only stops inside a character.
            let proof = match first_bad_byte(payload) {
                Some(i) => payload_at[i],
                None => message_end - 1,
            };
            let pings_before = ping_ends.iter().filter(|&&e| e <= proof).count();
            let mut want: Vec<Event> = (0..pings_before).map(ping).collect();
            want.push(Event::Error(1007));
            assert_eq!(
                run.events, want,
                "error must follow exactly the pings before byte {proof}"
            );
            let got_in = *run.read_index.last().unwrap();
            let due_in = read_of(&rs, proof);
            assert_eq!(
                got_in, due_in,
                "1007 reported in read {got_in}, but the proof (stream byte {proof}) came in read {due_in}"
            );
        }
    }
});
