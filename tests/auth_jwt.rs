//! JWT connection tokens (SPEC §13) against the real server: tokens signed
//! at test time with real keys (HS256, ES256, EdDSA, RS256), a tungstenite
//! client for the happy paths, raw sockets for the refusals, the admin API
//! for presence, pushes and counters, and the binary for its flags.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::jwt::{self, Pair};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use wsbeat::config::{Auth, JwtSettings};
use wsbeat::protocol::frame::OpCode;

const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);

fn cfg(settings: JwtSettings) -> wsbeat::Config {
    wsbeat::Config {
        auth: Auth::Jwt(settings),
        close_timeout: CLOSE_TIMEOUT,
        heartbeat_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn secret_cfg() -> wsbeat::Config {
    cfg(jwt::secret_settings())
}

/// Sends an upgrade on `target` (with `frames` right behind the request, in
/// the same write); expects `101` and at once a close frame, and returns its
/// code and reason, the connection (still open), and when the close came.
fn refused_with(addr: SocketAddr, target: &str, frames: &[&[u8]]) -> (u16, String, Raw, Instant) {
    let mut r = Raw::connect(addr);
    let mut bytes = upgrade_request(target, "").into_bytes();
    for f in frames {
        wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Text, f, [1, 2, 3, 4]);
    }
    r.send(&bytes);
    let head = r.read_http_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{target}: {head}");
    // The very first frame is the close: nothing sent with the request was
    // served (echoed, or taken as a heartbeat).
    let f = r.read_frame().expect("a close frame");
    assert_eq!(f.opcode, OpCode::Close, "{target}: {f:?}");
    let reason = String::from_utf8(f.payload[2..].to_vec()).unwrap();
    (f.close_code().unwrap(), reason, r, Instant::now())
}

fn refused(addr: SocketAddr, target: &str) -> (u16, String) {
    let (code, reason, mut r, _) = refused_with(addr, target, &[]);
    // Answer the close, as a client would.
    r.send_frame(true, OpCode::Close, &code.to_be_bytes());
    r.wait_closed();
    (code, reason)
}

fn claims(sub: &str, exp_in: u64) -> serde_json::Value {
    json!({"sub": sub, "exp": jwt::now_s() + exp_in})
}

#[test]
fn valid_tokens_of_every_key_type_upgrade_list_and_take_pushes() {
    let es = Pair::es256();
    let ed = Pair::ed25519();
    let rsa = Pair::rsa();
    let hs = jwt::secret_settings();
    let cases: Vec<(&str, JwtSettings, String)> = vec![
        ("hs-user", hs.clone(), jwt::token(&claims("hs-user", 60))),
        (
            "hs512-user",
            hs,
            jwt::sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(jwt::SECRET.as_bytes()).unwrap(),
                &claims("hs512-user", 60),
            ),
        ),
        ("es@example.com", es.settings(), es.sign(&claims("es@example.com", 60))),
        ("ed:device_1", ed.settings(), ed.sign(&claims("ed:device_1", 60))),
        ("rsa.user~1", rsa.settings(), rsa.sign(&claims("rsa.user~1", 60))),
    ];
    for (sub, settings, token) in cases {
        let s = spawn(cfg(settings));
        let mut ws = connect(s.addr, &format!("token={token}"));
        let c = wait_listed(s.admin, sub);
        assert_eq!(c["id"], sub, "{c}");
        assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
        push_text(s.admin, sub, &format!("hello {sub}"));
        assert_eq!(read_text(&mut ws), format!("hello {sub}"));
        // Its own id in a heartbeat, and a plain one, are fine.
        ws.send(tungstenite::Message::text(format!("heartbeat:{sub}"))).unwrap();
        ws.send(tungstenite::Message::text("heartbeat")).unwrap();
        push_text(s.admin, sub, "still here");
        assert_eq!(read_text(&mut ws), "still here");
        assert_eq!(metric(s.admin, "wsbeat_heartbeats_received_total"), 2);
        assert_auth_failures(s.admin, &[]);
        ws.close(None).unwrap();
        wait_until("client gone", || client_info(s.admin, sub).status == 404);
    }
}

