//! The opening handshake (RFC 6455 §4.2): parse an upgrade request that may
//! arrive in pieces, decide, and write the response.

use base64::Engine;
use sha1::{Digest, Sha1};

use super::heartbeat::is_valid_client_id;
pub use super::http::{MAX_HEADER_BYTES, MAX_HEADERS};
use super::http::{has_token, percent_decode, query_pairs, reason_phrase, trim};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the server checks beyond RFC 6455 itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy<'a> {
    /// Only this path is upgraded; others get `404`.
    pub path: Option<&'a str>,
    /// Only these exact `Origin` values are upgraded; others get `403`. A
    /// request without `Origin` (not from a browser) is let through.
    pub allowed_origins: Option<&'a [String]>,
    /// Take the `token` query parameter (JWT auth).
    pub token: bool,
    /// Keep what the auth webhook is told about the request.
    pub capture: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// More bytes are needed.
    Partial,
    Accept(Accepted),
    Reject(Rejection),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes of the request; anything after them is already WebSocket frames.
    pub consumed: usize,
    pub accept: String,
    /// From the `client_id` query parameter.
    pub client_id: Option<Box<str>>,
    /// The `token` query parameter, percent-decoded, when the policy asks
    /// for it: `Some(Err(()))` when it does not decode to UTF-8.
    pub token: Option<Result<Box<str>, ()>>,
    /// When the policy asks for it.
    pub request: Option<Box<RequestInfo>>,
}

/// What the auth webhook is told about an upgrade request (header values
/// as UTF-8, lossily): `crate::auth::webhook::WebhookRequest` adds the peer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub path: Box<str>,
    /// Raw, without the `?`.
    pub query: Box<str>,
    pub origin: Option<Box<str>>,
    pub user_agent: Option<Box<str>>,
    pub cookie: Option<Box<str>>,
    pub authorization: Option<Box<str>>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

/// What a refused request shows of itself, for the refusal's log line: its
/// path (without the query, which may carry a token), its `Origin` and its
/// `client_id` parameter, as sent. `None` where the request does not get
/// that far.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Described<'a> {
    pub path: Option<&'a str>,
    pub origin: Option<&'a [u8]>,
    pub client_id: Option<&'a str>,
}

pub fn describe(data: &[u8]) -> Described<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = &data[..data.len().min(MAX_HEADER_BYTES)];
    let complete = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
    let (path, query) = match req.path {
        Some(target) => match target.split_once('?') {
            Some((p, q)) => (Some(p), q),
            None => (Some(target), ""),
        },
        None => (None, ""),
    };
    Described {
        path,
        origin: complete
            .then(|| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("origin")))
            .flatten()
            .map(|h| trim(h.value)),
        client_id: query_pairs(query).find(|(k, _)| *k == "client_id").map(|(_, v)| v),
    }
}

