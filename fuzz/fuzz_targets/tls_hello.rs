//! Hostile bytes to a fresh `TlsLink` (`wsbeat::tls`), before any handshake: what a TLS listener
//! reads from anyone who connects. rustls itself is fuzzed upstream; this is about the wrapper
//! around its unbuffered API: the input kept while a record or handshake message is incomplete
//! (`partial`), the loop that drives the state machine, and the alert after a failure.
//!
//! Input layout:
//!   byte 0      bits 0-3: N = 1 + (b % 16), how many read sizes follow; bit 4: a real
//!               ClientHello first (a rustls client's, bit 5 TLS 1.2 only, bit 6 ChaCha20), so
//!               that the rest is the client's second flight
//!   N bytes     read sizes, each b + 1 (1..=256), used cyclically
//!   the rest    what the client sent
//!
//! Fed once in a single read and once in the chosen reads. Checked: no panic; no plaintext; what
//! the link keeps stays bounded (`tls_peer::MAX_BUFFERED`); what it sends is whole TLS records;
//! after a failure the link refuses more input and sends nothing more; a failure is never the
//! wrapper's own (an unexpected state, a stalled state machine, a record it cannot encode);
//! before a handshake, `encrypt` fails and `close_notify` sends nothing; both read patterns
//! end the same way (failed or not, the same kinds of records sent).
#![no_main]

mod tls_peer;

use libfuzzer_sys::fuzz_target;
use tls_peer::Reads;
use wsbeat::tls::TlsLink;

/// How a link ended up after all the input.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    failed: bool,
    established: bool,
    /// The content types of the records it sent (their contents vary: randoms, signatures).
    records: Vec<u8>,
}

fn run(hello: &[u8], data: &[u8], sizes: &[u8]) -> Outcome {
    let mut link = TlsLink::new(tls_peer::server_config()).expect("a TLS link");
    let mut reads = Reads::new(sizes);
    let mut plain = Vec::new();
    let mut sent = Vec::new();
    let mut failed = false;
    for stream in [hello, data] {
        for r in reads.cut(stream.len()) {
            let mut read = stream[r].to_vec();
            let mut out = Vec::new();
            let received = link.receive(&mut read, &mut plain, &mut out);
            assert!(plain.is_empty(), "plaintext before a handshake: {plain:?}");
            assert!(
                link.buffered_bytes() <= tls_peer::MAX_BUFFERED,
                "the link keeps too much: {link:?}"
            );
            tls_peer::check_records(&out);
            sent.extend_from_slice(&out);
            if let Err(f) = received {
                let own = [
                    "unexpected TLS state",
                    "TLS state machine made no progress",
                    "cannot encode a TLS record",
                ];
                assert!(
                    !matches!(&f.error, rustls::Error::General(e) if own.contains(&e.as_str())),
                    "the wrapper failed: {f}"
                );
                // The event loop drops the connection now; had it not, nothing more happens.
                let mut more = stream.to_vec();
                out.clear();
                assert!(link.receive(&mut more, &mut plain, &mut out).is_err());
                assert!(out.is_empty() && plain.is_empty());
                failed = true;
                break;
            }
        }
        if failed {
            break;
        }
    }
    let established = link.is_established();
    if !established {
        let mut out = Vec::new();
        assert!(link.encrypt(b"x", &mut out).is_err(), "encrypted before a handshake");
        assert_eq!(link.close_notify(&mut out).ok(), Some(0));
    }
    let mut records = Vec::new();
    let mut rest = &sent[..];
    while !rest.is_empty() {
        records.push(rest[0]);
        rest = &rest[5 + u16::from_be_bytes([rest[3], rest[4]]) as usize..];
    }
    Outcome {
        failed,
        established,
        records,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, rest) = rest.split_at((1 + n as usize % 16).min(rest.len()));
    let hello = if n & 0x10 != 0 {
        // `tls_peer::client` counts TLS 1.2 as 2, ChaCha20 as 1.
        let client = (n as usize >> 4) & 2 | (n as usize >> 6) & 1;
        tls_peer::client_writes(&mut tls_peer::client(client))
    } else {
        Vec::new()
    };
    let one = run(&hello, rest, &[]);
    let many = run(&hello, rest, sizes);
    assert_eq!(one, many, "one read vs reads of {sizes:?}");
});
