//! HTTP/1.1 for the admin API, sans-IO: parse requests out of a connection's read buffer (pipelined,
//! keep-alive) and write responses into its write buffer.
//!
//! The parser faces hostile input, so everything is bounded: it never looks at more than
//! [`MAX_HEADER_BYTES`] of head, refuses a body over [`Limits::max_body`] before it arrives, and
//! answers `Partial` only while the request can still fit. Its answer never depends on how the
//! bytes were split into reads: a prefix of a buffer parses to `Partial` or to the same result.

use std::hint::black_box;

/// Request line plus headers larger than [`MAX_HEADER_BYTES`] get `431` (or `414` when the
/// request line alone does not fit); more than [`MAX_HEADERS`] header lines get `431` too.
pub use crate::protocol::http::{MAX_HEADER_BYTES, MAX_HEADERS, percent_decode, query_param};
use crate::protocol::http::{list, reason_phrase, trim};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted `Content-Length`; larger gets `413` before the body is read.
    pub max_body: usize,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    Put,
    Patch,
    Options,
    /// Any other method token: not a parse error, the caller answers `405`/`501`.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// Raw path, before '?', not percent-decoded (e.g. "/clients/dev%3A1/messages").
    pub path: &'a str,
    /// Raw query after '?', "" if none.
    pub query: &'a str,
    /// Trimmed `Content-Type` value.
    pub content_type: Option<&'a [u8]>,
    /// Trimmed `Authorization` value.
    pub authorization: Option<&'a [u8]>,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: false unless `Connection: keep-alive`.
    pub keep_alive: bool,
    pub body: &'a [u8],
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct HttpError {
    pub status: u16,
    pub message: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Need more bytes. Never returned once `buf` holds more than `MAX_HEADER_BYTES + max_body`.
    Partial,
    /// A complete request and the number of bytes it used (headers + body); the next pipelined
    /// request starts at `buf[used..]`.
    Complete(Request<'a>, usize),
    /// The request is bad: the caller answers with this status and a JSON error, then closes.
    Error(HttpError),
}

fn error(status: u16, message: &'static str) -> Parse<'static> {
    Parse::Error(HttpError { status, message })
}

/// Parses the request at the start of `buf`. Call again with more bytes after `Partial`.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Parse<'a> {
    // A head we accept fits in the first MAX_HEADER_BYTES bytes, so httparse never sees more: that
    // bounds the work per call and keeps the answer the same however the bytes arrived.
    let head = &buf[..buf.len().min(MAX_HEADER_BYTES)];
    let full = buf.len() >= MAX_HEADER_BYTES;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete_head(head, full),
        Err(httparse::Error::TooManyHeaders) => return error(431, "too many request headers"),
        Err(httparse::Error::Version) => return bad_version(head, full),
        Err(_) => return error(400, "malformed request line or header"),
    };

    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    // Only origin form: the admin API is never behind a forward proxy, and `*` has no use here.
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return error(400, "request target must start with '/'");
    }
    // Clients never send a fragment; one in the target means a confused or hostile client.
    if target.contains('#') {
        return error(400, "fragment in request target");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut content_type = None;
    let mut authorization = None;
    let mut close = false;
    let mut keep = false;
    for h in req.headers.iter() {
        let name = h.name;
        let value = trim(h.value);
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(value) else {
                return error(400, "invalid Content-Length");
            };
            // Differing lengths are how requests get smuggled; repeats of one value are harmless.
            if content_length.is_some_and(|prev| prev != n) {
                return error(400, "conflicting Content-Length headers");
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            if content_type.replace(value).is_some() {
                return error(400, "more than one Content-Type header");
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            // Two credentials are ambiguous: which one was checked? Refuse rather than pick.
            if authorization.replace(value).is_some() {
                return error(400, "more than one Authorization header");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // A body framed two ways is the classic smuggling vector; chunked alone we just don't support.
    if transfer_encoding {
        return match content_length {
            Some(_) => error(400, "both Transfer-Encoding and Content-Length"),
            None => error(411, "Content-Length required"),
        };
    }
    let max_body = u64::try_from(limits.max_body).unwrap_or(u64::MAX);
    let body_len = content_length.unwrap_or(0);
    if body_len > max_body {
        return error(413, "request body too large");
    }
    let Some(end) = usize::try_from(body_len).ok().and_then(|n| head_len.checked_add(n)) else {
        return error(413, "request body too large");
    };
    let Some(body) = buf.get(head_len..end) else {
        return Parse::Partial;
    };
    let keep_alive = if req.version == Some(1) { !close } else { keep && !close };
    Parse::Complete(
        Request {
            method,
            path,
            query,
            content_type,
            authorization,
            keep_alive,
            body,
        },
        end,
    )
}

/// `Partial`, unless the head already filled its whole allowance.
fn incomplete_head(head: &[u8], full: bool) -> Parse<'static> {
    if !full {
        return Parse::Partial;
    }
    // Without even the request line's end in sight, it is the target that is too long.
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    if head[start..].contains(&b'\n') {
        error(431, "request headers too large")
    } else {
        error(414, "request line too long")
    }
}

/// httparse has one error for any version other than HTTP/1.0 and 1.1, often raised before the
/// line ends. A well-formed `HTTP/x.y` gets `505`; anything else is not HTTP at all (`400`); until
/// the line ends, a prefix of `HTTP/x.y` could still be either.
fn bad_version(head: &[u8], full: bool) -> Parse<'static> {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let line = &head[start..];
    let (line, ended) = match line.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) => (&line[..i], true),
        None => (line, false),
    };
    // httparse allows exactly one space after the method and after the target, neither of which
    // contains a space, so the version is everything after the second one.
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
    let fits = version.len() <= 8
        && version
            .iter()
            .zip(b"HTTP/0.0")
            .all(|(&b, &p)| if p == b'0' { b.is_ascii_digit() } else { b == p });
    match (fits, ended) {
        (true, true) if version.len() == 8 => error(505, "HTTP version not supported"),
        (true, false) => incomplete_head(head, full),
        _ => error(400, "malformed request line"),
    }
}

