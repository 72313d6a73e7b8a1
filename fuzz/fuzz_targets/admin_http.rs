//! The admin API's HTTP/1.1 request parser, `admin::http::parse_request`, on arbitrary bytes taken
//! as one connection's pipelined requests, plus the helpers the API applies to what it parsed
//! (`query_param`, `bearer_token`, `percent_decode`) and the response writers.
//!
//! Input layout:
//!   byte 0      max_body: 0..=253 -> b * 4; 254 -> u32::MAX; 255 -> usize::MAX
//!   the rest    what the client sent
//!
//! Checked:
//! - walking the pipeline (after `Complete(_, used)` go on at `buf[used..]`): 0 < used <= what is
//!   left, the body is the last bytes of the request and within max_body, the path starts with
//!   '/' and holds no '?' or '#'; `Partial` only while what is left could still fit
//!   (< MAX_HEADER_BYTES + max_body); errors carry a status the module documents;
//! - for the first requests of the pipeline, every prefix (all for short inputs, a sample plus
//!   the request's end otherwise) parses to `Partial` or to exactly the same result (the
//!   property the module documents);
//! - `percent_decode`, `query_param` and `bearer_token` agree with plain reference versions, on
//!   parsed fields and on raw slices of the input;
//! - responses written for parsed requests and errors (`write_response`, `write_json_error`),
//!   with client-controlled text in a header, are one HTTP/1.1 response with exactly the headers
//!   written (no injected ones) and a `Content-Length` that matches the body.
#![no_main]

mod common;

use common::{header, parse_response};
use libfuzzer_sys::fuzz_target;
use wsbeat::admin::http::{
    Limits, MAX_HEADER_BYTES, Parse, bearer_token, parse_request, percent_decode, query_param, write_json_error,
    write_response,
};

fn ref_percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn ref_query_param(query: &str, name: &str) -> Option<Result<String, ()>> {
    for pair in query.split('&') {
        let (k, v) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        if ref_percent_decode(k.as_bytes()).as_deref() == Some(name.as_bytes()) {
            return Some(
                ref_percent_decode(v.as_bytes())
                    .and_then(|v| String::from_utf8(v).ok())
                    .ok_or(()),
            );
        }
    }
    None
}

fn ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn ref_trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|&b| !ows(b)).unwrap_or(v.len());
    let e = v.iter().rposition(|&b| !ows(b)).map_or(s, |e| e + 1);
    &v[s..e]
}

fn ref_bearer(v: &[u8]) -> Option<&[u8]> {
    let v = ref_trim(v);
    if v.len() < 7 || !v[..6].eq_ignore_ascii_case(b"bearer") || v[6] != b' ' {
        return None;
    }
    let t = ref_trim(&v[6..]);
    (!t.is_empty()).then_some(t)
}

fn check_helpers(bytes: &[u8]) {
    assert_eq!(percent_decode(bytes), ref_percent_decode(bytes));
    assert_eq!(bearer_token(bytes), ref_bearer(bytes));
    let text = String::from_utf8_lossy(bytes);
    // Names: fixed ones, and the first key of the text itself (raw and decoded).
    let first_key = text.split('&').next().unwrap_or("").split('=').next().unwrap_or("");
    let decoded_key = percent_decode(first_key.as_bytes()).and_then(|k| String::from_utf8(k).ok());
    let mut names = vec!["limit", "id", "client_id", "", first_key];
    if let Some(k) = decoded_key.as_deref() {
        names.push(k);
    }
    for name in names {
        assert_eq!(
            query_param(&text, name),
            ref_query_param(&text, name),
            "query {text:?}, name {name:?}"
        );
    }
}

/// A response with client-controlled text in one header must have exactly the headers written.
fn check_response(status: u16, echo: &[u8], body: &[u8], keep_alive: bool, json_message: Option<&'static str>) {
    let echo = String::from_utf8_lossy(echo);
    let extra = [("X-Echo", echo.as_ref())];
    let mut out = Vec::new();
    match json_message {
        Some(m) => write_json_error(&mut out, status, m, &extra, keep_alive),
        None => write_response(&mut out, status, "application/json", &extra, body, keep_alive),
    }
    let (hs, n) = parse_response(&out, status);
    let bodyless = status < 200 || status == 204 || status == 304;
    let want_headers = 2 + usize::from(!bodyless) + usize::from(!keep_alive);
    assert_eq!(hs.len(), want_headers, "headers of {:?}", String::from_utf8_lossy(&out));
    assert!(header(&hs, "x-echo").is_some());
    if bodyless {
        assert_eq!(n, out.len());
    } else {
        let len: usize = std::str::from_utf8(header(&hs, "content-length").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, out.len() - n);
        if json_message.is_none() {
            assert_eq!(&out[n..], body);
        }
    }
    assert_eq!(!keep_alive, header(&hs, "connection") == Some(b"close"));
}

/// Checks one parse of `buf` and returns it.
fn check<'a>(buf: &'a [u8], limits: &Limits) -> Parse<'a> {
    let r = parse_request(buf, limits);
    match &r {
        Parse::Partial => {
            assert!(
                buf.len() < MAX_HEADER_BYTES.saturating_add(limits.max_body),
                "Partial with {} bytes",
                buf.len()
            );
        }
        Parse::Complete(req, used) => {
            assert!(*used > 0 && *used <= buf.len(), "used {used} of {}", buf.len());
            assert!(req.body.len() <= limits.max_body);
            assert_eq!(req.body, &buf[used - req.body.len()..*used]);
            assert!(req.path.starts_with('/'), "path {:?}", req.path);
            assert!(!req.path.contains(['?', '#']) && !req.query.contains('#'));
        }
        Parse::Error(e) => {
            assert!([400, 411, 413, 414, 431, 505].contains(&e.status), "{e:?}");
        }
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_body: match sel {
            0..=253 => sel as usize * 4,
            254 => u32::MAX as usize,
            255 => usize::MAX,
        },
    };

    check_helpers(input);

    let mut rest = input;
    let mut index = 0;
    loop {
        let r = check(rest, &limits);
        if index < 4 {
            // Prefixes of this request: Partial, or the same answer.
            let len = rest.len();
            let mut cuts: Vec<usize> = if len <= 400 {
                (0..len).collect()
            } else {
                (0..64).map(|i| i * len / 64).collect()
            };
            if let Parse::Complete(_, used) = &r {
                cuts.extend([used - 1, *used]);
            }
            cuts.extend([MAX_HEADER_BYTES - 1, MAX_HEADER_BYTES]);
            cuts.retain(|&k| k < len);
            for k in cuts {
                let p = check(&rest[..k], &limits);
                assert!(p == Parse::Partial || p == r, "prefix {k}: {p:?}, whole: {r:?}");
            }
        }
        index += 1;
        match r {
            Parse::Complete(req, used) => {
                check_helpers(req.path.as_bytes());
                check_helpers(req.query.as_bytes());
                if let Some(a) = req.authorization {
                    check_helpers(a);
                }
                check_response(200, req.query.as_bytes(), req.body, req.keep_alive, None);
                check_response(204, req.authorization.unwrap_or(b""), req.body, req.keep_alive, None);
                rest = &rest[used..];
            }
            Parse::Error(e) => {
                check_response(e.status, rest.get(..64).unwrap_or(rest), b"", false, Some(e.message));
                break;
            }
            Parse::Partial => break,
        }
    }
});
