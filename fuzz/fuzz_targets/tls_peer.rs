//! TLS for the targets that speak it (`mod tls_peer;`): the server's configuration as
//! `TlsCerts::load` builds it from `--tls-cert`/`--tls-key`, rustls clients (buffered API,
//! aws-lc-rs) for each protocol version and a suite of each kind, an in-memory handshake between
//! such a client and a `TlsLink`, ciphertext cut into the reads an input chooses, and a check of
//! TLS record framing that does not use rustls.
#![allow(dead_code)]

use std::io::Read;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion,
};
use wsbeat::tls::{TlsCerts, TlsFiles, TlsLink};

/// The clients, by index: TLS 1.3 with AES-128-GCM or ChaCha20-Poly1305, then TLS 1.2 (ECDHE-ECDSA)
/// with the same two AEADs. GCM in TLS 1.2 carries an explicit nonce, ChaCha20 does not.
fn clients() -> [(&'static SupportedProtocolVersion, SupportedCipherSuite); 4] {
    use aws_lc_rs::cipher_suite as cs;
    [
        (&rustls::version::TLS13, cs::TLS13_AES_128_GCM_SHA256),
        (&rustls::version::TLS13, cs::TLS13_CHACHA20_POLY1305_SHA256),
        (&rustls::version::TLS12, cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        (
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

struct Setup {
    server: Arc<ServerConfig>,
    clients: Vec<Arc<ClientConfig>>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // One key pair per process: making one per input would take most of each run.
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
        // Through files and TlsCerts, as the server loads them: the same checks, ALPN, ticketer.
        let dir = std::env::temp_dir().join(format!("wsbeat-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).expect("writing cert.pem");
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("writing key.pem");
        let certs = TlsCerts::load(files);
        let _ = std::fs::remove_dir_all(&dir);
        let server = certs.expect("the server takes the certificate").current();
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).expect("a trust anchor");
        let clients = clients()
            .into_iter()
            .map(|(version, suite)| {
                // X25519 only: the cheapest key exchange, so handshakes cost little per input.
                let provider = CryptoProvider {
                    cipher_suites: vec![suite],
                    kx_groups: vec![aws_lc_rs::kx_group::X25519],
                    ..aws_lc_rs::default_provider()
                };
                let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
                    .with_protocol_versions(&[version])
                    .expect("a client configuration")
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                c.alpn_protocols = vec![wsbeat::tls::ALPN_HTTP11.to_vec()];
                // Every input gets a full handshake: a ticket kept from an earlier input would
                // make a run depend on the ones before it.
                c.resumption = Resumption::disabled();
                Arc::new(c)
            })
            .collect();
        Setup { server, clients }
    })
}

/// The server's configuration, as a connection accepted now gets it.
pub fn server_config() -> Arc<ServerConfig> {
    setup().server.clone()
}

/// Client `i % 4` (see `clients`), connecting to `localhost`.
pub fn client(i: usize) -> ClientConnection {
    let cfg = setup().clients[i % 4].clone();
    ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).expect("a client connection")
}

/// Cuts a byte stream into reads of `b + 1` bytes (1 to 256) for the input's sizes `b`, cycled
/// and carried on from one call to the next; everything in one read when there are no sizes.
pub struct Reads<'a> {
    sizes: &'a [u8],
    next: usize,
}

impl<'a> Reads<'a> {
    pub fn new(sizes: &'a [u8]) -> Self {
        Reads { sizes, next: 0 }
    }

    pub fn cut(&mut self, len: usize) -> Vec<Range<usize>> {
        if self.sizes.is_empty() {
            return (len > 0).then_some(0..len).into_iter().collect();
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < len {
            let n = (self.sizes[self.next % self.sizes.len()] as usize + 1).min(len - at);
            self.next += 1;
            out.push(at..at + n);
            at += n;
        }
        out
    }
}

/// Gives the client what the server sent and appends the plaintext it yields to `plain`. `Ok(true)`
/// once the server's close_notify has come; `Err` with what the client said when it refused a
/// record (for an alert from the server, `AlertReceived`).
pub fn client_reads(c: &mut ClientConnection, wire: &[u8], plain: &mut Vec<u8>) -> Result<bool, rustls::Error> {
    let mut rest = wire;
    let mut closed = false;
    let mut buf = [0; 4096];
    loop {
        if !rest.is_empty() {
            c.read_tls(&mut rest).expect("the client reads from a slice");
        }
        c.process_new_packets()?;
        // Its plaintext is taken each time, so the client's buffer never fills.
        loop {
            match c.reader().read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("the client's reader: {e}"),
            }
        }
        if rest.is_empty() {
            return Ok(closed);
        }
    }
}

/// What the client wants to send now.
pub fn client_writes(c: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).expect("the client writes to a vector");
    }
    wire
}