/// One or more ASCII digits that fit in a u64; no sign, spaces, hex or lists.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Appends a header name or value, turning control characters into spaces so that a value that
/// came from a client can never end the line and inject headers.
fn push_field(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if (b < 0x20 && b != b'\t') || b == 0x7f { b' ' } else { b }),
    );
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    push_field(out, name);
    out.extend_from_slice(b": ");
    push_field(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a full response. `extra` headers are written as given (control characters become
/// spaces). Writes `Content-Length` (= body.len()), `Connection: close` when !keep_alive, and
/// `Content-Type` when non-empty. A 1xx, 204 or 304 response gets neither `Content-Length` nor the
/// body (RFC 9110 §8.6, §15.3.5); a status outside 100..=999 is written as 500.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let status = if (100..=999).contains(&status) { status } else { 500 };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        push_header(out, "Content-Type", content_type);
    }
    for (name, value) in extra {
        push_header(out, name, value);
    }
    let bodyless = status < 200 || status == 204 || status == 304;
    if !bodyless {
        push_header(out, "Content-Length", &body.len().to_string());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(body);
    }
}

/// `{"error": message}` as application/json (via serde_json so any message is escaped right).
pub fn write_json_error(out: &mut Vec<u8>, status: u16, message: &str, extra: &[(&str, &str)], keep_alive: bool) {
    let body = serde_json::json!({ "error": message }).to_string();
    write_response(out, status, "application/json", extra, body.as_bytes(), keep_alive);
}

/// Constant-time equality (the time depends only on the lengths), so that comparing a presented
/// token with the configured one leaks nothing about how many leading bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b) {
        // black_box each step so the optimiser cannot exit early once `acc` is known non-zero.
        acc = black_box(acc | (x ^ y));
    }
    black_box(acc) == 0
}

