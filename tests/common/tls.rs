//! TLS for the integration tests: certificates made at test time, a rustls
//! client (under tungstenite for `wss://`, or alone for the admin API), and
//! the raw bytes of handshakes the server must refuse.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

use super::{DEADLINE, Proc, Response, start_binary, wait_until, wsbeat_on_free_ports};

/// A self-signed certificate for `localhost` and its key, as PEM.
pub struct Cert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// The key as PKCS#8 DER.
    key_der: Vec<u8>,
}

impl Cert {
    /// ECDSA P-256.
    pub fn generate() -> Cert {
        Cert::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    pub fn generate_for(alg: &'static rcgen::SignatureAlgorithm) -> Cert {
        let key = rcgen::KeyPair::generate_for(alg).expect("key pair");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("certificate");
        Cert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// The key in its algorithm's own format instead of PKCS#8: PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), which is what
    /// PKCS#8 wraps.
    pub fn traditional_key_pem(&self, label: &str) -> String {
        use base64::Engine;
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING, ... }
        let (_, info, _) = der_tlv(&self.key_der);
        let (_, _, rest) = der_tlv(info);
        let (_, _, rest) = der_tlv(rest);
        let (tag, inner, _) = der_tlv(rest);
        assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    /// Writes both files (over what was there: the server reads them only
    /// at start-up and on SIGHUP).
    pub fn write(&self, files: &Files) {
        std::fs::write(&files.cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&files.key, &self.key_pem).expect("write key.pem");
    }
}

/// One DER element at the start of `der`: its tag, its contents, and what
/// follows it.
fn der_tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, start) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            (der[2..2 + k].iter().fold(0, |acc, &b| acc << 8 | b as usize), 2 + k)
        }
    };
    (tag, &der[start..start + len], &der[start + len..])
}

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsbeat-tls-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The paths given to `--tls-cert` and `--tls-key`.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn in_dir(dir: &TempDir, prefix: &str) -> Files {
        Files {
            cert: dir.join(&format!("{prefix}cert.pem")),
            key: dir.join(&format!("{prefix}key.pem")),
        }
    }
}

/// `wsbeat` serving `wss://` with a fresh certificate. The process is
/// killed before the files are removed (fields drop in order).
pub struct WssServer {
    pub proc: Proc,
    pub files: Files,
    /// The certificate it started with.
    pub cert: Cert,
    _dir: TempDir,
}

impl WssServer {
    pub fn addr(&self) -> SocketAddr {
        self.proc.addr
    }

    pub fn admin(&self) -> SocketAddr {
        self.proc.admin
    }

    /// A client configuration trusting the certificate it started with.
    pub fn client(&self) -> Arc<ClientConfig> {
        client_config(&self.cert.der)
    }

    pub fn hup(&self) {
        hup(&self.proc);
    }

    pub fn wait_log(&self, parts: &[&str]) -> String {
        wait_log(&self.proc, parts)
    }
}

/// Sends the process SIGHUP.
pub fn hup(p: &Proc) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(p.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP: {status}");
}

/// Waits for a log line of `p` containing every one of `parts`, and
/// returns it.
pub fn wait_log(p: &Proc, parts: &[&str]) -> String {
    let mut found = None;
    wait_until(&format!("a log line with {parts:?}"), || {
        found = p
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| parts.iter().all(|part| l.contains(part)))
            .cloned();
        found.is_some()
    });
    found.unwrap()
}

/// Starts `wsbeat --tls-cert … --tls-key …` with `args` on free ports.
pub fn start_wss(args: &[&str]) -> WssServer {
    start_wss_with(Cert::generate(), None, args)
}

/// Like [`start_wss`], with `cert`, and `key_pem` instead of its own PEM
/// if given.
pub fn start_wss_with(cert: Cert, key_pem: Option<&str>, args: &[&str]) -> WssServer {
    let dir = TempDir::new("server");
    let files = Files::in_dir(&dir, "");
    cert.write(&files);
    if let Some(pem) = key_pem {
        std::fs::write(&files.key, pem).expect("write key.pem");
    }
    let mut cmd = wsbeat_on_free_ports();
    cmd.arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .args(args);
    let proc = start_binary(cmd);
    assert!(
        proc.startup_log.iter().any(|l| l.contains("listening on wss://")),
        "{:?}",
        proc.startup_log
    );
    WssServer {
        proc,
        files,
        cert,
        _dir: dir,
    }
}