/// Runs refused upgrades on `s` (all at once, none answering the close),
/// checks each close, that nothing sent along was served, that the server
/// drops each connection within the close timeout, and returns the labels.
fn check_refusals(s: &TestServer, cases: &[(&str, String, &str)]) {
    let mut open = Vec::new();
    for (label, target, reason) in cases {
        // A heartbeat naming an id and an app message ride along with the
        // request: neither may be served (the server echoes).
        let (code, got, r, at) = refused_with(s.addr, target, &[b"heartbeat:intruder", b"echo me"]);
        assert_eq!((code, got.as_str()), (4401, *reason), "{label}: {target}");
        open.push((label, r, at));
    }
    for (label, mut r, at) in open {
        // The client never answers the close: the server lets go of the
        // TCP connection within the close timeout, sending nothing more.
        assert_eq!(r.read_frame(), None, "{label}: a frame after the close");
        let held = at.elapsed();
        assert!(
            held <= CLOSE_TIMEOUT + Duration::from_millis(700),
            "{label}: held {held:?}"
        );
    }
    assert_eq!(client_info(s.admin, "intruder").status, 404);
    assert_eq!(s.stats.clients_online(), 0);
    wait_until("connections dropped", || s.stats.connections_open() == 0);
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    for (label, _, _) in cases {
        *want.entry(label).or_default() += 1;
    }
    let want: Vec<(&str, u64)> = want.into_iter().collect();
    assert_auth_failures(s.admin, &want);
    // They were upgrades, then policy closes: no handshake failure, and no
    // message echoed.
    assert_eq!(metric(s.admin, "wsbeat_messages_sent_total"), 0);
}

