//! The link against rustls's own client, in memory: handshakes, records
//! split anywhere, failures and their alerts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;

struct Pair {
    dir: PathBuf,
    files: TlsFiles,
    cert: CertificateDer<'static>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pair(name: &str) -> Pair {
    let dir = std::env::temp_dir().join(format!("wsbeat-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    Pair {
        dir,
        files,
        cert: ck.cert.der().clone(),
    }
}

fn client_config(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn client(cfg: ClientConfig) -> ClientConnection {
    ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Moves everything the client wants to send into the link, `chunk` bytes
/// at a time, and the link's answers back; returns the plaintext received.
fn pump(c: &mut ClientConnection, link: &mut TlsLink, chunk: usize) -> Result<Vec<u8>, Failure> {
    let mut plain = Vec::new();
    for _ in 0..100 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let mut out = Vec::new();
        for piece in wire.chunks_mut(chunk.max(1)) {
            link.receive(piece, &mut plain, &mut out)?;
        }
        let mut unsent = link.unsent().to_vec();
        unsent.extend_from_slice(&out);
        link.wrote_unsent(link.unsent().len());
        if wire.is_empty() && unsent.is_empty() {
            break;
        }
        if !unsent.is_empty() {
            c.read_tls(&mut &unsent[..]).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    Ok(plain)
}

fn read_all(c: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
    let mut rest = wire;
    let mut got = Vec::new();
    while !rest.is_empty() {
        c.read_tls(&mut rest).unwrap();
        c.process_new_packets().unwrap();
        let _ = c.reader().read_to_end(&mut got);
    }
    got
}

fn server(p: &Pair) -> TlsLink {
    TlsLink::new(TlsCerts::load(p.files.clone()).unwrap().current()).unwrap()
}

#[test]
fn tls13_and_tls12_carry_data_both_ways() {
    let p = pair("both");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut link = server(&p);
        let mut c = client(client_config(&p.cert, &[version]));
        c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let plain = pump(&mut c, &mut link, usize::MAX).unwrap();
        assert!(link.is_established());
        assert_eq!(c.protocol_version(), Some(version.version));
        assert_eq!(link.version(), Some(version.version));
        // Early application data from the client is delivered once the
        // handshake allows it.
        let mut plain = plain;
        plain.extend(pump(&mut c, &mut link, usize::MAX).unwrap());
        assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        let n = link.encrypt(b"HTTP/1.1 101 ok\r\n\r\n", &mut out).unwrap();
        assert_eq!(read_all(&mut c, &out[..n]), b"HTTP/1.1 101 ok\r\n\r\n");
        assert_eq!(link.buffered_bytes(), 0, "an idle link keeps no buffer");
    }
}

#[test]
fn records_split_at_every_byte_decrypt_the_same() {
    let p = pair("split");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, 1).unwrap();
    assert!(link.is_established());
    let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    c.writer().write_all(&message).unwrap();
    let got = pump(&mut c, &mut link, 7).unwrap();
    assert_eq!(got, message);
    assert_eq!(link.buffered_bytes(), 0);
}

#[test]
fn a_large_message_goes_out_in_records() {
    let p = pair("large");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS12]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    let message: Vec<u8> = (0..(1 << 20) as u32).map(|i| (i % 253) as u8).collect();
    let mut out = Vec::new();
    let n = link.encrypt(&message, &mut out).unwrap();
    assert!(n > message.len());
    assert_eq!(read_all(&mut c, &out[..n]), message);
    // The buffer is reused without being cleared: a second, small message.
    let n = link.encrypt(b"small", &mut out).unwrap();
    assert_eq!(read_all(&mut c, &out[..n]), b"small");
}

#[test]
fn alpn_is_http11_when_offered() {
    let p = pair("alpn");
    let mut cfg = client_config(&p.cert, &[&rustls::version::TLS13]);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut link = server(&p);
    let mut c = client(cfg);
    pump(&mut c, &mut link, usize::MAX).unwrap();
    assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(link.alpn(), Some(&b"http/1.1"[..]));

    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    assert!(link.is_established());
    assert_eq!(link.alpn(), None);

    let mut cfg = client_config(&p.cert, &[&rustls::version::TLS13]);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut link = server(&p);
    let mut c = client(cfg);
    let f = pump(&mut c, &mut link, usize::MAX).unwrap_err();
    assert!(!f.established);
}

/// The first bytes of an alert record.
fn is_alert(out: &[u8]) -> bool {
    out.len() >= 7 && out[0] == 0x15 && out[1] == 0x03
}

#[test]
fn plain_http_fails_the_handshake_with_an_alert() {
    let p = pair("http");
    let mut link = server(&p);
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let f = link.receive(&mut req, &mut plain, &mut out).unwrap_err();
    assert!(!f.established, "{f}");
    assert!(plain.is_empty());
    assert!(is_alert(&out), "{out:?}");
}

/// A ClientHello that offers TLS 1.1 at most (no supported_versions).
fn tls11_client_hello() -> Vec<u8> {
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

#[test]
fn a_tls11_client_is_refused_with_protocol_version() {
    let p = pair("tls11");
    let mut link = server(&p);
    let mut hello = tls11_client_hello();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let f = link.receive(&mut hello, &mut plain, &mut out).unwrap_err();
    assert!(!f.established);
    assert!(is_alert(&out), "{out:?}");
    assert!(matches!(f.error, rustls::Error::PeerIncompatible(_)), "{f}");
    // Fatal (2), protocol_version (70).
    assert_eq!(&out[5..7], &[2, 70], "{out:?} {f}");
}

#[test]
fn close_notify_reaches_the_client_and_the_clients_is_seen() {
    let p = pair("close");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    let mut out = Vec::new();
    let n = link.close_notify(&mut out).unwrap();
    assert!(n > 0);
    assert_eq!(link.close_notify(&mut out).unwrap(), 0, "once");
    let mut rest = &out[..n];
    c.read_tls(&mut rest).unwrap();
    let state = c.process_new_packets().unwrap();
    assert!(state.peer_has_closed());

    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    c.send_close_notify();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let r = link.receive(&mut wire, &mut plain, &mut out).unwrap();
    assert!(r.peer_closed);
}

#[test]
fn garbage_after_the_handshake_is_an_error_not_a_panic() {
    let p = pair("garbage");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    // An application-data record whose tag cannot verify.
    let mut rec = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    rec.extend_from_slice(&[0xAB; 32]);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let f = link.receive(&mut rec, &mut plain, &mut out).unwrap_err();
    assert!(f.established);
    assert!(plain.is_empty());
    assert!(link.encrypt(b"x", &mut out).is_err());
}

#[test]
fn sending_before_the_handshake_is_refused() {
    let p = pair("early");
    let mut link = server(&p);
    let mut out = Vec::new();
    assert!(link.encrypt(b"x", &mut out).is_err());
    assert_eq!(link.close_notify(&mut out).unwrap(), 0);
}

// ---- Loading the files.

#[test]
fn bad_files_name_the_flag_and_the_cause() {
    let p = pair("files");
    let other = pair("files-other");
    let load = |cert: &std::path::Path, key: &std::path::Path| {
        TlsCerts::load(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
        .unwrap_err()
    };
    let e = load(&p.dir.join("missing.pem"), &p.files.key);
    assert_eq!(e.flag, "--tls-cert");
    assert!(e.cause.contains("cannot read"), "{e}");
    let e = load(&p.files.cert, &p.dir.join("missing.pem"));
    assert_eq!(e.flag, "--tls-key");
    // Each file where the other belongs.
    let e = load(&p.files.key, &p.files.key);
    assert_eq!(
        (e.flag, e.cause.as_str()),
        ("--tls-cert", "holds a private key, not a certificate")
    );
    let e = load(&p.files.cert, &p.files.cert);
    assert_eq!(
        (e.flag, e.cause.as_str()),
        ("--tls-key", "holds a certificate, not a private key")
    );
    // A key of another certificate.
    let e = load(&p.files.cert, &other.files.key);
    assert_eq!(e.flag, "--tls-key");
    assert!(e.cause.contains("does not match"), "{e}");
    // Garbage and a directory.
    let junk = p.dir.join("junk.pem");
    std::fs::write(&junk, b"hello").unwrap();
    assert_eq!(load(&junk, &p.files.key).flag, "--tls-cert");
    assert_eq!(load(&p.files.cert, &junk).flag, "--tls-key");
    assert!(load(&p.dir, &p.files.key).cause.contains("not a regular file"));
    // The message names the flag, the path and the cause.
    let shown = load(&p.files.cert, &junk).to_string();
    assert!(shown.starts_with("--tls-key ") && shown.contains("junk.pem"), "{shown}");
}

#[test]
fn reload_swaps_the_pair_or_keeps_the_old_one() {
    let p = pair("reload");
    let certs = TlsCerts::load(p.files.clone()).unwrap();
    let before = certs.current();
    // A bad file: the configuration in use stays.
    std::fs::write(&p.files.key, b"not a key").unwrap();
    assert_eq!(certs.reload().unwrap_err().flag, "--tls-key");
    assert!(Arc::ptr_eq(&before, &certs.current()));
    // A new good pair: new connections get it.
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&p.files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&p.files.key, ck.signing_key.serialize_pem()).unwrap();
    certs.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, &certs.current()));
    let mut link = TlsLink::new(certs.current()).unwrap();
    let mut c = client(client_config(ck.cert.der(), &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    assert!(link.is_established());
}

// ---- Hostile input: what a failure leaves behind, and what is kept.

/// Inputs that once made rustls slice a handshake message out of the empty
/// buffer the alert was asked for with (a panic on the loop's thread).
#[test]
fn handshake_messages_pending_at_a_failure_do_not_panic() {
    let p = pair("pending");
    let mut cases: Vec<Vec<u8>> = vec![
        // Two empty ClientHellos in one record.
        vec![0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0, 0, 0, 0x01, 0, 0, 0],
        // An empty ClientHello, then the header of a longer one.
        vec![0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0, 0, 0, 0x01, 0, 0, 0x10],
    ];
    // A real ClientHello split over two records, then a garbage record.
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let body = &hello[5..];
    let (a, b) = body.split_at(body.len() / 2);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[0x16, 0x03, 0x01, (part.len() >> 8) as u8, part.len() as u8]);
        split.extend_from_slice(part);
    }
    split.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x04, 1, 2, 3, 4]);
    cases.push(split);
    // A ClientHello with a KeyUpdate in the same record.
    let mut joined = hello.clone();
    joined.extend_from_slice(&[0x18, 0, 0, 1, 0]);
    let len = joined.len() - 5;
    joined[3..5].copy_from_slice(&(len as u16).to_be_bytes());
    cases.push(joined);
    for (i, mut input) in cases.into_iter().enumerate() {
        for chunk in [usize::MAX, 1] {
            let mut link = server(&p);
            let (mut plain, mut out) = (Vec::new(), Vec::new());
            let mut failed = false;
            for piece in input.clone().chunks_mut(chunk) {
                if link.receive(piece, &mut plain, &mut out).is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(plain.is_empty(), "case {i}");
            // Whatever it decided, the link answers more input without a
            // panic, and an error once it has failed.
            if failed {
                assert!(link.receive(&mut input, &mut plain, &mut out).is_err());
            }
        }
    }
}

