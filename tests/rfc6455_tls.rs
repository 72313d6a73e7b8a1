//! RFC 6455 over TLS: the Autobahn-style cases a well-behaved client would
//! not send (protocol violations, bad UTF-8, bad close codes), close codes,
//! and messages cut into one-byte fragments with pings between them, written
//! as raw frames into a rustls stream. The Autobahn run (scripts/autobahn.sh) covers these over
//! plain TCP only: its runner, kosoku, has no TLS. tests/tls.rs has the
//! well-behaved wss:// paths.
//!
//! Each case is sent two ways: in one TLS record, and one record per byte,
//! so that every frame boundary also falls inside and across records.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::tls::{TlsStream, WssServer, read_until_closed, start_wss, tls_connect};
use common::*;
use wsbeat::protocol::frame::{self, OpCode};

/// How the client writes its bytes.
#[derive(Clone, Copy, Debug)]
enum Records {
    /// One write, one TLS record.
    One,
    /// A TLS record per byte.
    PerByte,
}

/// A raw WebSocket client over rustls: it sends whatever bytes it is given.
struct RawTls {
    s: TlsStream,
    buf: Vec<u8>,
}

impl RawTls {
    /// Connects, completes the TLS handshake and the upgrade on `/`.
    fn open(server: &WssServer) -> RawTls {
        let s = tls_connect(server.addr(), &server.client()).expect("TLS handshake");
        let mut c = RawTls { s, buf: Vec::new() };
        c.send(upgrade_request("/", "").as_bytes(), Records::One);
        loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&c.buf[..i]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
                c.buf.drain(..i + 4);
                return c;
            }
            assert!(c.fill() > 0, "closed before the upgrade answer");
        }
    }

    fn send(&mut self, bytes: &[u8], records: Records) {
        match records {
            // rustls seals each write as a record of its own and sends it.
            Records::One => self.s.write_all(bytes).expect("write"),
            Records::PerByte => {
                for b in bytes {
                    self.s.write_all(std::slice::from_ref(b)).expect("write");
                }
            }
        }
        self.s.flush().expect("flush");
    }

    fn send_frame(&mut self, fin: bool, op: OpCode, payload: &[u8], records: Records) {
        self.send(&masked(fin, op, payload), records);
    }

    /// Reads more plaintext; 0 once the server has closed (close_notify,
    /// or the TCP connection without it).
    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16384];
        match self.s.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("no data from the server within {DEADLINE:?}")
            }
            Err(_) => 0,
        }
    }

    /// The next server frame; `None` if the server closed first.
    fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((h, n)) = frame::parse_header_any(&self.buf).expect("valid server frame") {
                assert!(h.mask.is_none(), "server frames are unmasked");
                let end = n + h.len as usize;
                if self.buf.len() >= end {
                    let payload = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    return Some(Frame {
                        fin: h.fin,
                        opcode: h.opcode,
                        payload,
                    });
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// The next frame, which must be a close: its code (0 for none) and
    /// reason.
    fn read_close(&mut self) -> (u16, String) {
        let f = self.read_frame().expect("a close frame, not the end of the connection");
        assert_eq!(f.opcode, OpCode::Close, "{f:?}");
        let reason = String::from_utf8(f.payload.get(2..).unwrap_or_default().to_vec()).expect("UTF-8 reason");
        (f.close_code().unwrap_or(0), reason)
    }

    /// After the close frame: the server says close_notify (rustls reads 0
    /// only then; a bare FIN is an error), nothing follows it, and the TCP
    /// connection ends.
    fn expect_close_notify_then_eof(&mut self) {
        let mut tmp = [0u8; 1024];
        match self.s.read(&mut tmp) {
            Ok(0) => {}
            other => panic!("expected close_notify after the close frame, got {other:?}"),
        }
        assert!(self.buf.is_empty(), "bytes after the close frame: {:02x?}", self.buf);
        let (rest, _) = read_until_closed(&mut self.s.sock);
        assert!(rest.is_empty(), "bytes after close_notify: {rest:02x?}");
    }
}

fn masked(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    frame::encode_frame_masked(&mut v, fin, op, payload, [0x12, 0x34, 0x56, 0x78]);
    v
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Autobahn's invalid UTF-8 (6.3.1, 7.5.1): κόσμε, then a UTF-16 surrogate.
const BAD_UTF8: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";

/// (Autobahn case, what the client sends after the upgrade, the close code
/// the server must answer with).
fn violations() -> Vec<(String, Vec<u8>, u16)> {
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x03, b'a', b'b', b'c'], 1002),
        ("3.1 RSV1", vec![0xC1, 0x80, 0, 0, 0, 0], 1002),
        ("3.7 RSV on a ping", vec![0x99, 0x80, 0, 0, 0, 0], 1002),
        ("4.1.1 reserved data opcode", vec![0x83, 0x80, 0, 0, 0, 0], 1002),
        ("4.2.1 reserved control opcode", vec![0x8B, 0x80, 0, 0, 0, 0], 1002),
        ("2.5 ping of 126 bytes", masked(true, OpCode::Ping, &[b'p'; 126]), 1002),
        ("5.1 fragmented ping", masked(false, OpCode::Ping, b"ping"), 1002),
        ("5.2 fragmented pong", masked(false, OpCode::Pong, b"pong"), 1002),
        ("5.9 continuation first", masked(true, OpCode::Continuation, b"x"), 1002),
        (
            "7.3.2 one-byte close payload",
            masked(true, OpCode::Close, &[0x03]),
            1002,
        ),
        ("6.3.1 invalid UTF-8", masked(true, OpCode::Text, BAD_UTF8), 1007),
        (
            "7.5.1 close reason not UTF-8",
            masked(true, OpCode::Close, &close_payload(1000, BAD_UTF8)),
            1007,
        ),
    ];
    // 5.18: a new data frame while a fragmented message is open.
    let mut v = masked(false, OpCode::Text, b"frag");
    v.extend(masked(true, OpCode::Text, b"ment"));
    cases.push(("5.18 text inside a fragmented text", v, 1002));
    // 6.4.x: invalid UTF-8 fails at once, inside a fragment whose message
    // never ends (a surrogate code point split across fragments).
    let mut v = masked(false, OpCode::Text, "κόσμε".as_bytes());
    v.extend(masked(false, OpCode::Continuation, b"\xed"));
    v.extend(masked(false, OpCode::Continuation, b"\xa0\x80"));
    cases.push(("6.4.x invalid UTF-8 across fragments, fail fast", v, 1007));
    // Also fail fast inside a single frame: a 1000-byte frame declared, the
    // bad sequence in its first bytes, the rest never sent.
    let mut v = vec![0x81, 0x80 | 126, 0x03, 0xE8, 0, 0, 0, 0];
    v.extend_from_slice(b"abc\xed\xa0\x80");
    cases.push(("6.4.x invalid UTF-8 mid-frame, fail fast", v, 1007));
    // Over --max-message-size (1000 here) once reassembled.
    let mut v = masked(false, OpCode::Binary, &[1; 600]);
    v.extend(masked(true, OpCode::Continuation, &[2; 600]));
    cases.push(("fragments over --max-message-size", v, 1009));
    let mut cases: Vec<(String, Vec<u8>, u16)> =
        cases.into_iter().map(|(c, v, code)| (c.to_string(), v, code)).collect();
    // 7.9.x: close codes no endpoint may send.
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let v = masked(true, OpCode::Close, &close_payload(code, b""));
        cases.push((format!("7.9.x close code {code}"), v, 1002));
    }
    cases
}

