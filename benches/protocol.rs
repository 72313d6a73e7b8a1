//! The sans-IO core on the hot paths: a client heartbeat frame from bytes to
//! decision, and frame header parsing.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsbeat::protocol::frame::{self, OpCode};
use wsbeat::protocol::heartbeat::{Heartbeat, parse_heartbeat};
use wsbeat::protocol::message::{Decoder, Limits, Message};

fn heartbeat_message(c: &mut Criterion) {
    let mut wire = Vec::new();
    frame::encode_frame_masked(&mut wire, true, OpCode::Text, b"heartbeat:device-42", [1, 2, 3, 4]);
    let limits = Limits {
        max_message_size: 1 << 20,
    };
    let mut dec = Decoder::new();
    let mut buf = wire.clone();
    let mut g = c.benchmark_group("heartbeat");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode+classify", |b| {
        b.iter(|| {
            // The read buffer is unmasked in place, so restore it each time
            // (a 25-byte copy, as a read would do).
            buf.copy_from_slice(&wire);
            let (_, msg) = dec.decode(black_box(&mut buf), &limits).unwrap();
            match msg {
                Some(Message::Text(t)) => matches!(parse_heartbeat(t), Heartbeat::WithId(_)),
                _ => false,
            }
        })
    });
    g.finish();
}

fn frame_header(c: &mut Criterion) {
    let mut wire = Vec::new();
    frame::encode_frame_masked(&mut wire, true, OpCode::Binary, &[0; 300], [1, 2, 3, 4]);
    c.bench_function("frame/parse_header", |b| {
        b.iter(|| frame::parse_header(black_box(&wire)))
    });
}

criterion_group!(benches, heartbeat_message, frame_header);
criterion_main!(benches);