fn reject(status: u16, reason: &'static str) -> Outcome {
    Outcome::Reject(Rejection { status, reason })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Parses the upgrade request at the start of `buf`. Call again with more
/// bytes after `Partial`; `buf` is never more than [`MAX_HEADER_BYTES`] plus
/// one read when the caller keeps to that bound.
pub fn parse_request(buf: &[u8], policy: &Policy<'_>) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_BYTES => n,
        Ok(_) if buf.len() >= MAX_HEADER_BYTES => return reject(431, "request headers too large"),
        Ok(httparse::Status::Partial) => return Outcome::Partial,
        Ok(httparse::Status::Complete(_)) => unreachable!("covered by the guard above"),
        Err(httparse::Error::TooManyHeaders) => return reject(431, "too many request headers"),
        Err(httparse::Error::Version) => return reject(400, "not an HTTP/1.1 request"),
        Err(_) => return reject(400, "malformed HTTP request"),
    };
    if req.method != Some("GET") {
        return reject(400, "not a WebSocket upgrade: method must be GET");
    }
    if req.version != Some(1) {
        return reject(400, "not a WebSocket upgrade: HTTP/1.1 required");
    }
    let target = req.path.unwrap_or("");
    let Some((path, query)) = split_target(target) else {
        return reject(400, "bad request target");
    };

    let mut upgrade = false;
    let mut connection = false;
    let mut host = 0;
    let mut version: Option<&[u8]> = None;
    let mut versions = 0;
    let mut key: Option<&[u8]> = None;
    let mut keys = 0;
    let mut origin: Option<&[u8]> = None;
    let mut origins = 0;
    let mut body = false;
    for h in req.headers.iter() {
        let v = trim(h.value);
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(v, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(v, b"upgrade");
        } else if name.eq_ignore_ascii_case("host") {
            host += 1;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            versions += 1;
            version = Some(v);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            keys += 1;
            key = Some(v);
        } else if name.eq_ignore_ascii_case("origin") {
            origins += 1;
            origin = Some(v);
        } else if name.eq_ignore_ascii_case("content-length") {
            body |= v != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    if !upgrade {
        return reject(400, "not a WebSocket upgrade: missing Upgrade: websocket");
    }
    if !connection {
        return reject(400, "not a WebSocket upgrade: missing Connection: upgrade");
    }
    if host != 1 {
        return reject(400, "exactly one Host header required");
    }
    match (versions, version) {
        (0, _) => return reject(400, "missing Sec-WebSocket-Version"),
        (1, Some(b"13")) => {}
        _ => return reject(426, "unsupported WebSocket version: 13 required"),
    }
    let key = match (keys, key) {
        (1, Some(k)) if decodes_to_16_bytes(k) => k,
        (0, _) => return reject(400, "missing Sec-WebSocket-Key"),
        _ => return reject(400, "Sec-WebSocket-Key must be 16 bytes in base64"),
    };
    if body {
        return reject(400, "an upgrade request carries no body");
    }
    if let Some(want) = policy.path
        && path != want
    {
        return reject(404, "no WebSocket endpoint at this path");
    }
    if let Some(allowed) = policy.allowed_origins {
        if origins > 1 {
            return reject(403, "more than one Origin header");
        }
        if let Some(o) = origin
            && !allowed.iter().any(|a| a.as_bytes() == o)
        {
            return reject(403, "origin not allowed");
        }
    }
    let client_id = match client_id_param(query) {
        Ok(id) => id,
        Err(r) => return Outcome::Reject(r),
    };
    let token = if policy.token { token_param(query) } else { None };
    let request = policy.capture.then(|| {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(trim(h.value)).into())
        };
        Box::new(RequestInfo {
            path: path.into(),
            query: query.into(),
            origin: header("origin"),
            user_agent: header("user-agent"),
            cookie: header("cookie"),
            authorization: header("authorization"),
        })
    });
    Outcome::Accept(Accepted {
        consumed,
        accept: accept_key(key),
        client_id,
        token,
        request,
    })
}

/// Writes the `101` response.
pub fn write_accept(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Writes a refusal: status, a one-line plain-text reason, and
/// `Connection: close` (the server closes after sending it).
pub fn write_rejection(out: &mut Vec<u8>, r: &Rejection) {
    let text = reason_phrase(r.status);
    let extra = if r.status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\n{}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        text,
        extra,
        r.reason.len() + 1
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(r.reason.as_bytes());
    out.push(b'\n');
}

fn decodes_to_16_bytes(k: &[u8]) -> bool {
    let mut out = [0u8; 18];
    k.len() == 24
        && matches!(
            base64::engine::general_purpose::STANDARD.decode_slice(k, &mut out),
            Ok(16)
        )
}

/// Splits an origin-form (`/p?q`) or absolute-form (`http://h/p?q`) target.
fn split_target(target: &str) -> Option<(&str, &str)> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let after_scheme = ["http://", "https://", "ws://", "wss://"].iter().find_map(|s| {
            target
                .get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|_| &target[s.len()..])
        })?;
        match after_scheme.find(['/', '?']) {
            Some(i) if after_scheme.as_bytes()[i] == b'/' => &after_scheme[i..],
            Some(i) => return Some(("/", &after_scheme[i + 1..])),
            None => "/",
        }
    };
    Some(match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    })
}

/// The `token` parameter; `Err(())` inside when it does not decode or is
/// given more than once (the session refuses it as a malformed token, after
/// the upgrade, so that a page script sees why).
fn token_param(query: &str) -> Option<Result<Box<str>, ()>> {
    let mut found = None;
    for (k, v) in query_pairs(query) {
        if k != "token" {
            continue;
        }
        if found.is_some() {
            return Some(Err(()));
        }
        found = Some(
            percent_decode(v.as_bytes())
                .and_then(|t| String::from_utf8(t).ok())
                .map(String::into_boxed_str)
                .ok_or(()),
        );
    }
    found
}

