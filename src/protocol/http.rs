//! HTTP/1.1 pieces both request parsers use — the WebSocket upgrade
//! ([`super::handshake`]) and the admin API (`crate::admin::http`): the
//! size limits, header-value helpers, reason phrases and query strings.

/// Request line plus headers larger than this are refused (`431`).
pub const MAX_HEADER_BYTES: usize = 8192;
/// More header lines than this are refused (`431`) too.
pub const MAX_HEADERS: usize = 64;

/// Strips spaces and tabs (optional whitespace in HTTP) from both ends.
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The trimmed elements of a comma-separated header value.
pub fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim)
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
pub fn has_token(v: &[u8], token: &[u8]) -> bool {
    list(v).any(|t| t.eq_ignore_ascii_case(token))
}

/// The reason phrase for every status the server sends; "Status" for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// The `key=value` pairs of a query string, raw (not percent-decoded); a
/// pair without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The value of query parameter `name` (first occurrence), percent-decoded (`%XX` only; `+` stays
/// `+`). Outer None: absent. Inner Err(()): malformed escape or not UTF-8. Keys are compared after
/// percent-decoding; a key that does not decode matches nothing.
#[allow(clippy::result_unit_err)] // the caller only needs "bad parameter", there is nothing to say
pub fn query_param(query: &str, name: &str) -> Option<Result<String, ()>> {
    query_pairs(query).find_map(|(key, value)| {
        let matches = if key.contains('%') {
            percent_decode(key.as_bytes()).is_some_and(|k| k == name.as_bytes())
        } else {
            key == name
        };
        matches.then(|| {
            percent_decode(value.as_bytes())
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or(())
        })
    })
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`); `None` on a
/// malformed escape. Bytes, not checked as UTF-8.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_optional_whitespace() {
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"\r\n"), b"\r\n");
        assert_eq!(trim(b"   "), b"");
    }

    #[test]
    fn token_lists() {
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"keep-alive, Upgrades", b"upgrade"));
        assert_eq!(list(b"a ,b,, c").collect::<Vec<_>>(), [&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn queries() {
        assert_eq!(query_param("a=1&b=%41&a=2", "a"), Some(Ok("1".into())));
        assert_eq!(query_param("a=1&b=%41", "b"), Some(Ok("A".into())));
        assert_eq!(query_param("%61=x", "a"), Some(Ok("x".into())));
        assert_eq!(query_param("a=%zz", "a"), Some(Err(())));
        assert_eq!(query_param("a", "a"), Some(Ok(String::new())));
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(percent_decode(b"a%2Fb+c"), Some(b"a/b+c".to_vec()));
        assert_eq!(percent_decode(b"%4"), None);
    }
}