#[test]
fn input_after_close_notify_is_ignored_not_kept() {
    let p = pair("after-close");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    c.send_close_notify();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    assert!(link.receive(&mut wire, &mut plain, &mut out).unwrap().peer_closed);
    for _ in 0..100 {
        let mut more = vec![0x17; 64 * 1024];
        let r = link.receive(&mut more, &mut plain, &mut out).unwrap();
        assert!(r.peer_closed);
    }
    assert!(plain.is_empty());
    assert_eq!(link.buffered_bytes(), 0);
}

#[test]
fn a_handshake_message_in_tiny_records_is_bounded() {
    let p = pair("tiny-records");
    let mut link = server(&p);
    // A ClientHello announcing 60 KiB, sent one byte per record.
    let mut message = vec![0x01, 0x00, 0xF0, 0x00];
    message.resize(4 + 0xF000, 0);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let mut failed = false;
    for byte in message {
        let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x01, byte];
        if link.receive(&mut record, &mut plain, &mut out).is_err() {
            failed = true;
            break;
        }
        assert!(link.buffered_bytes() <= super::link::MAX_PARTIAL);
    }
    assert!(failed, "a 60 KiB message in 1-byte records must be refused");
}

#[test]
fn a_split_record_keeps_only_its_own_bytes() {
    let p = pair("tail");
    let mut link = server(&p);
    let mut c = client(client_config(&p.cert, &[&rustls::version::TLS13]));
    pump(&mut c, &mut link, usize::MAX).unwrap();
    c.writer().write_all(&[b'x'; 100]).unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    // A 64 KiB read that ends 12 bytes into a record.
    let mut read = vec![0u8; 64 * 1024];
    let n = wire.len();
    read.truncate(12);
    read.copy_from_slice(&wire[..12]);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    link.receive(&mut read, &mut plain, &mut out).unwrap();
    assert!(link.buffered_bytes() <= 64, "{}", link.buffered_bytes());
    let mut rest = wire[12..n].to_vec();
    link.receive(&mut rest, &mut plain, &mut out).unwrap();
    assert_eq!(plain, [b'x'; 100]);
    assert_eq!(link.buffered_bytes(), 0);
    assert!(link.received_any());
}