#[test]
fn bad_tokens_against_a_secret_are_closed_4401_with_the_reason() {
    let s = spawn(wsbeat::Config {
        echo: true,
        ..secret_cfg()
    });
    let now = jwt::now_s();
    let good = json!({"sub": "dev-1", "exp": now + 60});
    let t = |c: &serde_json::Value| format!("/?token={}", jwt::token(c));
    let mut typ = Header::new(Algorithm::HS256);
    typ.typ = Some("at+jwt".into());
    let wrong_typ =
        jsonwebtoken::encode(&typ, &good, &EncodingKey::from_secret(jwt::SECRET.as_bytes()).unwrap()).unwrap();
    let padded = json!({"sub": "dev-1", "exp": now + 60, "pad": "x".repeat(3600)});
    let large = jwt::token(&padded);
    assert!((4800..6000).contains(&large.len()), "{}", large.len());
    let es = Pair::es256();
    let cases = [
        ("missing", "/".to_string(), "unauthorized: missing token"),
        (
            "missing",
            "/?client_id=dev-1".to_string(),
            "unauthorized: missing token",
        ),
        ("missing", "/?token=".to_string(), "unauthorized: missing token"),
        ("malformed", "/?token=abc".to_string(), "unauthorized: malformed token"),
        (
            "malformed",
            "/?token=a.b.c".to_string(),
            "unauthorized: malformed token",
        ),
        // Percent-decodes to bytes that are not UTF-8.
        (
            "malformed",
            "/?token=%FF%FE".to_string(),
            "unauthorized: malformed token",
        ),
        // Not percent-decodable at all.
        ("malformed", "/?token=%ZZ".to_string(), "unauthorized: malformed token"),
        (
            "algorithm",
            format!(
                "/?token={}",
                jwt::raw(r#"{"alg":"none","typ":"JWT"}"#, &good.to_string(), "")
            ),
            "unauthorized: algorithm not allowed",
        ),
        // A public-key token against a secret.
        (
            "algorithm",
            format!("/?token={}", es.sign(&good)),
            "unauthorized: algorithm not allowed",
        ),
        ("type", format!("/?token={wrong_typ}"), "unauthorized: wrong token type"),
        (
            "signature",
            format!("/?token={}", jwt::hs256(b"another secret", &good)),
            "unauthorized: bad signature",
        ),
        (
            "expired",
            t(&json!({"sub": "dev-1", "exp": now - 10})),
            "unauthorized: token expired",
        ),
        (
            "not_yet_valid",
            t(&json!({"sub": "dev-1", "exp": now + 60, "nbf": now + 30})),
            "unauthorized: token not yet valid",
        ),
        ("missing_exp", t(&json!({"sub": "dev-1"})), "unauthorized: missing exp"),
        (
            "subject",
            t(&json!({"exp": now + 60})),
            "unauthorized: missing or invalid sub",
        ),
        (
            "subject",
            t(&json!({"sub": "a b", "exp": now + 60})),
            "unauthorized: missing or invalid sub",
        ),
        // No audience configured: a token meant for someone is refused.
        (
            "audience",
            t(&json!({"sub": "dev-1", "exp": now + 60, "aud": "wsbeat"})),
            "unauthorized: wrong audience",
        ),
        ("too_large", format!("/?token={large}"), "unauthorized: token too large"),
    ];
    check_refusals(&s, &cases);
    // None was ever online.
    assert_eq!(metric(s.admin, "wsbeat_evictions_total{reason=\"error\"}"), 0);
}

#[test]
fn algorithm_confusion_and_foreign_keys_are_refused_against_a_public_key() {
    let es = Pair::es256();
    let s = spawn(cfg(es.settings()));
    let mut events = Events::open(s.admin);
    let good = claims("dev-1", 60);
    // HS256 with the public key's PEM text as the secret: the attacker has it.
    let forged = jwt::hs256(es.public_pem.as_bytes(), &good);
    let other = Pair::es256();
    let ed = Pair::ed25519();
    let cases = [
        (
            "algorithm",
            format!("/?token={forged}"),
            "unauthorized: algorithm not allowed",
        ),
        (
            "algorithm",
            format!("/?token={}", ed.sign(&good)),
            "unauthorized: algorithm not allowed",
        ),
        (
            "signature",
            format!("/?token={}", other.sign(&good)),
            "unauthorized: bad signature",
        ),
    ];
    check_refusals(&s, &cases);
    // The key's own tokens still work; the refused ones were never online.
    let _ws = connect(s.addr, &format!("token={}", es.sign(&good)));
    events.expect("online", "dev-1", None);
    wait_listed(s.admin, "dev-1");
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let s = spawn(cfg(JwtSettings {
        issuer: Some("https://auth.example".into()),
        audience: Some("wsbeat".into()),
        ..jwt::secret_settings()
    }));
    let now = jwt::now_s();
    let t = |c: serde_json::Value| format!("/?token={}", jwt::token(&c));
    let iss = "https://auth.example";
    let cases = [
        (
            "issuer",
            t(json!({"sub": "a", "exp": now + 60, "iss": "https://evil.example", "aud": "wsbeat"})),
            "unauthorized: wrong issuer",
        ),
        (
            "issuer",
            t(json!({"sub": "a", "exp": now + 60, "aud": "wsbeat"})),
            "unauthorized: wrong issuer",
        ),
        (
            "audience",
            t(json!({"sub": "a", "exp": now + 60, "iss": iss, "aud": "other"})),
            "unauthorized: wrong audience",
        ),
        (
            "audience",
            t(json!({"sub": "a", "exp": now + 60, "iss": iss})),
            "unauthorized: wrong audience",
        ),
    ];
    check_refusals(&s, &cases);
    let good = jwt::token(&json!({"sub": "ok-1", "exp": now + 60, "iss": iss, "aud": ["x", "wsbeat"]}));
    let mut ws = connect(s.addr, &format!("token={good}"));
    wait_listed(s.admin, "ok-1");
    push_text(s.admin, "ok-1", "hi");
    assert_eq!(read_text(&mut ws), "hi");
}

#[test]
fn an_oversized_request_is_431_and_a_repeated_token_is_malformed() {
    let s = spawn(secret_cfg());
    // 64 KiB in the query: the request head is over the 8 KiB limit (SPEC
    // §2), so it is a 431 before any token is looked at.
    let mut r = Raw::connect(s.addr);
    let huge = "a".repeat(64 * 1024);
    r.send(upgrade_request(&format!("/?token={huge}"), "").as_bytes());
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 431, "{}", resp.head);
    r.wait_closed();
    // The parameter twice, even the same valid token: which one is meant is
    // unknowable, so it is a malformed token (SPEC §13: the upgrade, then 4401).
    let a = jwt::token_for("dev-1");
    let mut r = Raw::connect(s.addr);
    r.send(upgrade_request(&format!("/?token={a}&token={a}"), "").as_bytes());
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 101, "{}", resp.head);
    assert_eq!(
        r.read_close_with_reason(),
        (4401, "unauthorized: malformed token".to_string())
    );
    assert_eq!(metric(s.admin, "wsbeat_handshake_failures_total{status=\"431\"}"), 1);
    assert_auth_failures(s.admin, &[("malformed", 1)]);
    assert_eq!(s.stats.clients_online(), 0);
}