/// The token of an `Authorization: Bearer TOKEN` value (scheme case-insensitive, one or more spaces
/// after it); None for other schemes or an empty token. The token's characters are not checked:
/// it is only ever compared with the configured one.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = trim(rest);
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_body: 1024 };

    fn parse(buf: &[u8]) -> Parse<'_> {
        parse_request(buf, &LIMITS)
    }

    fn err(status: u16, message: &'static str) -> Parse<'static> {
        Parse::Error(HttpError { status, message })
    }

    fn status(p: &Parse<'_>) -> Option<u16> {
        match p {
            Parse::Error(e) => Some(e.status),
            _ => None,
        }
    }

    #[track_caller]
    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Parse::Complete(r, n) => (r, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// A request with the given request line and header lines and no body.
    fn req(line: &str, headers: &[&str]) -> Vec<u8> {
        let mut v = format!("{line}\r\n").into_bytes();
        for h in headers {
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /clients/dev%3A1/messages?limit=5&x=%20 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(buf),
            Parse::Complete(
                Request {
                    method: Method::Get,
                    path: "/clients/dev%3A1/messages",
                    query: "limit=5&x=%20",
                    content_type: None,
                    authorization: None,
                    keep_alive: true,
                    body: b"",
                },
                buf.len()
            )
        );
    }

    #[test]
    fn post_with_body_and_headers() {
        let buf = b"POST /push HTTP/1.1\r\ncontent-TYPE:  application/json \r\nAUTHORIZATION:\tBearer abc\t\r\n\
                    Content-Length: 7\r\n\r\n{\"a\":1}";
        let (r, n) = complete(buf);
        assert_eq!(n, buf.len());
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.content_type, Some(&b"application/json"[..]));
        assert_eq!(r.authorization, Some(&b"Bearer abc"[..]));
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn methods() {
        let cases = [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("DELETE", Method::Delete),
            ("PUT", Method::Put),
            ("PATCH", Method::Patch),
            ("OPTIONS", Method::Options),
            ("get", Method::Other),
            ("Post", Method::Other),
            ("TRACE", Method::Other),
            ("CONNECT", Method::Other),
            ("BREW", Method::Other),
        ];
        for (m, want) in cases {
            let buf = req(&format!("{m} / HTTP/1.1"), &[]);
            assert_eq!(complete(&buf).0.method, want, "{m}");
        }
    }

    #[test]
    fn request_targets() {
        let ok = [
            ("/", "/", ""),
            ("/a/b", "/a/b", ""),
            ("/a?b=c", "/a", "b=c"),
            ("/a?", "/a", ""),
            ("/?x?y=/z", "/", "x?y=/z"),
            ("//a%2F?%3F", "//a%2F", "%3F"),
        ];
        for (target, path, query) in ok {
            let buf = req(&format!("GET {target} HTTP/1.1"), &[]);
            let (r, _) = complete(&buf);
            assert_eq!((r.path, r.query), (path, query), "{target}");
        }
        let bad = ["*", "a/b", "http://host/a", "?a", "/a#f", "/a?b#c", "#"];
        for target in bad {
            let buf = req(&format!("OPTIONS {target} HTTP/1.1"), &[]);
            assert_eq!(status(&parse(&buf)), Some(400), "{target}");
        }
    }

    #[test]
    fn versions() {
        let cases: &[(&str, Option<u16>)] = &[
            ("HTTP/1.1", None),
            ("HTTP/1.0", None),
            ("HTTP/2.0", Some(505)),
            ("HTTP/1.2", Some(505)),
            ("HTTP/0.9", Some(505)),
            ("HTTP/3.0", Some(505)),
            ("HTTP/9.9", Some(505)),
            ("http/1.1", Some(400)),
            ("HTTP/1.10", Some(400)),
            ("HTTP/10.0", Some(400)),
            ("HTTP/2", Some(400)),
            ("HTTP/2.0 x", Some(400)),
            ("HTTPS/1.1", Some(400)),
            ("FOO", Some(400)),
            ("", Some(400)),
        ];
        for &(version, want) in cases {
            let buf = req(&format!("GET / {version}"), &[]);
            assert_eq!(status(&parse(&buf)), want, "{version}");
        }
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), err(505, "HTTP version not supported"));
        // The HTTP/2 connection preface.
        assert_eq!(status(&parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), Some(505));
        // Until the line ends, an unsupported version might still turn out well-formed or not.
        assert_eq!(parse(b"GET / HTTP/2"), Parse::Partial);
        assert_eq!(parse(b"GET / HTTP/2.0"), Parse::Partial);
        assert_eq!(status(&parse(b"GET / HTTP/2x")), Some(400));
        assert_eq!(status(&parse(b"GET / HTTP/2.0\r")), Some(505));
    }

    #[test]
    fn header_count_limit() {
        let lines: Vec<String> = (0..MAX_HEADERS + 1).map(|i| format!("X-H{i}: v")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let ok = req("GET / HTTP/1.1", &refs[..MAX_HEADERS]);
        assert!(matches!(parse(&ok), Parse::Complete(_, n) if n == ok.len()));
        let over = req("GET / HTTP/1.1", &refs);
        assert_eq!(parse(&over), err(431, "too many request headers"));
    }

    #[test]
    fn header_size_limit() {
        // A 9000-byte header, whole and in parts, even before its line ends.
        let big = format!("X-Big: {}", "a".repeat(9000));
        let buf = req("GET / HTTP/1.1", &[&big]);
        let too_large = err(431, "request headers too large");
        assert_eq!(parse(&buf), too_large);
        assert_eq!(parse(&buf[..MAX_HEADER_BYTES]), too_large);
        assert_eq!(parse(&buf[..MAX_HEADER_BYTES + 100]), too_large);
        assert_eq!(parse(&buf[..MAX_HEADER_BYTES - 1]), Parse::Partial);
        // Many small headers adding up count the same.
        let lines: Vec<String> = (0..40).map(|i| format!("X-H{i}: {}", "b".repeat(250))).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(parse(&req("GET / HTTP/1.1", &refs)), too_large);
        // A head of exactly MAX_HEADER_BYTES is fine, one more byte is not.
        let base = req("GET / HTTP/1.1", &["X-Pad: "]).len();
        let pad = "p".repeat(MAX_HEADER_BYTES - base);
        let exact = req("GET / HTTP/1.1", &[&format!("X-Pad: {pad}")]);
        assert_eq!(exact.len(), MAX_HEADER_BYTES);
        assert!(matches!(parse(&exact), Parse::Complete(_, n) if n == MAX_HEADER_BYTES));
        let over = req("GET / HTTP/1.1", &[&format!("X-Pad: {pad}p")]);
        assert_eq!(parse(&over), too_large);
        // Body bytes after a small head do not count against the head.
        let mut with_body = req("POST / HTTP/1.1", &["Content-Length: 1024"]);
        with_body.extend(std::iter::repeat_n(b'x', 1024));
        assert!(matches!(parse(&with_body), Parse::Complete(r, _) if r.body.len() == 1024));
        // A request line that does not fit is a too-long target.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(parse(long.as_bytes()), err(414, "request line too long"));
    }

    #[test]
    fn malformed() {
        let client_hello: &[u8] = &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x1f, 0x7e, 0x00, 0x00, 0x20,
        ];
        let cases: &[&[u8]] = &[
            client_hello,
            b"\x00\x01\x02\x03\xff\xfe",
            b"\xde\xad\xbe\xef GET / HTTP/1.1\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\n X-Leading: space\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\r\n\r\n",
            b"\r\x00GET / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"{\"json\": true}\r\n\r\n",
            b"hello world\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(status(&parse(case)), Some(400), "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(complete(buf).1, buf.len());
    }

    #[test]
    fn content_length_values() {
        let ok: &[(&str, usize)] = &[
            ("0", 0),
            ("5", 5),
            ("005", 5),
            ("  5\t", 5),
            ("0000000000000000000000000000000000000000003", 3),
        ];
        for &(v, n) in ok {
            let mut buf = req("POST / HTTP/1.1", &[&format!("Content-Length: {v}")]);
            buf.extend_from_slice(&b"abcdefg"[..n]);
            let (r, used) = complete(&buf);
            assert_eq!((r.body.len(), used), (n, buf.len()), "{v}");
        }
        let bad = [
            "-1",
            "+5",
            "5 5",
            "0x10",
            "99999999999999999999999",
            "18446744073709551616",
            "",
            "5,5",
            "5, 5",
            "1e3",
            "5.0",
            "five",
            "\u{663}",
        ];
        for v in bad {
            let buf = req("POST / HTTP/1.1", &[&format!("Content-Length: {v}")]);
            assert_eq!(parse(&buf), err(400, "invalid Content-Length"), "{v:?}");
        }
    }

    #[test]
    fn repeated_content_length() {
        let mut same = req("POST / HTTP/1.1", &["Content-Length: 2", "content-length: 02"]);
        same.extend_from_slice(b"hi");
        assert_eq!(complete(&same).0.body, b"hi");
        let differ = req("POST / HTTP/1.1", &["Content-Length: 2", "Content-Length: 3"]);
        assert_eq!(parse(&differ), err(400, "conflicting Content-Length headers"));
        let differ = req("POST / HTTP/1.1", &["Content-Length: 2", "Content-Length: "]);
        assert_eq!(status(&parse(&differ)), Some(400));
    }

    #[test]
    fn body_too_large_before_it_arrives() {
        let too_large = err(413, "request body too large");
        for v in ["1025", "4294967296", "18446744073709551615"] {
            let buf = req("POST / HTTP/1.1", &[&format!("Content-Length: {v}")]);
            assert_eq!(parse(&buf), too_large, "{v}");
        }
        let buf = req("POST / HTTP/1.1", &["Content-Length: 1024"]);
        assert_eq!(parse(&buf), Parse::Partial);
        // A limit near usize::MAX cannot overflow the end offset.
        let huge = Limits { max_body: usize::MAX };
        let buf = req("POST / HTTP/1.1", &[&format!("Content-Length: {}", usize::MAX)]);
        assert_eq!(parse_request(&buf, &huge), too_large);
        let zero = Limits { max_body: 0 };
        let buf = req("POST / HTTP/1.1", &["Content-Length: 1"]);
        assert_eq!(parse_request(&buf, &zero), too_large);
    }

    #[test]
    fn transfer_encoding() {
        let cases: &[(&[&str], Parse<'static>)] = &[
            (&["Transfer-Encoding: chunked"], err(411, "Content-Length required")),
            (&["transfer-encoding: identity"], err(411, "Content-Length required")),
            (&["Transfer-Encoding:"], err(411, "Content-Length required")),
            (
                &["Transfer-Encoding: chunked", "Content-Length: 5"],
                err(400, "both Transfer-Encoding and Content-Length"),
            ),
            (
                &["Content-Length: 0", "TRANSFER-ENCODING: chunked"],
                err(400, "both Transfer-Encoding and Content-Length"),
            ),
        ];
        for (headers, want) in cases {
            let buf = req("POST / HTTP/1.1", headers);
            assert_eq!(&parse(&buf), want, "{headers:?}");
        }
    }

    #[test]
    fn body_partial_until_complete() {
        let buf = b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET";
        let head = buf.len() - 8;
        for end in head..head + 5 {
            assert_eq!(parse(&buf[..end]), Parse::Partial, "{end}");
        }
        let (r, used) = complete(buf);
        assert_eq!((r.body, used), (&b"hello"[..], head + 5));
        // No Content-Length: no body, whatever the method.
        let buf = b"POST /x HTTP/1.1\r\n\r\nhello";
        let (r, used) = complete(buf);
        assert_eq!((r.body, used), (&b""[..], buf.len() - 5));
    }

    #[test]
    fn keep_alive() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("HTTP/1.1", &[], true),
            ("HTTP/1.1", &["Connection: close"], false),
            ("HTTP/1.1", &["Connection: Close"], false),
            ("HTTP/1.1", &["connection: keep-alive"], true),
            ("HTTP/1.1", &["Connection: Upgrade, close"], false),
            ("HTTP/1.1", &["Connection: keep-alive", "Connection: close"], false),
            ("HTTP/1.1", &["Connection: closed"], true),
            ("HTTP/1.1", &["X-Connection: close"], true),
            ("HTTP/1.0", &[], false),
            ("HTTP/1.0", &["Connection: keep-alive"], true),
            ("HTTP/1.0", &["Connection: Keep-Alive"], true),
            ("HTTP/1.0", &["Connection: foo ,\tkeep-alive "], true),
            ("HTTP/1.0", &["Connection: keep-alive, close"], false),
            ("HTTP/1.0", &["Connection: close"], false),
            ("HTTP/1.0", &["Connection: keep-alivex"], false),
        ];
        for &(version, headers, want) in cases {
            let buf = req(&format!("GET / {version}"), headers);
            assert_eq!(complete(&buf).0.keep_alive, want, "{version} {headers:?}");
        }
    }

    #[test]
    fn duplicate_credentials_and_content_type() {
        let buf = req(
            "GET / HTTP/1.1",
            &["Authorization: Bearer a", "authorization: Bearer b"],
        );
        assert_eq!(parse(&buf), err(400, "more than one Authorization header"));
        let buf = req("GET / HTTP/1.1", &["Content-Type: a", "Content-Type: b"]);
        assert_eq!(parse(&buf), err(400, "more than one Content-Type header"));
    }

    #[test]
    fn byte_at_a_time_matches_all_at_once() {
        let cases: &[&[u8]] = &[
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
            b"POST /push HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 11\r\n\r\nhello world",
            b"GET / HTTP/2.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        ];
        for &case in cases {
            let want = parse(case);
            assert_ne!(want, Parse::Partial);
            let mut conn = Vec::new();
            for (i, &b) in case.iter().enumerate() {
                conn.push(b);
                let got = parse(&conn);
                if got != Parse::Partial {
                    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(case));
                    if let Parse::Complete(_, used) = got {
                        assert_eq!(used, i + 1);
                    }
                    break;
                }
                assert!(i + 1 < case.len(), "still Partial with the whole request");
            }
        }
    }

    #[test]
    fn pipelining() {
        /// (path, body, keep_alive) of one parsed request.
        type Seen<'a> = (&'a str, &'a [u8], bool);
        /// Parses requests off the front as a connection would; returns them and what is left.
        fn drain(mut rest: &[u8]) -> (Vec<Seen<'_>>, &[u8]) {
            let mut got = Vec::new();
            while let Parse::Complete(r, used) = parse(rest) {
                got.push((r.path, r.body, r.keep_alive));
                rest = &rest[used..];
            }
            (got, rest)
        }
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert_eq!(drain(two), (vec![("/a", &b""[..], true), ("/b", b"", false)], &b""[..]));

        let two_bodies =
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\n1PUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n22";
        assert_eq!(
            drain(two_bodies),
            (vec![("/a", &b"1"[..], true), ("/b", b"22", true)], &b""[..])
        );

        // Three complete requests, then the start of a fourth whose body has not all arrived.
        let fourth = b"POST /d HTTP/1.1\r\nContent-Length: 9\r\n\r\npart";
        let three = [
            &b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n"[..],
            b"DELETE /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy",
            fourth,
        ]
        .concat();
        let (got, rest) = drain(&three);
        assert_eq!(
            got,
            vec![("/a", &b"abc"[..], true), ("/b", b"", false), ("/c", b"xy", true)]
        );
        assert_eq!(rest, fourth);
        assert_eq!(parse(rest), Parse::Partial);
    }

    #[test]
    fn query_params() {
        let q = "a=1&b=x%20y&c=&d&e=%zz&f=%C3%A9&g=%FF&h=a+b&a=2&%69=j&k=%4&l=%2";
        let cases: &[(&str, Option<Result<&str, ()>>)] = &[
            ("a", Some(Ok("1"))),
            ("b", Some(Ok("x y"))),
            ("c", Some(Ok(""))),
            ("d", Some(Ok(""))),
            ("e", Some(Err(()))),
            ("f", Some(Ok("é"))),
            ("g", Some(Err(()))),
            ("h", Some(Ok("a+b"))),
            ("i", Some(Ok("j"))),
            ("k", Some(Err(()))),
            ("l", Some(Err(()))),
            ("missing", None),
            ("", None),
            ("a=1", None),
        ];
        for &(name, want) in cases {
            assert_eq!(query_param(q, name), want.map(|r| r.map(String::from)), "{name}");
        }
        assert_eq!(query_param("", "a"), None);
        assert_eq!(query_param("x=%2G&x=1", "x"), Some(Err(())));
        assert_eq!(query_param("%zz=1&y=2", "y"), Some(Ok("2".into())));
        assert_eq!(query_param("=v", ""), Some(Ok("v".into())));
    }

    #[test]
    fn percent_decoding() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"", Some(b"")),
            (b"abc", Some(b"abc")),
            (b"a%20b", Some(b"a b")),
            (b"%2f%2F", Some(b"//")),
            (b"%00%ff", Some(b"\x00\xff")),
            (b"+", Some(b"+")),
            (b"%", None),
            (b"%2", None),
            (b"%g0", None),
            (b"%0g", None),
            (b"a%", None),
            (b"%%41", None),
        ];
        for &(s, want) in cases {
            assert_eq!(percent_decode(s).as_deref(), want, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn bearer_tokens() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER   abc.def-_~+/=", Some(b"abc.def-_~+/=")),
            (b"  Bearer abc  ", Some(b"abc")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Bearer    ", None),
            (b"Bearerabc", None),
            (b"Bearer\tabc", None),
            (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
            (b"Token abc", None),
            (b"", None),
            (b"Bear", None),
        ];
        for &(v, want) in cases {
            assert_eq!(bearer_token(v), want, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn constant_time_equality() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"secret", b"secret", true),
            (b"secret", b"secreT", false),
            (b"secret", b"Secret", false),
            (b"secret", b"secret1", false),
            (b"secret", b"", false),
            (b"\x00", b"\x80", false),
        ];
        for &(a, b, want) in cases {
            assert_eq!(constant_time_eq(a, b), want);
            assert_eq!(constant_time_eq(b, a), want);
        }
    }

    #[test]
    fn response_bytes() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            "text/plain",
            &[("X-A", "1"), ("Retry-After", "2")],
            b"hi",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
        out.clear();
        write_response(&mut out, 404, "", &[], b"", false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        write_response(&mut out, 204, "", &[], b"ignored", true);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
        out.clear();
        write_response(&mut out, 400, "", &[("X-Evil", "a\r\nSet-Cookie: b")], b"", true);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nX-Evil: a  Set-Cookie: b\r\nContent-Length: 0\r\n\r\n"
        );
        out.clear();
        write_response(&mut out, 7, "", &[], b"", true);
        assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    }

    #[test]
    fn reason_phrases() {
        let cases = [
            (200, "OK"),
            (202, "Accepted"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (414, "URI Too Long"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
            (418, "Status"),
            (299, "Status"),
        ];
        for (code, phrase) in cases {
            let mut out = Vec::new();
            write_response(&mut out, code, "", &[], b"", true);
            let line = format!("HTTP/1.1 {code} {phrase}\r\n");
            assert!(out.starts_with(line.as_bytes()), "{code}");
        }
    }

    #[test]
    fn json_errors_are_escaped() {
        let mut out = Vec::new();
        write_json_error(
            &mut out,
            401,
            "bad \"token\"\n\x01\\",
            &[("WWW-Authenticate", "Bearer")],
            false,
        );
        let body = br#"{"error":"bad \"token\"\n\u0001\\"}"#;
        let want = [
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat();
        assert_eq!(out, want);
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let v: serde_json::Value = serde_json::from_slice(&out[head_end..]).unwrap();
        assert_eq!(v["error"], "bad \"token\"\n\x01\\");
    }

    /// Deterministic pseudo-random requests, valid pieces mixed with noise: the parser must not
    /// panic, must move forward through pipelined requests, must answer Partial only while the
    /// request can still fit, and must give the same answer for every prefix (Partial or final).
    #[test]
    fn fuzz_deterministic() {
        const METHODS: &[&[u8]] = &[
            b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"get", b"BREW", b"", b"G\x00T",
        ];
        const TARGETS: &[&[u8]] = &[
            b"/",
            b"/clients/a%20b?x=1&y",
            b"/\xc3\xa9",
            b"/a?b#c",
            b"*",
            b"http://h/",
            b"",
        ];
        const VERSIONS: &[&[u8]] = &[
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/1.1",
            b"HTTP/2.0",
            b"HTTP/1.",
            b"HTTP/1.1 ",
            b"FOO",
        ];
        const HEADERS: &[&[u8]] = &[
            b"Host: x\r\n",
            b"Connection: keep-alive\r\n",
            b"Authorization: Bearer t\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 0\r\n",
            b"Content-Length: 99999\r\n",
            b"Content-Length: -1\r\n",
            b"Content-Length: 5 5\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"Content-Type: application/json\r\n",
            b"X-A: b\r\n",
            b"X-A:\r\n",
            b" folded\r\n",
            b"NoColon\r\n",
            b"X-B: \x01\r\n",
            b"\n",
        ];
        const NOISE: &[&[u8]] = &[
            b"\r\n",
            b"\r",
            b"\n",
            b":",
            b" ",
            b"\x00",
            b"\xff\xfe",
            b"\x16\x03\x01",
            b"#",
            b"?",
        ];
        fn check<'a>(buf: &'a [u8], limits: &Limits, bound: usize) -> Parse<'a> {
            let r = parse_request(buf, limits);
            match &r {
                Parse::Partial => assert!(buf.len() < bound, "Partial at {} bytes", buf.len()),
                Parse::Complete(_, used) => assert!(*used > 0 && *used <= buf.len()),
                Parse::Error(e) => assert!([400, 411, 413, 414, 431, 505].contains(&e.status), "{e:?}"),
            }
            r
        }

        let limits = Limits { max_body: 300 };
        let bound = MAX_HEADER_BYTES + limits.max_body;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut outcomes = [0usize; 3];
        let mut over_bound = 0;
        for i in 0..20_000 {
            let mut buf = Vec::new();
            // Mostly well-formed pipelined requests, each part occasionally swapped for a bad one.
            for _ in 0..1 + next(4) {
                let pick = |next: &mut dyn FnMut(usize) -> usize, list: &[&'static [u8]]| {
                    // The first few entries of each list are the common, valid ones.
                    if next(8) == 0 {
                        list[next(list.len())]
                    } else {
                        list[next(list.len().min(3))]
                    }
                };
                buf.extend_from_slice(pick(&mut next, METHODS));
                buf.push(b' ');
                buf.extend_from_slice(pick(&mut next, TARGETS));
                buf.push(b' ');
                buf.extend_from_slice(pick(&mut next, VERSIONS));
                buf.extend_from_slice(b"\r\n");
                for _ in 0..next(5) {
                    buf.extend_from_slice(pick(&mut next, HEADERS));
                }
                match next(20) {
                    0 => buf.extend(std::iter::repeat_n(b'h', 7000 + next(3000))),
                    1 => {
                        let len = next(limits.max_body + 1);
                        buf.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                        buf.extend(std::iter::repeat_n(b'b', len));
                    }
                    _ => buf.extend_from_slice(b"\r\n"),
                }
                if next(10) == 0 {
                    buf.extend_from_slice(b"hello");
                }
            }
            // Noise: random bytes, noise pieces, flipped bytes, or a cut.
            for _ in 0..next(4).saturating_sub(1) {
                let at = next(buf.len() + 1);
                match next(4) {
                    0 => {
                        let junk: Vec<u8> = (0..1 + next(8)).map(|_| next(256) as u8).collect();
                        buf.splice(at..at, junk);
                    }
                    1 => {
                        buf.splice(at..at, NOISE[next(NOISE.len())].iter().copied());
                    }
                    2 if at < buf.len() => buf[at] = next(256) as u8,
                    _ => buf.truncate(at),
                }
            }
            over_bound += usize::from(buf.len() > bound);

            // Walk the pipeline as a connection would.
            let mut rest = buf.as_slice();
            loop {
                match check(rest, &limits, bound) {
                    Parse::Complete(_, used) => {
                        outcomes[0] += 1;
                        rest = &rest[used..];
                    }
                    Parse::Partial => {
                        outcomes[1] += 1;
                        break;
                    }
                    Parse::Error(_) => {
                        outcomes[2] += 1;
                        break;
                    }
                }
            }
            // Every split point of some of them.
            if i % 400 == 0 {
                let whole = check(&buf, &limits, bound);
                for k in 0..buf.len() {
                    let got = check(&buf[..k], &limits, bound);
                    assert!(
                        got == Parse::Partial || got == whole,
                        "split {k} of {:?}",
                        String::from_utf8_lossy(&buf)
                    );
                }
            }
        }
        // The generator must reach every outcome and the bound, else the test proves little.
        assert!(outcomes.iter().all(|&n| n > 1000), "{outcomes:?}");
        assert!(over_bound > 100, "{over_bound}");
    }
}
