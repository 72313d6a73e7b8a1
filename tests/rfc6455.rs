//! The RFC 6455 endpoint against real clients: tungstenite for the happy
//! paths, raw sockets for everything a well-behaved client would not send.

mod common;

use std::time::Duration;

use common::*;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, connect};
use wsbeat::protocol::frame::OpCode;

fn ws_url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

#[test]
fn tungstenite_echo_ping_and_close() {
    let addr = start(echo_config());
    let (mut ws, resp) = connect(ws_url(addr, "/any")).expect("connect");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.send(Message::Ping(b"abc".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"abc".to_vec().into()));
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4321),
        reason: "bye".into(),
    }))
    .unwrap();
    // The server echoes the code, then closes the TCP connection.
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 4321),
        other => panic!("expected the echoed close, got {other:?}"),
    }
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
}

#[test]
fn without_echo_messages_are_dropped_but_pings_answered() {
    let addr = start(wsbeat::Config::default());
    let mut c = Raw::open(addr, "/");
    c.send_frame(true, OpCode::Text, b"app message");
    c.send_frame(true, OpCode::Binary, b"\x00\x01");
    c.send_frame(true, OpCode::Ping, b"p");
    let f = c.read_frame().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OpCode::Pong, &b"p"[..]));
}

#[test]
fn handshake_byte_by_byte_with_frames_in_the_same_write() {
    let addr = start(echo_config());
    let mut c = Raw::connect(addr);
    let req = upgrade_request("/", "");
    for b in req.as_bytes() {
        c.send(&[*b]);
    }
    let head = c.read_http_head();
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );

    // A second client sends the request and two frames in one write.
    let mut c = Raw::connect(addr);
    let mut bytes = upgrade_request("/", "").into_bytes();
    wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Text, b"one", [1, 2, 3, 4]);
    wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Text, b"two", [5, 6, 7, 8]);
    c.send(&bytes);
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
    assert_eq!(c.read_frame().unwrap().payload, b"one");
    assert_eq!(c.read_frame().unwrap().payload, b"two");
}

#[test]
fn refused_upgrades_get_their_status_and_a_reason() {
    let origins = vec!["https://ok.example".to_string()];
    let addr = start(wsbeat::Config {
        path: Some("/ws".into()),
        allowed_origins: Some(origins),
        ..Default::default()
    });
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "400",
            "not a WebSocket upgrade",
        ),
        (
            upgrade_request("/ws", "").replace("Version: 13", "Version: 8"),
            "426",
            "13 required",
        ),
        (upgrade_request("/ws", &big), "431", "too large"),
        (upgrade_request("/elsewhere", ""), "404", "no WebSocket endpoint"),
        (
            upgrade_request("/ws", "Origin: https://evil.example\r\n"),
            "403",
            "origin not allowed",
        ),
        (
            upgrade_request("/ws?client_id=no%20spaces", ""),
            "400",
            "invalid client id",
        ),
        (
            "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03\x03".into(),
            "400",
            "malformed",
        ),
    ];
    for (req, status, reason) in cases {
        let mut c = Raw::connect(addr);
        c.send(req.as_bytes());
        let resp = c.read_http_head();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{req:?} -> {resp}");
        assert!(resp.contains(reason), "{resp}");
        if status == "426" {
            assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
        }
        c.wait_closed();
    }
    // And the right request on the right path goes through.
    let mut c = Raw::connect(addr);
    c.send(upgrade_request("/ws", "Origin: https://ok.example\r\n").as_bytes());
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
}

