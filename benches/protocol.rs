//! The sans-IO core on the hot paths: a client heartbeat frame from bytes to
//! decision, frame header parsing, unmasking, the handshake, UTF-8, and a
//! whole session taking a heartbeat or an echoed message.

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

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for len in [16usize, 1024, 64 * 1024] {
        let mut buf = vec![0x5au8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| frame::apply_mask(black_box(&mut buf), [0x37, 0xfa, 0x21, 0x3d], 1))
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    use wsbeat::protocol::handshake::{self, Outcome, Policy};
    let req = b"GET /?client_id=device-42 HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://app.example.com\r\nUser-Agent: Mozilla/5.0\r\n\r\n";
    let mut out = Vec::with_capacity(256);
    c.bench_function("handshake/parse+respond", |b| {
        b.iter(|| {
            out.clear();
            match handshake::parse_request(black_box(req), &Policy::default()) {
                Outcome::Accept(a) => handshake::write_accept(&mut out, &a.accept),
                _ => unreachable!(),
            }
            out.len()
        })
    });
}

fn utf8(c: &mut Criterion) {
    // A 64 KiB text message of mixed scripts, decoded whole (zero-copy path)
    // and in 1,500-byte reads (incremental path: unmask, copy, validate as it
    // arrives).
    let text: String = "héllo wörld κόσμε 𝄞 ascii ascii ascii ".repeat(1700);
    let mut end = 64 * 1024;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let mut wire = Vec::new();
    frame::encode_frame_masked(&mut wire, true, OpCode::Text, text.as_bytes(), [9, 8, 7, 6]);
    let limits = Limits {
        max_message_size: 1 << 20,
    };
    let mut g = c.benchmark_group("utf8");
    g.throughput(Throughput::Bytes(text.len() as u64));
    let mut buf = wire.clone();
    g.bench_function("whole-frame", |b| {
        let mut dec = Decoder::new();
        b.iter(|| {
            buf.copy_from_slice(&wire);
            let (_, m) = dec.decode(&mut buf, &limits).unwrap();
            matches!(m, Some(Message::Text(_)))
        })
    });
    g.bench_function("1500B-reads", |b| {
        let mut dec = Decoder::new();
        b.iter(|| {
            buf.copy_from_slice(&wire);
            let mut got = false;
            for chunk in buf.chunks_mut(1500) {
                let (_, m) = dec.decode(chunk, &limits).unwrap();
                got |= matches!(m, Some(Message::Text(_)));
            }
            got
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

/// The connection's own code, as the loop runs it for every read: a session
/// (`wsbeat::session`) upgraded with an id takes a heartbeat frame, and, with
/// `--echo`, a 32-byte text message it answers.
fn session(c: &mut Criterion) {
    use wsbeat::session::{After, Context, Session};
    let upgraded = |echo: bool| {
        let cfg = wsbeat::Config {
            echo,
            admin_listen: None,
            handle_signals: false,
            ..Default::default()
        };
        let mut cx = Context::new(
            cfg,
            std::sync::Arc::new(wsbeat::presence::SharedRegistry::new()),
            Box::new(wsbeat::NoopHandler),
            false,
            16,
        );
        let mut s = Session::accept((), wsbeat::ConnId::from_raw(0), &mut cx);
        let mut req = b"GET /?client_id=device-42 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
        assert_eq!(s.on_bytes(&mut cx, &mut req), After::Keep);
        cx.out.clear();
        cx.events.clear();
        (cx, s)
    };
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    for (name, echo, payload) in [
        ("heartbeat", false, &b"heartbeat:device-42"[..]),
        ("echo-32B", true, &[b'x'; 32][..]),
    ] {
        let (mut cx, mut s) = upgraded(echo);
        let mut wire = Vec::new();
        frame::encode_frame_masked(&mut wire, true, OpCode::Text, payload, [1, 2, 3, 4]);
        let mut buf = wire.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(&wire);
                let after = s.on_bytes(&mut cx, black_box(&mut buf));
                cx.out.clear();
                after
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    heartbeat_message,
    frame_header,
    unmask,
    handshake,
    utf8,
    session
);
criterion_main!(benches);