#[test]
fn a_client_id_other_than_sub_is_a_mismatch() {
    let s = spawn(secret_cfg());
    let tok = jwt::token_for("dev-7");
    let (code, reason) = refused(s.addr, &format!("/?client_id=other&token={tok}"));
    assert_eq!((code, reason.as_str()), (1008, "client id mismatch"));
    assert_eq!(client_info(s.admin, "other").status, 404);
    assert_eq!(client_info(s.admin, "dev-7").status, 404);
    assert_auth_failures(s.admin, &[("id_mismatch", 1)]);
    // The same id as sub is fine, also percent-encoded (as is the token).
    let mut ws = connect(s.addr, &format!("client_id=dev-7&token={tok}"));
    wait_listed(s.admin, "dev-7");
    push_text(s.admin, "dev-7", "yes");
    assert_eq!(read_text(&mut ws), "yes");
    let tok = jwt::token_for("user@example.com");
    let encoded = tok.replace('.', "%2E");
    let mut ws = connect(s.addr, &format!("client_id=user%40example.com&token={encoded}"));
    wait_listed(s.admin, "user@example.com");
    push_text(s.admin, "user@example.com", "encoded");
    assert_eq!(read_text(&mut ws), "encoded");
    assert_auth_failures(s.admin, &[("id_mismatch", 1)]);
}

#[test]
fn a_heartbeat_naming_another_id_closes_1008() {
    let s = spawn(secret_cfg());
    let tok = jwt::token_for("hb-1");
    let mut c = Raw::open(s.addr, &format!("/?token={tok}"));
    wait_listed(s.admin, "hb-1");
    c.send_frame(true, OpCode::Text, b"heartbeat:hb-1");
    c.send_frame(true, OpCode::Text, b"heartbeat hb-1");
    c.send_frame(true, OpCode::Ping, b"p");
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OpCode::Pong, &b"p"[..]));
    assert_eq!(metric(s.admin, "wsbeat_heartbeats_received_total"), 2);
    c.send_frame(true, OpCode::Text, b"heartbeat:other");
    assert_eq!(c.read_close_with_reason(), (1008, "client id mismatch".to_string()));
    wait_until("hb-1 offline", || client_info(s.admin, "hb-1").status == 404);
    assert_eq!(client_info(s.admin, "other").status, 404);
}

#[test]
fn a_heartbeat_mismatch_counts_as_an_auth_failure() {
    // AuthFailure::IdMismatch: "A ?client_id=, heartbeat id or refreshed
    // token naming another id", counted by reason (SPEC §13).
    let s = spawn(secret_cfg());
    let mut c = Raw::open(s.addr, &format!("/?token={}", jwt::token_for("hb-2")));
    wait_listed(s.admin, "hb-2");
    c.send_frame(true, OpCode::Text, b"heartbeat:someone-else");
    assert_eq!(c.read_close(), 1008);
    assert_auth_failures(s.admin, &[("id_mismatch", 1)]);
}

/// Reads the close that ends `c`; returns it and the Unix ms it came at.
fn close_and_when(c: &mut Raw) -> ((u16, String), u64) {
    let close = c.read_close_with_reason();
    (close, jwt::now_ms())
}

/// SPEC §13: at `exp` the server closes with 4401 `token expired`; a close
/// is due from `exp` (ms) and allowed up to 1.5 s after.
fn assert_expired_on_time(exp_s: u64, close: &(u16, String), at_ms: u64) {
    assert_eq!((close.0, close.1.as_str()), (4401, "token expired"));
    let exp_ms = exp_s * 1000;
    assert!(
        at_ms + 100 >= exp_ms && at_ms <= exp_ms + 1500,
        "closed at {at_ms} ms, exp at {exp_ms} ms ({:+} ms)",
        at_ms as i64 - exp_ms as i64
    );
}