#[test]
fn protocol_violations_close_with_the_rfc_code_then_close_notify_and_eof() {
    let s = start_wss(&["--echo", "--max-message-size", "1000"]);
    for records in [Records::One, Records::PerByte] {
        for (case, bytes, code) in violations() {
            let mut c = RawTls::open(&s);
            c.send(&bytes, records);
            let (got, reason) = c.read_close();
            assert_eq!(got, code, "{case} ({records:?}): close reason {reason:?}");
            // The client's answer is read and discarded; the server has
            // already shut its side.
            c.send_frame(true, OpCode::Close, &code.to_be_bytes(), Records::One);
            c.expect_close_notify_then_eof();
        }
    }
    // Nothing is left behind once the clients are gone.
    wait_until("every connection gone", || {
        metric(s.admin(), "wsbeat_connections_open") == 0
    });
    assert_eq!(metric(s.admin(), "wsbeat_tls_handshake_failures_total"), 0);
}

#[test]
fn byte_sized_fragments_in_records_of_their_own_with_pings_between_are_echoed_whole() {
    let s = start_wss(&["--echo"]);
    // 5.6-5.8 and 6.2.4: a message cut into one-byte fragments (UTF-8
    // characters split between them) with a ping between each two, sent in
    // one record or one byte per record.
    for (op, msg) in [
        (OpCode::Text, "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".as_bytes()),
        (OpCode::Binary, &[0u8, 0xff, 0xed, 0xa0, 0x80, 0x7f][..]),
    ] {
        for records in [Records::One, Records::PerByte] {
            let mut c = RawTls::open(&s);
            for (i, b) in msg.iter().enumerate() {
                let first = if i == 0 { op } else { OpCode::Continuation };
                let last = i + 1 == msg.len();
                c.send_frame(last, first, std::slice::from_ref(b), records);
                if !last {
                    c.send_frame(true, OpCode::Ping, &i.to_be_bytes(), records);
                }
            }
            for i in 0..msg.len() - 1 {
                let pong = c.read_frame().expect("a pong");
                assert_eq!((pong.opcode, pong.payload), (OpCode::Pong, i.to_be_bytes().to_vec()));
            }
            let echo = c.read_frame().expect("the echo");
            assert_eq!((echo.opcode, echo.fin), (op, true), "{records:?}");
            assert_eq!(echo.payload, msg, "{records:?}");
            // 2.x: an unsolicited pong is ignored, an empty ping answered.
            c.send_frame(true, OpCode::Pong, b"unasked", records);
            c.send_frame(true, OpCode::Ping, b"", records);
            let pong = c.read_frame().expect("a pong");
            assert_eq!((pong.opcode, pong.payload.len()), (OpCode::Pong, 0));
        }
    }
}