#[test]
fn protocol_violations_close_with_the_rfc_code_then_tcp() {
    let addr = start(wsbeat::Config {
        max_message_size: 1000,
        ..echo_config()
    });
    // (bytes after the handshake, expected close code)
    let mut bad_utf8_midframe = vec![0x81, 0x80 | 126, 0x03, 0xE8, 0, 0, 0, 0];
    bad_utf8_midframe.extend_from_slice(b"abc\xed\xa0\x80"); // surrogate; 994 more bytes never sent
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x03, b'a', b'b', b'c'], 1002),                   // unmasked
        (vec![0xC1, 0x80, 0, 0, 0, 0], 1002),                         // RSV1
        (vec![0x83, 0x80, 0, 0, 0, 0], 1002),                         // reserved opcode
        (vec![0x09, 0x80, 0, 0, 0, 0], 1002),                         // fragmented ping
        (vec![0x80, 0x80, 0, 0, 0, 0], 1002),                         // continuation out of nowhere
        (vec![0x88, 0x81, 0, 0, 0, 0, 1], 1002),                      // one-byte close payload
        (vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xED], 1002),             // close code 1005
        (vec![0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28], 1007),             // invalid UTF-8
        (bad_utf8_midframe, 1007),                                    // fails before the frame ends
        (vec![0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1009), // 2^40 bytes declared
    ];
    for (bytes, code) in cases {
        let mut c = Raw::open(addr, "/");
        c.send(&bytes);
        assert_eq!(c.read_close(), code, "{bytes:x?}");
        // The client answers the close, as it should; the server then closes TCP.
        c.send_frame(true, OpCode::Close, &code.to_be_bytes());
        c.wait_closed();
    }
}

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_after_close_timeout() {
    let addr = start(wsbeat::Config {
        close_timeout: Duration::from_millis(300),
        ..echo_config()
    });
    let mut c = Raw::open(addr, "/");
    c.send(&[0x81, 0x01, b'x']); // unmasked: 1002
    assert_eq!(c.read_close(), 1002);
    // The server shuts its side at once, but holds the socket (discarding
    // input) until the close timeout passes.
    c.wait_closed();
    let waited = c.wait_dropped();
    assert!(waited >= Duration::from_millis(200), "dropped after {waited:?}");
}

#[test]
fn a_half_sent_handshake_is_dropped_after_handshake_timeout() {
    let addr = start(wsbeat::Config {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let mut c = Raw::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let waited = c.wait_closed();
    assert!(waited >= Duration::from_millis(250), "closed after {waited:?}");
}

#[test]
fn over_max_connections_get_503() {
    let addr = start(wsbeat::Config {
        max_connections: 2,
        ..echo_config()
    });
    let _a = Raw::open(addr, "/");
    let _b = Raw::open(addr, "/");
    let mut c = Raw::connect(addr);
    let resp = c.read_http_head();
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    c.wait_closed();
}

#[test]
fn fragmented_message_with_interleaved_ping_is_echoed_whole() {
    let addr = start(echo_config());
    let mut c = Raw::open(addr, "/");
    c.send_frame(false, OpCode::Text, "κό".as_bytes());
    c.send_frame(true, OpCode::Ping, b"mid");
    // Split a character across fragments.
    let rest = "σμε".as_bytes();
    c.send_frame(false, OpCode::Continuation, &rest[..1]);
    c.send_frame(true, OpCode::Continuation, &rest[1..]);
    let pong = c.read_frame().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (OpCode::Pong, &b"mid"[..]));
    let msg = c.read_frame().unwrap();
    assert_eq!((msg.opcode, msg.fin), (OpCode::Text, true));
    assert_eq!(msg.payload, "κόσμε".as_bytes());
}

#[test]
fn many_messages_in_one_write_are_all_echoed_in_order() {
    let addr = start(echo_config());
    let mut c = Raw::open(addr, "/");
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Binary, &i.to_be_bytes(), [9, 8, 7, 6]);
    }
    c.send(&bytes);
    for i in 0..2000u32 {
        assert_eq!(c.read_frame().unwrap().payload, i.to_be_bytes());
    }
}

crate::also_with_two_loops!(
    tungstenite_echo_ping_and_close,
    without_echo_messages_are_dropped_but_pings_answered,
    handshake_byte_by_byte_with_frames_in_the_same_write,
    refused_upgrades_get_their_status_and_a_reason,
    protocol_violations_close_with_the_rfc_code_then_tcp,
    a_peer_that_never_answers_the_close_is_dropped_after_close_timeout,
    a_half_sent_handshake_is_dropped_after_handshake_timeout,
    over_max_connections_get_503,
    fragmented_message_with_interleaved_ping_is_echoed_whole,
    many_messages_in_one_write_are_all_echoed_in_order,
);