fn client_id_param(query: &str) -> Result<Option<Box<str>>, Rejection> {
    let mut found: Option<Box<str>> = None;
    for (k, v) in query_pairs(query) {
        if k != "client_id" {
            continue;
        }
        if found.is_some() {
            return Err(Rejection {
                status: 400,
                reason: "client_id given more than once",
            });
        }
        let invalid = Rejection {
            status: 400,
            reason: "invalid client id: 1 to 128 bytes of A-Z a-z 0-9 . _ ~ : @ -",
        };
        let id = percent_decode(v.as_bytes()).ok_or(invalid)?;
        if !is_valid_client_id(&id) {
            return Err(invalid);
        }
        // Valid ids are ASCII.
        found = Some(String::from_utf8(id).map_err(|_| invalid)?.into_boxed_str());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn req(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn status(o: &Outcome) -> u16 {
        match o {
            Outcome::Partial => 0,
            Outcome::Accept(_) => 101,
            Outcome::Reject(r) => r.status,
        }
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let r = req(
            "/chat",
            "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n",
        );
        match parse_request(r.as_bytes(), &Policy::default()) {
            Outcome::Accept(a) => {
                assert_eq!(a.consumed, r.len());
                assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
                assert_eq!(a.client_id, None);
                let mut out = Vec::new();
                write_accept(&mut out, &a.accept);
                let text = String::from_utf8(out).unwrap();
                assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
                assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
                assert!(text.ends_with("\r\n\r\n"));
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn byte_at_a_time_then_frames() {
        let r = req("/", "");
        let mut buf = r.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]); // a frame right behind
        for n in 0..r.len() {
            assert_eq!(parse_request(&buf[..n], &Policy::default()), Outcome::Partial, "at {n}");
        }
        match parse_request(&buf, &Policy::default()) {
            Outcome::Accept(a) => assert_eq!(a.consumed, r.len()),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn token_and_request_are_taken_only_when_asked() {
        let r = req(
            "/ws?client_id=a&token=x.y%2Ez",
            "Origin: https://o.example\r\nCookie: s=1\r\nUser-Agent: t\r\n",
        );
        let Outcome::Accept(plain) = parse_request(r.as_bytes(), &Policy::default()) else {
            panic!("not accepted")
        };
        assert_eq!((plain.token, plain.request), (None, None));
        let asking = Policy {
            token: true,
            capture: true,
            ..Default::default()
        };
        let Outcome::Accept(a) = parse_request(r.as_bytes(), &asking) else {
            panic!("not accepted")
        };
        assert_eq!(a.token, Some(Ok("x.y.z".into())));
        let info = a.request.expect("captured");
        assert_eq!(&*info.path, "/ws");
        assert_eq!(&*info.query, "client_id=a&token=x.y%2Ez");
        assert_eq!(info.origin.as_deref(), Some("https://o.example"));
        assert_eq!(info.cookie.as_deref(), Some("s=1"));
        assert_eq!(info.user_agent.as_deref(), Some("t"));
        assert_eq!(info.authorization, None);
        // Not UTF-8 once decoded: refused after the upgrade, as malformed.
        let bad = req("/?token=%FF", "");
        let Outcome::Accept(a) = parse_request(bad.as_bytes(), &asking) else {
            panic!("not accepted")
        };
        assert_eq!(a.token, Some(Err(())));
        let twice = req("/?token=a&token=b", "");
        let Outcome::Accept(a) = parse_request(twice.as_bytes(), &asking) else {
            panic!("not accepted")
        };
        assert_eq!(a.token, Some(Err(())), "which one is meant is unknowable");
        // Without JWT auth, `token` is any query parameter.
        assert!(matches!(
            parse_request(twice.as_bytes(), &Policy::default()),
            Outcome::Accept(_)
        ));
    }

    #[test]
    fn status_table() {
        let ok = Policy::default();
        let origins = vec!["https://good.example".to_string()];
        let strict = Policy {
            path: Some("/ws"),
            allowed_origins: Some(&origins),
            ..Default::default()
        };
        let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_BYTES));
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let base = |m: &str, v: &str, host: &str, up: &str, conn: &str, key: &str, ver: &str| {
            format!("{m} / {v}\r\n{host}{up}{conn}{key}{ver}\r\n")
        };
        let h = "Host: a\r\n";
        let u = "Upgrade: websocket\r\n";
        let c = "Connection: Upgrade\r\n";
        let k = &format!("Sec-WebSocket-Key: {KEY}\r\n");
        let v = "Sec-WebSocket-Version: 13\r\n";
        let cases: Vec<(String, &Policy, u16)> = vec![
            (req("/", ""), &ok, 101),
            (req("/any/path?x=1", ""), &ok, 101),
            (req("http://server.example.com/ws?client_id=a", ""), &strict, 101),
            (
                base(
                    "GET",
                    "HTTP/1.1",
                    h,
                    "Upgrade: WebSocket\r\n",
                    "Connection: keep-alive, UPGRADE\r\n",
                    k,
                    v,
                ),
                &ok,
                101,
            ),
            (base("POST", "HTTP/1.1", h, u, c, k, v), &ok, 400),
            (base("GET", "HTTP/1.0", h, u, c, k, v), &ok, 400),
            (base("GET", "HTTP/1.1", "", u, c, k, v), &ok, 400),
            (base("GET", "HTTP/1.1", &format!("{h}{h}"), u, c, k, v), &ok, 400),
            (base("GET", "HTTP/1.1", h, "", c, k, v), &ok, 400),
            (base("GET", "HTTP/1.1", h, "Upgrade: h2c\r\n", c, k, v), &ok, 400),
            (base("GET", "HTTP/1.1", h, u, "", k, v), &ok, 400),
            (
                base("GET", "HTTP/1.1", h, u, "Connection: upgraded\r\n", k, v),
                &ok,
                400,
            ),
            (base("GET", "HTTP/1.1", h, u, c, "", v), &ok, 400),
            (
                base("GET", "HTTP/1.1", h, u, c, "Sec-WebSocket-Key: c2hvcnQ=\r\n", v),
                &ok,
                400,
            ),
            (
                base(
                    "GET",
                    "HTTP/1.1",
                    h,
                    u,
                    c,
                    "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n",
                    v,
                ),
                &ok,
                400,
            ),
            (base("GET", "HTTP/1.1", h, u, c, &format!("{k}{k}"), v), &ok, 400),
            (base("GET", "HTTP/1.1", h, u, c, k, ""), &ok, 400),
            (
                base("GET", "HTTP/1.1", h, u, c, k, "Sec-WebSocket-Version: 8\r\n"),
                &ok,
                426,
            ),
            (base("GET", "HTTP/1.1", h, u, c, k, &format!("{v}{v}")), &ok, 426),
            (req("/", "Content-Length: 5\r\n"), &ok, 400),
            (req("/", "Transfer-Encoding: chunked\r\n"), &ok, 400),
            (req("/", &big), &ok, 431),
            (req("/", &many), &ok, 431),
            (req("/other", ""), &strict, 404),
            (req("/ws", "Origin: https://evil.example\r\n"), &strict, 403),
            (req("/ws", "Origin: https://good.example\r\n"), &strict, 101),
            (
                req(
                    "/ws",
                    "Origin: https://good.example\r\nOrigin: https://evil.example\r\n",
                ),
                &strict,
                403,
            ),
            (req("/ws", ""), &strict, 101),
            (req("/?client_id=", ""), &ok, 400),
            (req("/?client_id=a%20b", ""), &ok, 400),
            (req("/?client_id=a%2", ""), &ok, 400),
            (req("/?client_id=a&client_id=b", ""), &ok, 400),
            (req("*", ""), &ok, 400),
            (
                String::from_utf8_lossy(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").into_owned(),
                &ok,
                400,
            ),
            ("hello world\r\n\r\n".to_string(), &ok, 400),
        ];
        for (r, policy, want) in &cases {
            let got = parse_request(r.as_bytes(), policy);
            assert_eq!(status(&got), *want, "{r:?} -> {got:?}");
        }
    }

    #[test]
    fn oversized_partial_header_is_431() {
        let mut r = "GET / HTTP/1.1\r\nX: ".to_string();
        r.push_str(&"a".repeat(MAX_HEADER_BYTES));
        assert_eq!(status(&parse_request(r.as_bytes(), &Policy::default())), 431);
    }

    #[test]
    fn client_id_from_query() {
        let r = req("/x?a=1&client_id=dev%3A42&b", "");
        match parse_request(r.as_bytes(), &Policy::default()) {
            Outcome::Accept(a) => assert_eq!(a.client_id.as_deref(), Some("dev:42")),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn describe_shows_path_origin_and_client_id_but_not_the_query() {
        let req = b"GET /ws?token=secret&client_id=a%20b HTTP/1.1\r\nHost: h\r\nOrigin:  https://evil.example \r\n\r\n";
        let d = describe(req);
        assert_eq!(d.path, Some("/ws"));
        assert_eq!(d.origin, Some(&b"https://evil.example"[..]));
        assert_eq!(d.client_id, Some("a%20b"));
        assert_eq!(describe(b"\x16\x03\x01"), Described::default());
    }

    #[test]
    fn rejection_response_shape() {
        let mut out = Vec::new();
        write_rejection(
            &mut out,
            &Rejection {
                status: 426,
                reason: "unsupported WebSocket version: 13 required",
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%41%3a+").unwrap(), b"aA:+");
        assert_eq!(percent_decode(b"%"), None);
        assert_eq!(percent_decode(b"%4"), None);
        assert_eq!(percent_decode(b"%zz"), None);
    }
}