/// A complete handshake between `c` and `link` in memory, each of the client's flights given to
/// the link in the reads `reads` cuts, and all the server sent processed by the client.
pub fn handshake(c: &mut ClientConnection, link: &mut TlsLink, reads: &mut Reads) {
    let (mut plain, mut client_plain) = (Vec::new(), Vec::new());
    // Both TLS 1.2 and 1.3 take three flights or fewer; the bound only catches a stall.
    for _ in 0..8 {
        let mut wire = client_writes(c);
        let mut back = Vec::new();
        for r in reads.cut(wire.len()) {
            if let Err(f) = link.receive(&mut wire[r], &mut plain, &mut back) {
                panic!("the handshake failed: {f}");
            }
            assert!(plain.is_empty(), "plaintext during the handshake: {plain:?}");
            assert!(link.buffered_bytes() <= MAX_BUFFERED, "{link:?}");
        }
        check_records(&back);
        if let Err(e) = client_reads(c, &back, &mut client_plain) {
            panic!("the client refused the server's handshake: {e}");
        }
        if wire.is_empty() && back.is_empty() {
            break;
        }
    }
    assert!(link.is_established() && !c.is_handshaking(), "no handshake: {link:?}");
    assert_eq!(link.alpn(), Some(wsbeat::tls::ALPN_HTTP11));
    assert_eq!(link.version(), c.protocol_version());
    assert!(
        client_plain.is_empty(),
        "application data during the handshake: {client_plain:?}"
    );
}

/// The largest record a peer may send: header and 2^14 bytes plus the expansion TLS 1.2 allows
/// (TLS 1.3 allows 256).
pub const MAX_RECORD: usize = 5 + (1 << 14) + 2048;

/// What a link may keep between reads, whatever it is sent (its `MAX_PARTIAL`): the records of
/// one handshake message (rustls caps one at 64 KiB) or one whole record, in a buffer of its own
/// size.
pub const MAX_BUFFERED: usize = 0x1_0000 + MAX_RECORD;

/// Checks that `wire` is whole TLS records (RFC 8446 §5.1, RFC 5246 §6.2): a content type of
/// TLS 1.2/1.3 (change_cipher_spec, alert, handshake, application_data), a 3.x version and a
/// length within the limit. Returns how many there are, and the content type of the last one.
pub fn check_records(wire: &[u8]) -> (usize, Option<u8>) {
    let mut rest = wire;
    let mut n = 0;
    let mut last = None;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut record header in what the server sent: {wire:?}");
        let (ty, major, len) = (rest[0], rest[1], u16::from_be_bytes([rest[3], rest[4]]) as usize);
        assert!((20..=23).contains(&ty), "record content type {ty}: {wire:?}");
        assert_eq!(major, 3, "record version {major}.{}: {wire:?}", rest[2]);
        assert!(len <= MAX_RECORD - 5, "a {len}-byte record");
        assert!(rest.len() >= 5 + len, "a cut record in what the server sent: {wire:?}");
        rest = &rest[5 + len..];
        n += 1;
        last = Some(ty);
    }
    (n, last)
}