#[test]
fn the_server_closes_at_exp_without_a_refresh() {
    let s = spawn(secret_cfg());
    // And one whose timer also serves frequent server heartbeats: exp
    // falls between two of them.
    let beating = spawn(wsbeat::Config {
        heartbeat_interval: Duration::from_millis(300),
        ..secret_cfg()
    });
    let exp = jwt::now_s() + 2;
    let tok = jwt::token(&json!({"sub": "short-lived", "exp": exp}));
    let mut c = Raw::open(s.addr, &format!("/?token={tok}"));
    let mut b = Raw::open(beating.addr, &format!("/?token={tok}"));
    wait_listed(s.admin, "short-lived");
    wait_listed(beating.admin, "short-lived");
    let (close, at) = close_and_when(&mut c);
    assert_expired_on_time(exp, &close, at);
    let (close, at) = close_and_when(&mut b);
    assert_expired_on_time(exp, &close, at);
    assert_auth_failures(beating.admin, &[("token_expired", 1)]);
    // Offline at once, and dropped within the close timeout without an answer.
    assert_eq!(client_info(s.admin, "short-lived").status, 404);
    let held = c.wait_closed();
    assert!(held <= CLOSE_TIMEOUT + Duration::from_millis(700), "{held:?}");
    assert_auth_failures(s.admin, &[("token_expired", 1)]);
}

#[test]
fn a_refresh_before_exp_keeps_the_connection_until_the_new_exp() {
    let s = spawn(wsbeat::Config {
        echo: true,
        ..secret_cfg()
    });
    let now = jwt::now_s();
    let (exp1, exp2) = (now + 2, now + 4);
    let first = jwt::token(&json!({"sub": "refresher", "exp": exp1}));
    let second = jwt::token(&json!({"sub": "refresher", "exp": exp2}));
    let mut c = Raw::open(s.addr, &format!("/?token={first}"));
    wait_listed(s.admin, "refresher");
    c.send_frame(true, OpCode::Text, format!("token {second}").as_bytes());
    c.send_frame(true, OpCode::Text, b"after the refresh");
    // The refresh is consumed, not echoed: the first echo is the message after.
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!(
        (f.opcode, String::from_utf8_lossy(&f.payload).as_ref()),
        (OpCode::Text, "after the refresh")
    );
    // Nothing comes until well past the first exp.
    let quiet_until = exp1 * 1000 + 400;
    loop {
        let left = quiet_until.saturating_sub(jwt::now_ms());
        if left == 0 {
            break;
        }
        c.s.set_read_timeout(Some(Duration::from_millis(left))).unwrap();
        if let Some(f) = c.read_frame_nowait() {
            assert!(
                f.opcode == OpCode::Ping,
                "{:?} {:?} before the first exp passed",
                f.opcode,
                String::from_utf8_lossy(&f.payload)
            );
        }
    }
    c.s.set_read_timeout(Some(DEADLINE)).unwrap();
    c.send_frame(true, OpCode::Ping, b"alive");
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OpCode::Pong, &b"alive"[..]));
    assert_eq!(client_info(s.admin, "refresher").status, 200);
    let (close, at) = close_and_when(&mut c);
    assert_expired_on_time(exp2, &close, at);
    assert_auth_failures(s.admin, &[("token_expired", 1)]);
    // One echo: the refresh was not sent back.
    assert_eq!(metric(s.admin, "wsbeat_messages_sent_total"), 1);
}

#[test]
fn refused_refreshes_close_the_connection() {
    let s = spawn(secret_cfg());
    let now = jwt::now_s();
    let cases = [
        (
            "another sub",
            jwt::token(&json!({"sub": "someone-else", "exp": now + 120})),
            (1008, "client id mismatch"),
        ),
        (
            "an earlier exp",
            jwt::token(&json!({"sub": "r", "exp": now + 30})),
            (4401, "unauthorized: refreshed token does not expire later"),
        ),
        (
            "a bad signature",
            jwt::hs256(b"not the secret", &json!({"sub": "r", "exp": now + 120})),
            (4401, "unauthorized: bad signature"),
        ),
        (
            "an expired token",
            jwt::token(&json!({"sub": "r", "exp": now - 1})),
            (4401, "unauthorized: token expired"),
        ),
        ("no token", String::new(), (4401, "unauthorized: missing token")),
    ];
    for (what, refresh, want) in cases {
        let tok = jwt::token(&json!({"sub": "r", "exp": now + 60}));
        let mut c = Raw::open(s.addr, &format!("/?token={tok}"));
        wait_listed(s.admin, "r");
        c.send_frame(true, OpCode::Text, format!("token {refresh}").as_bytes());
        let (code, reason) = c.read_close_with_reason();
        assert_eq!((code, reason.as_str()), want, "refresh with {what}");
        wait_until("r offline", || client_info(s.admin, "r").status == 404);
        c.send_frame(true, OpCode::Close, &code.to_be_bytes());
        c.wait_closed();
    }
    assert_auth_failures(
        s.admin,
        &[
            ("id_mismatch", 1),
            ("refresh_not_later", 1),
            ("signature", 1),
            ("expired", 1),
            ("missing", 1),
        ],
    );
}