/// A client trusting `root` only, offering TLS 1.3 and 1.2, no ALPN.
pub fn client_config(root: &CertificateDer<'static>) -> Arc<ClientConfig> {
    client_config_with(root, &[&rustls::version::TLS13, &rustls::version::TLS12], &[])
}

/// A client trusting `root` only, offering `versions` and `alpn`.
pub fn client_config_with(
    root: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).expect("root certificate");
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` as `localhost` and completes the TLS handshake; the
/// error is the handshake's (a refused certificate, an alert received).
pub fn tls_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    tcp.set_nodelay(true)?;
    let conn = ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).expect("client");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The rustls error under a failed [`tls_connect`].
pub fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A WebSocket client over rustls.
pub type Wss = tungstenite::WebSocket<TlsStream>;

/// A `wss://` client upgraded on `/?{query}`, reads bounded by [`DEADLINE`].
pub fn wss_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>, query: &str) -> Wss {
    let s = tls_connect(addr, cfg).expect("TLS handshake");
    let url = format!("wss://localhost:{}/?{query}", addr.port());
    let (ws, resp) = tungstenite::client(url, s).unwrap_or_else(|e| panic!("upgrade: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message other than a server heartbeat (pings are answered
/// by tungstenite).
pub fn next_text(ws: &mut Wss) -> String {
    super::read_text(ws)
}

/// The next binary message.
pub fn next_binary(ws: &mut Wss) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Binary(b) => return b.to_vec(),
            tungstenite::Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Sends `text` and expects it back (the server runs with `--echo`).
pub fn assert_echo(ws: &mut Wss, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("send");
    assert_eq!(next_text(ws), text);
}

/// The certificate the server presented on `ws`'s connection.
pub fn peer_cert(ws: &Wss) -> CertificateDer<'static> {
    ws.get_ref().conn.peer_certificates().expect("peer certificates")[0].clone()
}

/// One request to the admin API over TLS, on a fresh connection.
pub fn https(
    admin: SocketAddr,
    cfg: &Arc<ClientConfig>,
    method: &str,
    target: &str,
    extra: &str,
    body: &[u8],
) -> Response {
    let mut s = tls_connect(admin, cfg).expect("admin TLS handshake");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: admin\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).expect("write");
    s.flush().expect("flush");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                return Response {
                    status: head[9..12].parse().unwrap(),
                    body: buf[i + 4..i + 4 + len].to_vec(),
                    head,
                };
            }
        }
        let n = s.read(&mut tmp).expect("read a response");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The value of the `/metrics` line named `name` exactly, over TLS.
pub fn metric_https(admin: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> u64 {
    super::metric_in(&https(admin, cfg, "GET", "/metrics", "", b"").text(), name)
}

/// Everything the server sends until it closes the connection (a reset
/// counts as closed), and how long that took. `s` has a read timeout.
pub fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return (got, t.elapsed()),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("not closed within the read timeout; got {got:02x?}")
            }
            Err(_) => return (got, t.elapsed()),
        }
    }
}

/// What a rustls client offering TLS 1.3 and 1.2 sends first: its
/// ClientHello record(s).
pub fn client_hello(cfg: &Arc<ClientConfig>) -> Vec<u8> {
    let mut c = ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    wire
}

/// A ClientHello that offers TLS 1.1 at most (no supported_versions), with
/// the signature_algorithms extension rustls needs to get as far as the
/// version check.
pub fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0x00, 0x35]); // AES-CBC suites
    body.extend_from_slice(&[1, 0]); // null compression
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pkcs1_sha256.
    body.extend_from_slice(&[0, 10, 0x00, 0x0d, 0, 6, 0, 4, 0x04, 0x03, 0x04, 0x01]);
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

/// A path that exists nowhere.
pub fn missing(dir: &TempDir) -> PathBuf {
    dir.join("no-such-file.pem")
}

/// `path` as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}
