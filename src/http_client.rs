//! The HTTP client of the helper threads that talk to the backend (the auth
//! webhook, forwarding): one way to build it, to check its URL and headers,
//! and to show its URL without secrets.

use std::sync::Arc;
use std::time::Duration;

use ureq::http::{HeaderName, HeaderValue, Uri};
use ureq::tls::{TlsConfig, TlsProvider};

/// Headers a `--forward-header` may not set: the request's own framing.
pub const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// An agent for one backend: each call bounded by `timeout` (connect to last
/// byte), up to `idle` connections kept alive between calls.
pub fn agent(timeout: Duration, idle: usize) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        // Statuses are answers to read, not errors.
        .http_status_as_error(false)
        // A redirect is not an answer: the backend must answer itself.
        .max_redirects(0)
        // Straight to the backend: ureq would take HTTPS_PROXY for http://
        // URLs too, and the webhook's cookies and credentials with it.
        .proxy(None)
        .timeout_global(Some(timeout))
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .user_agent(concat!("wsbeat/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// Whether `url` is an `http://` or `https://` URL with a host; why not,
/// otherwise (without repeating the URL: it may hold a secret).
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// A header to add to every request: a valid name, not one of
/// [`RESERVED_HEADERS`], and a value a header can hold (which the error
/// does not repeat: it is typically a credential).
pub fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = (name.trim(), value.trim());
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{name}' is not a header name"))?;
    if RESERVED_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(format!("'{name}' is set by wsbeat"));
    }
    let value = HeaderValue::from_str(value).map_err(|_| "the value holds characters a header cannot".to_string())?;
    Ok((parsed, value))
}

/// Parses a `--forward-header` value, `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| "expected \"Name: value\"".to_string())?;
    check_header(name, value)?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// `url` as logs and `Debug` show it: scheme, host and port, no
/// credentials, path or query.
pub fn shown_url(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme_str().unwrap_or("?"),
            u.host().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(bad URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(check_url("http://127.0.0.1:9/x?y"), Ok(()));
        assert_eq!(check_url("https://backend"), Ok(()));
        for bad in ["ftp://h/", "not a url", "http://", "/path"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(shown_url("http://u:p@h:1/x?key=secret"), "http://h:1");
        assert_eq!(shown_url("https://h/p@q"), "https://h");
        assert_eq!(shown_url("not a url"), "(bad URL)");
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header(" Authorization :  Bearer x "),
            Ok(("Authorization".into(), "Bearer x".into()))
        );
        for bad in ["no colon", "bad name: v", "Content-Length: 5", "host: h", "X: a\u{7f}b"] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }
}
