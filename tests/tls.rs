//! TLS (SPEC §10) against the real binary: `wss://` with a rustls client
//! under tungstenite, refused handshakes as raw bytes, certificate reloads on
//! SIGHUP, the flags, and the admin API with and without `--admin-tls`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use rustls::ProtocolVersion;
use rustls::version::{TLS12, TLS13};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const FAILURES: &str = "wsbeat_tls_handshake_failures_total";
const RELOADS_OK: &str = "wsbeat_tls_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "wsbeat_tls_reloads_total{result=\"error\"}";

/// Waits for `wsbeat_tls_handshake_failures_total` to reach `n`, then
/// checks it stays there through one more scrape.
fn assert_failures(admin: SocketAddr, n: u64) {
    wait_until(&format!("{FAILURES} = {n}"), || metric(admin, FAILURES) >= n);
    assert_eq!(metric(admin, FAILURES), n);
}

// ---- wss:// carries the WebSocket protocol unchanged.

#[test]
fn upgrade_over_wss_and_echo_small_and_1mib_messages() {
    let s = start_wss(&["--echo"]);
    let mut ws = wss_connect(s.addr(), &s.client(), "client_id=echo-1");
    wait_listed(s.admin(), "echo-1");
    assert_echo(&mut ws, "hello over TLS");
    // 1 MiB (the default --max-message-size): many TLS records each way,
    // and more than the server encrypts per write.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert!(next_binary(&mut ws) == big, "1 MiB echo differs");
    let text = "é".repeat((1 << 20) / 2);
    assert_echo(&mut ws, &text);
    assert_echo(&mut ws, "small after large");
    assert_eq!(metric(s.admin(), FAILURES), 0);
}

#[test]
fn a_fragmented_message_with_a_ping_between_fragments() {
    let s = start_wss(&["--echo"]);
    let mut ws = wss_connect(s.addr(), &s.client(), "");
    ws.send(Message::Frame(Frame::message("frag", OpCode::Data(Data::Text), false)))
        .unwrap();
    ws.send(Message::Ping("between".into())).unwrap();
    ws.send(Message::Frame(Frame::message(
        "men",
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        "ted",
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    // The pong comes first: the message is echoed once complete.
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"between"),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_text(&mut ws), "fragmented");
}

#[test]
fn ping_gets_its_pong() {
    let s = start_wss(&[]);
    let mut ws = wss_connect(s.addr(), &s.client(), "");
    for payload in [&b"one"[..], b"", &[0xAB; 125]] {
        ws.send(Message::Ping(payload.to_vec().into())).unwrap();
        loop {
            match ws.read().unwrap() {
                Message::Pong(p) => {
                    assert_eq!(&p[..], payload);
                    break;
                }
                Message::Ping(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn the_close_handshake_ends_with_close_notify_and_eof() {
    let s = start_wss(&["--echo"]);
    let mut ws = wss_connect(s.addr(), &s.client(), "client_id=closer");
    wait_listed(s.admin(), "closer");
    assert_echo(&mut ws, "before closing");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(f.code, CloseCode::Normal);
                break;
            }
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame from the server: {e}"),
        }
    }
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    // rustls reads 0 only after close_notify (a bare FIN is UnexpectedEof).
    let tls = ws.get_mut();
    let mut buf = [0u8; 64];
    match std::io::Read::read(tls, &mut buf) {
        Ok(0) => {}
        other => panic!("expected close_notify, got {other:?}"),
    }
    let (rest, _) = read_until_closed(&mut tls.sock);
    assert!(rest.is_empty(), "bytes after close_notify: {rest:02x?}");
    wait_until("closer gone", || client_info(s.admin(), "closer").status == 404);
    // A clean close is no handshake failure.
    assert_eq!(metric(s.admin(), FAILURES), 0);
}

#[test]
fn server_heartbeats_reach_a_wss_client_and_a_silent_one_is_evicted() {
    let s = start_wss(&[
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "600ms",
        // Long enough for `silent` to read its close (answering the pings
        // it missed) before the server lets go.
        "--close-timeout",
        "10s",
    ]);
    let mut live = wss_connect(s.addr(), &s.client(), "client_id=live");
    let mut silent = wss_connect(s.addr(), &s.client(), "client_id=silent");
    wait_listed(s.admin(), "live");
    wait_listed(s.admin(), "silent");
    // `live` reads, so tungstenite answers each ping with a pong: past
    // twice the timeout it is still online.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(1300) {
        match live.read().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(pings >= 4, "{pings} pings in 1.3 s at a 200 ms interval");
    // `silent` never read, so never answered: evicted with 4000.
    wait_until("silent evicted", || client_info(s.admin(), "silent").status == 404);
    assert_eq!(
        metric(s.admin(), "wsbeat_evictions_total{reason=\"heartbeat_timeout\"}"),
        1
    );
    loop {
        match silent.read().unwrap() {
            Message::Ping(_) => {}
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4000, "{f:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(client_info(s.admin(), "live").status, 200);
    push_text(s.admin(), "live", "still here");
    assert_eq!(next_text(&mut live), "still here");
}

#[test]
fn push_by_id_through_the_admin_api_reaches_a_wss_client() {
    let s = start_wss(&[]);
    let mut ws = wss_connect(s.addr(), &s.client(), "client_id=pushed");
    wait_listed(s.admin(), "pushed");
    push_text(s.admin(), "pushed", "first");
    push_text(s.admin(), "pushed", &"x".repeat(200_000));
    assert_eq!(next_text(&mut ws), "first");
    assert_eq!(next_text(&mut ws).len(), 200_000);
}

#[test]
fn close_notify_without_a_close_frame_ends_the_connection() {
    let s = start_wss(&[]);
    let mut ws = wss_connect(s.addr(), &s.client(), "client_id=notify");
    wait_listed(s.admin(), "notify");
    let tls = ws.get_mut();
    tls.conn.send_close_notify();
    std::io::Write::flush(tls).unwrap();
    // The server reads it as the end of the client's input: the client goes
    // offline and the connection closes.
    wait_until("notify gone", || client_info(s.admin(), "notify").status == 404);
    read_until_closed(&mut tls.sock);
    assert_eq!(metric(s.admin(), FAILURES), 0);
}

/// A socket that writes one byte per call: TLS records reach the server
/// split across its reads.
struct OneByteWrites(std::net::TcpStream);

impl std::io::Read for OneByteWrites {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for OneByteWrites {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(&buf[..buf.len().min(1)])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn records_split_across_reads_are_joined() {
    let s = start_wss(&["--echo"]);
    for version in [&TLS13, &TLS12] {
        let tcp = std::net::TcpStream::connect(s.addr()).unwrap();
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let cfg = client_config_with(&s.cert.der, &[version], &[]);
        let conn = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, OneByteWrites(tcp));
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        let url = format!("wss://localhost:{}/", s.addr().port());
        let (mut ws, _) = tungstenite::client(url, tls).unwrap_or_else(|e| panic!("upgrade: {e}"));
        // More than one 16 KiB record.
        let text = "split records ".repeat(1500);
        ws.send(Message::text(text.as_str())).unwrap();
        loop {
            match ws.read().unwrap() {
                Message::Text(t) => {
                    assert!(t.as_str() == text, "{version:?}: echo differs");
                    break;
                }
                Message::Ping(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(metric(s.admin(), FAILURES), 0);
}

#[test]
fn a_wss_client_that_does_not_read_is_dropped_for_backpressure() {
    let s = start_wss(&["--max-backpressure", "256KiB"]);
    let _ws = wss_connect(s.addr(), &s.client(), "client_id=stuck");
    wait_listed(s.admin(), "stuck");
    let chunk = "b".repeat(512 * 1024);
    let mut pushed = 0;
    // The socket buffers take a few MiB first; then the backlog grows past
    // the limit.
    while client_info(s.admin(), "stuck").status == 200 {
        assert!(pushed < 200, "still online after {pushed} pushes of 512 KiB");
        let r = http(
            s.admin(),
            "POST",
            "/clients/stuck/messages",
            "Content-Type: text/plain\r\n",
            chunk.as_bytes(),
        );
        assert!(r.status == 202 || r.status == 404, "{}", r.text());
        pushed += 1;
    }
    wait_until("counted", || {
        metric(s.admin(), "wsbeat_evictions_total{reason=\"backpressure\"}") == 1
    });
}

// ---- Versions and ALPN.

#[test]
fn tls12_and_tls13_are_each_negotiated() {
    let s = start_wss(&["--echo"]);
    for (version, want) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
        let cfg = client_config_with(&s.cert.der, &[version], &[]);
        let mut ws = wss_connect(s.addr(), &cfg, "");
        assert_eq!(ws.get_ref().conn.protocol_version(), Some(want));
        assert_echo(&mut ws, &format!("over {want:?}"));
    }
    assert_eq!(metric(s.admin(), FAILURES), 0);
}

#[test]
fn alpn_http11_is_chosen_none_is_served_and_h2_only_is_refused() {
    let s = start_wss(&["--echo"]);
    let cfg = client_config_with(&s.cert.der, &[&TLS13, &TLS12], &[b"http/1.1"]);
    let mut ws = wss_connect(s.addr(), &cfg, "");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_echo(&mut ws, "alpn http/1.1");

    let mut ws = wss_connect(s.addr(), &s.client(), "");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), None);
    assert_echo(&mut ws, "no alpn");

    for version in [&TLS13, &TLS12] {
        let cfg = client_config_with(&s.cert.der, &[version], &[b"h2"]);
        let e = tls_connect(s.addr(), &cfg).map(|_| ()).unwrap_err();
        assert_eq!(
            tls_error(&e),
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            )),
            "{e}"
        );
    }
    assert_failures(s.admin(), 2);
}

// ---- What is not a TLS 1.2/1.3 handshake is refused at once, and counted.

#[test]
fn a_tls11_client_hello_gets_a_protocol_version_alert_and_is_closed() {
    let s = start_wss(&[]);
    let mut r = Raw::connect(s.addr());
    r.send(&tls11_client_hello());
    let (got, _) = read_until_closed(&mut r.s);
    // An alert record (0x15, version 3.x, length 2): fatal (2),
    // protocol_version (70), and nothing after it.
    assert_eq!(got.len(), 7, "{got:02x?}");
    assert_eq!((got[0], got[1]), (0x15, 0x03), "{got:02x?}");
    assert_eq!(&got[3..], &[0x00, 0x02, 0x02, 0x46], "{got:02x?}");
    assert_failures(s.admin(), 1);
}

#[test]
fn plain_http_on_the_tls_port_gets_an_alert_not_an_http_answer() {
    let s = start_wss(&[]);
    for req in [
        upgrade_request("/", ""),
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
    ] {
        let mut r = Raw::connect(s.addr());
        r.send(req.as_bytes());
        let (got, took) = read_until_closed(&mut r.s);
        assert!(!got.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&got));
        // One alert record (0x15, version 3.x, length 2), fatal, and the close.
        assert_eq!(got.len(), 7, "{got:02x?}");
        assert_eq!(
            (got[0], got[1], got[3], got[4], got[5]),
            (0x15, 0x03, 0, 2, 2),
            "{got:02x?}"
        );
        // At once, not at --handshake-timeout (10 s by default).
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    assert_failures(s.admin(), 2);
}

#[test]
fn silent_and_trickling_clients_are_dropped_at_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let s = start_wss(&["--handshake-timeout", "1s"]);
    let hello = client_hello(&s.client());
    assert!(hello.len() > 20, "{hello:02x?}");
    let silent = std::thread::spawn({
        let addr = s.addr();
        move || {
            let mut r = Raw::connect(addr);
            let (got, took) = read_until_closed(&mut r.s);
            assert!(got.is_empty(), "{got:02x?}");
            took
        }
    });
    // The timeout covers the upgrade too: a TLS handshake alone does not
    // stop it (and such a connection is no TLS failure).
    let no_upgrade = std::thread::spawn({
        let (addr, cfg) = (s.addr(), s.client());
        move || {
            let t = Instant::now();
            let mut tls = tls_connect(addr, &cfg).expect("TLS handshake");
            read_until_closed(&mut tls.sock);
            t.elapsed()
        }
    });
    // A byte every 200 ms: the reads between them time out while the
    // server waits, until it gives up.
    let mut r = Raw::connect(s.addr());
    r.s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let t = Instant::now();
    let mut sent = 0;
    let took = loop {
        assert!(sent < hello.len(), "the whole ClientHello went out before the timeout");
        if std::io::Write::write_all(&mut r.s, &hello[sent..sent + 1]).is_err() {
            break t.elapsed();
        }
        sent += 1;
        let mut buf = [0u8; 64];
        match std::io::Read::read(&mut r.s, &mut buf) {
            Ok(0) => break t.elapsed(),
            Ok(n) => panic!("an answer to a partial ClientHello: {:02x?}", &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break t.elapsed(),
        }
    };
    let silent_took = silent.join().unwrap();
    let no_upgrade_took = no_upgrade.join().unwrap();
    for took in [took, silent_took, no_upgrade_took] {
        assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
        assert!(took < TIMEOUT + Duration::from_millis(1500), "{took:?}");
    }
    assert!(sent >= 4, "{sent} bytes sent");
    // Only the trickler began a handshake: a connection that sent nothing
    // (a load balancer's TCP check) is no TLS failure, though it timed out.
    assert_failures(s.admin(), 1);
    assert_eq!(
        metric(
            s.admin(),
            "wsbeat_connections_rejected_total{reason=\"handshake_timeout\"}"
        ),
        3
    );
    // The timeout closes the handshake, not the server: a prompt client is
    // served.
    let mut ws = wss_connect(s.addr(), &s.client(), "");
    ws.send(Message::Ping("ok".into())).unwrap();
    assert!(matches!(ws.read().unwrap(), Message::Pong(_)));
}

// ---- SIGHUP.

#[test]
fn sighup_with_a_new_pair_serves_it_to_new_connections_and_keeps_open_ones() {
    let s = start_wss(&["--echo", "--threads", "2"]);
    let old = s.client();
    let mut open = wss_connect(s.addr(), &old, "client_id=before");
    assert_echo(&mut open, "before the reload");
    assert_eq!(
        (metric(s.admin(), RELOADS_OK), metric(s.admin(), RELOADS_ERROR)),
        (0, 0)
    );

    let new = Cert::generate();
    new.write(&s.files);
    s.hup();
    wait_until("reload counted", || metric(s.admin(), RELOADS_OK) == 1);
    assert_eq!(metric(s.admin(), RELOADS_ERROR), 0);
    s.wait_log(&["SIGHUP: reloaded"]);

    // New connections, on both loops, get the new certificate (a fresh
    // client each, so that each verifies it: none resumes).
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut ws = wss_connect(s.addr(), &client_config(&new.der), "");
        assert!(peer_cert(&ws) == new.der, "connection {i}: not the new certificate");
        assert_echo(&mut ws, &format!("after the reload {i}"));
        clients.push(ws);
    }
    // The old root no longer verifies what the server presents (a fresh
    // client each time: one holding a ticket would resume without seeing a
    // certificate).
    for _ in 0..2 {
        let e = tls_connect(s.addr(), &client_config(&s.cert.der))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(tls_error(&e), Some(rustls::Error::InvalidCertificate(_))),
            "{e}"
        );
    }
    // The reload ended the tickets too: a client of before, holding one,
    // does a full handshake, sees the new certificate and refuses it.
    let e = tls_connect(s.addr(), &old).map(|_| ()).unwrap_err();
    assert!(
        matches!(tls_error(&e), Some(rustls::Error::InvalidCertificate(_))),
        "{e}"
    );
    // A client refusing the certificate ends the handshake: counted.
    assert_failures(s.admin(), 3);
    // The connection opened before keeps its session and its certificate.
    assert!(peer_cert(&open) == s.cert.der);
    assert_echo(&mut open, "still the old session");
    push_text(s.admin(), "before", "pushed after the reload");
    assert_eq!(next_text(&mut open), "pushed after the reload");
}

#[test]
fn sighup_with_a_bad_key_keeps_the_old_pair_and_logs_an_error() {
    let s = start_wss(&["--echo"]);
    let mut open = wss_connect(s.addr(), &s.client(), "");
    std::fs::write(&s.files.key, "not a key\n").unwrap();
    s.hup();
    wait_until("failed reload counted", || metric(s.admin(), RELOADS_ERROR) == 1);
    assert_eq!(metric(s.admin(), RELOADS_OK), 0);
    let line = s.wait_log(&["ERROR", "--tls-key"]);
    assert!(line.contains(arg(&s.files.key)), "{line}");
    // New connections still get the certificate in use, and open ones work.
    let mut ws = wss_connect(s.addr(), &s.client(), "");
    assert!(peer_cert(&ws) == s.cert.der);
    assert_echo(&mut ws, "after a failed reload");
    assert_echo(&mut open, "open across a failed reload");
    // Each file where the other belongs: also refused.
    std::fs::write(&s.files.key, &s.cert.cert_pem).unwrap();
    s.hup();
    wait_until("second failed reload", || metric(s.admin(), RELOADS_ERROR) == 2);
    // Fixed files are taken on the next SIGHUP.
    let new = Cert::generate();
    new.write(&s.files);
    s.hup();
    wait_until("reload counted", || metric(s.admin(), RELOADS_OK) == 1);
    let ws = wss_connect(s.addr(), &client_config(&new.der), "");
    assert!(peer_cert(&ws) == new.der);
    assert_eq!(metric(s.admin(), RELOADS_ERROR), 2);
}

#[test]
fn without_tls_sighup_is_logged_and_ignored() {
    let mut p = start_binary(wsbeat_on_free_ports());
    hup(&p);
    wait_log(&p, &["SIGHUP", "no --tls-cert"]);
    hup(&p);
    // Still running and serving.
    assert!(p.child.try_wait().unwrap().is_none(), "exited on SIGHUP");
    let mut ws = connect(p.addr, "client_id=after-hup");
    wait_listed(p.admin, "after-hup");
    push_text(p.admin, "after-hup", "still serving");
    assert_eq!(read_text(&mut ws), "still serving");
}

// ---- Flags.

#[test]
fn bad_tls_flags_exit_2_with_one_line_naming_the_flag() {
    let dir = TempDir::new("flags");
    let a = Files::in_dir(&dir, "a-");
    let b = Files::in_dir(&dir, "b-");
    Cert::generate().write(&a);
    Cert::generate().write(&b);
    let missing = missing(&dir);
    let (a_cert, a_key, b_key, missing) = (arg(&a.cert), arg(&a.key), arg(&b.key), arg(&missing));
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--tls-cert", a_cert], "--tls-cert", "--tls-key"),
        (vec!["--tls-key", a_key], "--tls-key", "--tls-cert"),
        (vec!["--tls-cert", missing, "--tls-key", a_key], "--tls-cert", missing),
        (vec!["--tls-cert", a_cert, "--tls-key", missing], "--tls-key", missing),
        (
            vec!["--tls-cert", a_key, "--tls-key", a_key],
            "--tls-cert",
            "private key",
        ),
        (
            vec!["--tls-cert", a_cert, "--tls-key", a_cert],
            "--tls-key",
            "certificate",
        ),
        (
            vec!["--tls-cert", a_cert, "--tls-key", b_key],
            "--tls-key",
            "does not match",
        ),
        (vec!["--admin-tls"], "--admin-tls", "--tls-cert"),
    ];
    assert_refused_at_start(&cases);
}

#[test]
fn every_documented_key_type_and_format_serves() {
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
    // (algorithm, the key's PEM label when not PKCS#8)
    let cases = [
        (&PKCS_ECDSA_P256_SHA256, None),
        (&PKCS_ECDSA_P256_SHA256, Some("EC PRIVATE KEY")),
        (&PKCS_ECDSA_P384_SHA384, None),
        (&PKCS_ECDSA_P384_SHA384, Some("EC PRIVATE KEY")),
        (&PKCS_ED25519, None),
        (&PKCS_RSA_SHA256, None),
        (&PKCS_RSA_SHA256, Some("RSA PRIVATE KEY")),
    ];
    // Started together: each start-up is mostly waiting.
    let servers: Vec<(String, WssServer)> = cases
        .iter()
        .map(|(alg, label)| {
            let cert = Cert::generate_for(alg);
            let key = label.map(|l| cert.traditional_key_pem(l));
            if let (Some(k), Some(l)) = (&key, label) {
                assert!(k.starts_with(&format!("-----BEGIN {l}-----\n")), "{k}");
            }
            let name = format!("{alg:?} {}", label.unwrap_or("PKCS#8"));
            (name, start_wss_with(cert, key.as_deref(), &["--echo"]))
        })
        .collect();
    for (name, s) in &servers {
        for version in [&TLS13, &TLS12] {
            let cfg = client_config_with(&s.cert.der, &[version], &[]);
            let mut ws = wss_connect(s.addr(), &cfg, "");
            assert_echo(&mut ws, &format!("{name} {version:?}"));
        }
    }
}

#[test]
fn at_max_connections_a_tls_connection_is_closed_without_a_plaintext_503() {
    let s = start_wss(&["--max-connections", "1", "--echo"]);
    let mut first = wss_connect(s.addr(), &s.client(), "client_id=only");
    wait_listed(s.admin(), "only");
    let mut r = Raw::connect(s.addr());
    r.send(&client_hello(&s.client()));
    let (got, _) = read_until_closed(&mut r.s);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(
        metric(
            s.admin(),
            "wsbeat_connections_rejected_total{reason=\"max_connections\"}"
        ),
        1
    );
    assert_echo(&mut first, "the first one is served");
}

// ---- The admin API.

#[test]
fn the_admin_api_speaks_tls_with_admin_tls() {
    let s = start_wss(&["--admin-tls"]);
    let cfg = s.client();
    let r = https(s.admin(), &cfg, "GET", "/metrics", "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&format!("{RELOADS_OK} 0\n")), "{}", r.text());
    // Push by id, over TLS on both sides.
    let mut ws = wss_connect(s.addr(), &cfg, "client_id=admin-tls");
    wait_until("listed over https", || {
        https(s.admin(), &cfg, "GET", "/clients/admin-tls", "", b"").status == 200
    });
    let r = https(
        s.admin(),
        &cfg,
        "POST",
        "/clients/admin-tls/messages",
        "Content-Type: text/plain\r\n",
        b"via https",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(next_text(&mut ws), "via https");
    // Plain HTTP to it gets no HTTP answer: an alert, and the close.
    let mut raw = Raw::connect(s.admin());
    raw.send(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    let (got, _) = read_until_closed(&mut raw.s);
    assert!(!got.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(got.len(), 7, "{got:02x?}");
    assert_eq!(
        (got[0], got[1], got[3], got[4], got[5]),
        (0x15, 0x03, 0, 2, 2),
        "{got:02x?}"
    );
    assert_eq!(metric_https(s.admin(), &cfg, FAILURES), 0);
}

#[test]
fn the_admin_api_stays_plain_http_without_admin_tls() {
    let s = start_wss(&[]);
    assert!(
        s.proc.startup_log.iter().any(|l| l.contains("admin API on http://")),
        "{:?}",
        s.proc.startup_log
    );
    let r = http(s.admin(), "GET", "/metrics", "", b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains(FAILURES), "{}", r.text());
    // A TLS client gets no handshake from it.
    assert!(tls_connect(s.admin(), &s.client()).is_err());
}

// ---- Several event loops.

#[test]
fn two_event_loops_serve_wss() {
    let s = start_wss(&["--echo", "--threads", "2"]);
    let mut clients: Vec<Wss> = (0..8)
        .map(|i| wss_connect(s.addr(), &s.client(), &format!("client_id=loop-{i}")))
        .collect();
    wait_until("all counted", || loop_connections(s.admin()).iter().sum::<u64>() == 8);
    let per_loop = loop_connections(s.admin());
    assert_eq!(per_loop.len(), 2, "{per_loop:?}");
    assert!(per_loop.iter().all(|&n| n > 0), "{per_loop:?}");
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_echo(ws, &format!("echo {i}"));
        push_text(s.admin(), &format!("loop-{i}"), &format!("push {i}"));
        assert_eq!(next_text(ws), format!("push {i}"));
    }
}

// ---- An independent client.

/// Python's `ssl` (OpenSSL) as the client: the upgrade and an echo over
/// TLS 1.2 and TLS 1.3.
#[test]
fn an_openssl_client_upgrades_and_gets_its_echo() {
    const SCRIPT: &str = r#"
import socket, ssl, sys
port, cafile, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
ctx.minimum_version = ctx.maximum_version = v
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost")
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
payload, mask = b"python", b"\x01\x02\x03\x04"
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
while len(buf) < 2 or len(buf) < 2 + buf[1]:
    buf += s.recv(4096)
print(head.split(b"\r\n")[0].decode(), s.version(), s.selected_alpn_protocol(), buf[2:2 + buf[1]].decode())
"#;
    let s = start_wss(&["--echo"]);
    for (version, name) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let out = match std::process::Command::new("python3")
            .args(["-c", SCRIPT, &s.addr().port().to_string(), arg(&s.files.cert), version])
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!("python3 is needed (scripts/install-test-deps.sh): {e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            stdout.trim(),
            format!("HTTP/1.1 101 Switching Protocols {name} http/1.1 python")
        );
    }
}