#[test]
fn valid_close_codes_are_echoed_then_close_notify_and_eof() {
    let s = start_wss(&["--echo"]);
    // 7.7.x: every code a client may send comes back; 7.1.1 and 7.3.1: a
    // close with no payload gets one with none.
    let codes = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
    ];
    for records in [Records::One, Records::PerByte] {
        for code in codes {
            let mut c = RawTls::open(&s);
            c.send_frame(true, OpCode::Close, &close_payload(code, "bye ✓".as_bytes()), records);
            assert_eq!(c.read_close().0, code, "{records:?}");
            c.expect_close_notify_then_eof();
        }
        let mut c = RawTls::open(&s);
        c.send_frame(true, OpCode::Text, b"last words", records);
        c.send_frame(true, OpCode::Close, b"", records);
        assert_eq!(c.read_frame().expect("the echo").payload, b"last words");
        let f = c.read_frame().expect("the close");
        assert_eq!((f.opcode, f.payload.len()), (OpCode::Close, 0), "{records:?}");
        c.expect_close_notify_then_eof();
    }
    wait_until("every connection gone", || {
        metric(s.admin(), "wsbeat_connections_open") == 0
    });
}

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_after_close_timeout() {
    let s = start_wss(&["--close-timeout", "300ms"]);
    let mut c = RawTls::open(&s);
    let t = Instant::now();
    c.send(&[0x81, 0x01, b'x'], Records::One); // unmasked: 1002
    assert_eq!(c.read_close().0, 1002);
    // The server says close_notify at once, then reads (and discards) what
    // comes until the close timeout: records keep being taken until then.
    let mut tmp = [0u8; 64];
    assert!(matches!(c.s.read(&mut tmp), Ok(0)), "close_notify");
    let dropped = loop {
        if c.s.write_all(b"\x82\x80\0\0\0\0").and_then(|()| c.s.flush()).is_err() {
            break t.elapsed();
        }
        assert!(t.elapsed() < DEADLINE, "not dropped within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(dropped >= Duration::from_millis(250), "dropped after {dropped:?}");
    wait_until("the connection gone", || {
        metric(s.admin(), "wsbeat_connections_open") == 0
    });
}

crate::also_with_two_loops!(
    protocol_violations_close_with_the_rfc_code_then_close_notify_and_eof,
    byte_sized_fragments_in_records_of_their_own_with_pings_between_are_echoed_whole,
);