#[test]
fn a_token_message_without_jwt_auth_is_an_ordinary_message() {
    let s = spawn(wsbeat::Config {
        echo: true,
        ..Default::default()
    });
    let mut c = Raw::open(s.addr, "/");
    c.send_frame(true, OpCode::Text, b"token abc.def.ghi");
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!(f.payload, b"token abc.def.ghi");
}

#[test]
fn bad_auth_flags_exit_2_with_one_line_naming_the_flag() {
    let es = Pair::es256();
    let private = jwt::temp_file("private.pem", es.private_pem.as_bytes());
    let public = jwt::temp_file("public.pem", es.public_pem.as_bytes());
    let missing = std::env::temp_dir().join("wsbeat-test-no-such-key.pem");
    let private_path = private.path().to_str().unwrap();
    let public_path = public.path().to_str().unwrap();
    let missing_path = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--auth-jwt-public-key", missing_path],
            "--auth-jwt-public-key",
            missing_path,
        ),
        (
            vec!["--auth-jwt-public-key", private_path],
            "--auth-jwt-public-key",
            "private key",
        ),
        (
            vec![
                "--auth-jwt-secret",
                "s3cret",
                "--auth-webhook",
                "http://127.0.0.1:9/auth",
            ],
            "--auth-jwt-secret",
            "--auth-webhook",
        ),
        (
            vec![
                "--auth-jwt-public-key",
                public_path,
                "--auth-webhook",
                "http://127.0.0.1:9/auth",
            ],
            "--auth-jwt-public-key",
            "--auth-webhook",
        ),
        (
            vec!["--auth-jwt-secret", "s3cret", "--auth-jwt-public-key", public_path],
            "--auth-jwt-secret",
            "--auth-jwt-public-key",
        ),
        (
            vec!["--auth-jwt-issuer", "https://auth.example"],
            "--auth-jwt-issuer",
            "",
        ),
        (vec!["--auth-jwt-audience", "wsbeat"], "--auth-jwt-audience", ""),
        (vec!["--auth-jwt-secret", ""], "--auth-jwt-secret", "empty"),
    ];
    assert_refused_at_start(&cases);
}

#[test]
fn the_binary_verifies_tokens_with_a_public_key_file() {
    let es = Pair::es256();
    let pem = jwt::temp_file("public.pem", es.public_pem.as_bytes());
    let mut cmd = wsbeat_on_free_ports();
    cmd.args(["--close-timeout", "300ms"])
        .arg("--auth-jwt-public-key")
        .arg(pem.path());
    let p = start_binary(cmd);
    let mut ws = connect(p.addr, &format!("token={}", es.sign(&claims("bin-1", 60))));
    wait_listed(p.admin, "bin-1");
    push_text(p.admin, "bin-1", "from the binary");
    assert_eq!(read_text(&mut ws), "from the binary");
    // Confusion: HS256 with the public key file's text.
    let forged = jwt::hs256(es.public_pem.as_bytes(), &claims("bin-2", 60));
    let (code, reason) = refused(p.addr, &format!("/?token={forged}"));
    assert_eq!((code, reason.as_str()), (4401, "unauthorized: algorithm not allowed"));
    assert_auth_failures(p.admin, &[("algorithm", 1)]);
}

#[test]
fn the_binary_takes_the_secret_from_its_variable() {
    let mut cmd = wsbeat_on_free_ports();
    cmd.env("WSBEAT_AUTH_JWT_SECRET", jwt::SECRET);
    let p = start_binary(cmd);
    let mut ws = connect(p.addr, &format!("token={}", jwt::token_for("env-1")));
    wait_listed(p.admin, "env-1");
    push_text(p.admin, "env-1", "ok");
    assert_eq!(read_text(&mut ws), "ok");
    let (code, reason) = refused(p.addr, "/?client_id=env-2");
    assert_eq!((code, reason.as_str()), (4401, "unauthorized: missing token"));
}

also_with_two_loops!(
    valid_tokens_of_every_key_type_upgrade_list_and_take_pushes,
    bad_tokens_against_a_secret_are_closed_4401_with_the_reason,
    a_refresh_before_exp_keeps_the_connection_until_the_new_exp,
);
