//! A whole client connection through the server's own `Session` — the code the event loop runs —
//! with no socket: the input is split into reads, each read goes to `Session::on_bytes`, and what
//! the session does is recorded: the handler callbacks (open, heartbeat, application message,
//! close with reason), the presence events, every byte it wrote, and its verdict. Then the clock
//! jumps ahead in 10-minute steps and the session's timer runs (handshake timeout, eviction, close
//! timeout) until the session is gone. The connection is run twice, in one read and in the reads
//! the input chooses, and both runs must tell the same story.
//!
//! Input layout:
//!   byte 0      bits 0-1 path and bits 2-3 allowed origins, as in the handshake target; bits
//!               4-5 max_message_size: 125, 4096, 65536 or 1 MiB; bit 6 alone JWT auth (HS256,
//!               secret `fuzz-secret`: tokens in `?token=` and `token JWT` refreshes); bit 7 alone
//!               --liveness heartbeat; bits 6 and 7 the auth webhook: the upgrade waits until
//!               the input is all read, then gets the verdict bits 0-1 choose (accept as
//!               `device-42`, 401, an error, or none: the backstop timer)
//!   byte 1      bits 0-3: N = 1 + (b % 16), how many read sizes follow; bits 4-5 the transport:
//!               0 plain TCP, 1 TLS, 2 TLS ended by the client's close_notify, 3 TLS whose last
//!               write (below) goes out unencrypted; bit 6 TLS 1.2 (else 1.3), bit 7
//!               ChaCha20-Poly1305 (else AES-128-GCM)
//!   N bytes     read sizes, each b + 1 (1..=256), used cyclically (under TLS, of the ciphertext,
//!               handshake included)
//!   TLS only:   M = 1 + (b % 16), then M write sizes, used cyclically: the client writes
//!               (b & 0x7f) + 1 bytes at a time (128: all the rest, in 16 KiB records), after a
//!               TLS 1.3 KeyUpdate when bit 7 is set
//!   the rest    what the client sent: an upgrade request, then masked frames
//!
//! Under TLS a rustls client and the server's `TlsLink` (with the configuration `TlsCerts` loads)
//! first complete a handshake in memory; then the client encrypts the bytes, the link decrypts
//! them read by read and its plaintext goes to the session as the event loop gives it
//! (`tls_input`), and the session's output is encrypted by the link and decrypted by the client:
//! the checks below look at what the client decrypted. A failure of the link drops the
//! connection (reason error) and so does the client's close_notify (as an end of stream).
//!
//! Checked: no panics; with JWT or the webhook, no connection opens without the id it was given;
//! the webhook is asked at most once and its call dropped when the connection goes before; the
//! same callbacks, events, output bytes, verdict and final state for both
//! read patterns; an application text message is never a heartbeat by an independent reading of
//! the grammar; what the server wrote after its 101 is a sequence of well-formed, whole, unmasked
//! frames, and every close frame it sent carries a valid code; every session ends within three
//! timer steps, out of the registry and with no timer left.
//!
//! Under TLS, also: the link never fails on the client's own records, and it hands the session
//! exactly the client's bytes, nothing kept back once the reads end on a record boundary; its
//! records to the client are whole, and its close_notify reaches the client as a clean end; a
//! run in one read tells the same story as the plain transport in one read (with an end of
//! stream where the client sent close_notify). With an unencrypted last write, the session gets
//! nothing from it (only a prefix of the encrypted bytes), a complete raw record fails the link,
//! and the link's alert is what the client reads last.
#![no_main]

mod common;
mod tls_peer;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Beat, model_heartbeat};
use libfuzzer_sys::fuzz_target;
use rustls::ClientConnection;
use tls_peer::Reads;
use wsbeat::auth::jwt::{JwtKey, JwtSettings, JwtVerifier};
use wsbeat::auth::webhook::{QueueFull, Verdict, WebhookRequest};
use wsbeat::config::{Config, DuplicateId, Liveness};
use wsbeat::handler::{AppMessage, ConnInfo, Control, Handler};
use wsbeat::presence::{ConnId, OfflineReason, PresenceEvent, SharedRegistry};
use wsbeat::protocol::frame::{OpCode, parse_header_any};
use wsbeat::protocol::message::parse_close_payload;
use wsbeat::session::{After, AskBackend, Context, Gate, Phase, Session};
use wsbeat::tls::TlsLink;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Open(Option<String>),
    Bind(Option<String>),
    Beat(Option<String>),
    Text(String),
    Binary(Vec<u8>),
    Close(Option<String>, OfflineReason),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Step>>>);

fn id(c: &ConnInfo<'_>) -> Option<String> {
    c.id.map(str::to_owned)
}

impl Handler for Recorder {
    fn on_open(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Open(id(c)));
    }
    fn on_bind(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Bind(id(c)));
    }
    fn on_heartbeat(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Beat(id(c)));
    }
    fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, _: &mut Control) {
        let step = match m {
            AppMessage::Text(t) => {
                assert_eq!(
                    model_heartbeat(t),
                    Beat::Not,
                    "a heartbeat handed to the application: {t:?}"
                );
                Step::Text(t.to_owned())
            }
            AppMessage::Binary(b) => Step::Binary(b.to_vec()),
        };
        self.0.lock().unwrap().push(step);
    }
    fn on_close(&mut self, c: &ConnInfo<'_>, r: OfflineReason, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Close(id(c), r));
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Story {
    steps: Vec<Step>,
    events: Vec<PresenceEvent>,
    out: Vec<u8>,
    verdict: After,
    phase: Phase,
    client_id: Option<String>,
    /// No buffer held by a kept session (capacities may differ with the reads, emptiness may not).
    idle: bool,
    /// What the timer steps did after the input.
    ending: Vec<After>,
    /// The transport ended the connection: an end of stream (close_notify, under TLS) or a
    /// failure of the TLS link.
    dropped: Option<(OfflineReason, &'static str)>,
}

/// The webhook as the session sees it: records what it is asked.
#[derive(Default)]
struct Asked(Mutex<Vec<(ConnId, bool)>>);

impl AskBackend for Asked {
    fn ask(&self, conn: ConnId, _: WebhookRequest) -> Result<(), QueueFull> {
        self.0.lock().unwrap().push((conn, true));
        Ok(())
    }
    fn cancel(&self, conn: ConnId) {
        self.0.lock().unwrap().push((conn, false));
    }
}

#[derive(Clone, Copy)]
enum Auth {
    Open,
    Jwt,
    /// The verdict given once the input is read (`None`: no answer).
    Webhook(Option<fn() -> Verdict>),
}

/// How the client's bytes reach the session.
#[derive(Clone, Copy)]
enum Transport<'a> {
    /// As they are, the plain listener; `eof`: then the client ends the stream.
    Plain {
        eof: bool,
    },
    Tls(Tls<'a>),
}

#[derive(Clone, Copy)]
struct Tls<'a> {
    /// The client (`tls_peer::client`): protocol version and suite.
    client: usize,
    /// The client's write sizes, as the layout says.
    writes: &'a [u8],
    end: TlsEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsEnd {
    /// The connection stays open.
    Open,
    /// The client sends close_notify after its bytes.
    CloseNotify,
    /// The client's last write goes out as it is, unencrypted.
    RawTail,
}

/// Plaintext per `TlsLink::encrypt` call, as the event loop's `write_plain` cuts it.
const ENCRYPT_CHUNK: usize = 64 * 1024;

/// A TLS connection: the server's link, and the client at the other end.
struct TlsConn {
    client: ClientConnection,
    link: TlsLink,
    end: TlsEnd,
    /// The client's bytes that went out encrypted (all of them unless the last write was raw),
    /// and those that went out as they are.
    encrypted: Vec<u8>,
    raw: Vec<u8>,
    /// Every byte of plaintext the link handed over.
    handed: Vec<u8>,
    /// Ciphertext the server sent after the handshake.
    to_client: Vec<u8>,
    /// The event loop's buffers: `tls_records` for what `receive` sends (cleared before it), and
    /// `tls_out`, reused by `encrypt` and `close_notify`, which write from its start and leave
    /// its length.
    records: Vec<u8>,
    scratch: Vec<u8>,
    failed: bool,
}

impl TlsConn {
    /// Completes a handshake, then has the client write `data`: returns the connection and the
    /// byte stream the link is to read.
    fn connect(t: Tls, data: &[u8], reads: &mut Reads) -> (TlsConn, Vec<u8>) {
        let mut client = tls_peer::client(t.client);
        let mut link = TlsLink::new(tls_peer::server_config()).expect("a TLS link");
        tls_peer::handshake(&mut client, &mut link, reads);
        let tls13 = client.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        let sizes = if t.writes.is_empty() { &[0x7f][..] } else { t.writes };
        let mut stream = Vec::new();
        let mut at = 0;
        let mut encrypted = data.len();
        for &w in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let n = match w & 0x7f {
                0x7f => data.len() - at,
                k => (k as usize + 1).min(data.len() - at),
            };
            if t.end == TlsEnd::RawTail && at + n == data.len() {
                encrypted = at;
                stream.extend_from_slice(&data[at..]);
                break;
            }
            if w & 0x80 != 0 && tls13 {
                client.refresh_traffic_keys().expect("a key update");
            }
            client
                .writer()
                .write_all(&data[at..at + n])
                .expect("the client takes plaintext");
            stream.extend(tls_peer::client_writes(&mut client));
            at += n;
        }
        if t.end == TlsEnd::CloseNotify {
            client.send_close_notify();
            stream.extend(tls_peer::client_writes(&mut client));
        }
        let conn = TlsConn {
            client,
            link,
            end: t.end,
            encrypted: data[..encrypted].to_vec(),
            raw: data[encrypted..].to_vec(),
            handed: Vec::new(),
            to_client: Vec::new(),
            records: Vec::new(),
            scratch: Vec::new(),
            failed: false,
        };
        (conn, stream)
    }

    /// What `tls_input` does with a read: decrypts it, the link's records go to the client, and
    /// the plaintext is returned for the session. `None`: the link failed, the connection goes.
    fn receive(&mut self, read: &mut [u8]) -> Option<Vec<u8>> {
        assert!(!self.failed);
        let mut plain = Vec::new();
        self.records.clear();
        let received = self.link.receive(read, &mut plain, &mut self.records);
        tls_peer::check_records(&self.records);
        self.to_client.extend_from_slice(&self.records);
        assert!(
            self.link.buffered_bytes() <= tls_peer::MAX_BUFFERED,
            "the link keeps too much: {:?}",
            self.link
        );
        match received {
            Ok(_) => {
                self.handed.extend_from_slice(&plain);
                assert!(
                    self.encrypted.starts_with(&self.handed),
                    "the link handed over bytes the client did not encrypt: {:?}",
                    self.handed
                );
                Some(plain)
            }
            Err(f) => {
                assert_eq!(
                    self.end,
                    TlsEnd::RawTail,
                    "the link failed on the client's own records: {f}"
                );
                assert!(f.established, "{f}");
                self.failed = true;
                None
            }
        }
    }

    /// What `write_plain` does with the session's output: encrypts it for the client.
    fn send(&mut self, plain: &[u8]) {
        for chunk in plain.chunks(ENCRYPT_CHUNK) {
            match self.link.encrypt(chunk, &mut self.scratch) {
                Ok(n) => {
                    assert!(n <= self.scratch.len());
                    let (count, _) = tls_peer::check_records(&self.scratch[..n]);
                    assert!(count > 0, "no record for {} bytes", chunk.len());
                    self.to_client.extend_from_slice(&self.scratch[..n]);
                }
                Err(f) => panic!("the link cannot encrypt the session's output: {f}"),
            }
        }
    }

    /// Checks how the connection ended and returns what the client decrypted of everything the
    /// server sent. `fed_all`: the link read the whole stream.
    fn finish(mut self, fed_all: bool) -> Vec<u8> {
        if !self.failed {
            if fed_all && self.end != TlsEnd::RawTail {
                // The stream ends on a record boundary: every byte reached the session.
                assert_eq!(self.handed, self.encrypted, "the link held plaintext back");
                assert_eq!(
                    self.link.buffered_bytes(),
                    0,
                    "an idle link keeps no buffer: {:?}",
                    self.link
                );
            }
            if fed_all && self.end == TlsEnd::RawTail {
                // Unencrypted, a whole record cannot pass: only an incomplete one may wait.
                let r = &self.raw;
                let whole = r.len() >= 5 && r.len() >= 5 + u16::from_be_bytes([r[3], r[4]]) as usize;
                assert!(!whole, "the link took an unencrypted record: {r:?}");
            }
            // The close_notify of a clean close or in answer to the client's
            // (`Connections::close_notify`), once.
            let n = self.link.close_notify(&mut self.scratch).expect("close_notify");
            assert!(n > 0, "no close_notify");
            self.to_client.extend_from_slice(&self.scratch[..n]);
            assert_eq!(
                self.link.close_notify(&mut self.scratch).ok(),
                Some(0),
                "a second close_notify"
            );
        }
        let mut got = Vec::new();
        match tls_peer::client_reads(&mut self.client, &self.to_client, &mut got) {
            Ok(closed) => assert!(closed && !self.failed, "closed {closed}, failed {}", self.failed),
            Err(rustls::Error::AlertReceived(a)) => assert!(self.failed, "an alert from a working link: {a:?}"),
            Err(e) => panic!("the client refused the server's records: {e}"),
        }
        got
    }
}

/// The server's side of the transport.
enum Wire {
    /// What the session wrote, as it is.
    Plain(Vec<u8>),
    Tls(Box<TlsConn>),
}

impl Wire {
    /// Sends what the session wrote (in `cx.out`).
    fn send(&mut self, cx: &mut Context) {
        match self {
            Wire::Plain(out) => out.extend_from_slice(&cx.out),
            Wire::Tls(t) => t.send(&cx.out),
        }
        cx.out.clear();
    }
}

fn run(data: &[u8], sizes: &[u8], cfg: &Config, auth: Auth, transport: Transport) -> Story {
    let rec = Recorder::default();
    let mut cx = Context::new(
        cfg.clone(),
        Arc::new(SharedRegistry::new()),
        Box::new(rec.clone()),
        true,
        1,
    );
    let asked = Arc::new(Asked::default());
    let jwt = matches!(auth, Auth::Jwt);
    if let Auth::Webhook(_) = auth {
        cx.gate = Gate::Webhook(asked.clone(), 2000);
    }
    if jwt {
        let settings = JwtSettings {
            key: JwtKey::Secret(b"fuzz-secret".to_vec()),
            issuer: None,
            audience: None,
        };
        cx.gate = Gate::Jwt(Arc::new(JwtVerifier::new(&settings).unwrap()));
        // Unix time 2000-01-01: the seeds' tokens expire in 2100, or in the first timer step.
        cx.tick(0, 946_684_800_000);
    }
    let mut s = Session::accept((), ConnId::from_raw(0), &mut cx);
    let mut reads = Reads::new(sizes);
    let (mut wire, stream) = match transport {
        Transport::Plain { .. } => (Wire::Plain(Vec::new()), data.to_vec()),
        Transport::Tls(t) => {
            let (conn, stream) = TlsConn::connect(t, data, &mut reads);
            (Wire::Tls(Box::new(conn)), stream)
        }
    };
    let mut verdict = After::Keep;
    let mut dropped = None;
    let mut fed = 0;
    // A read hands over at least one byte (zero is the end of the stream).
    for r in reads.cut(stream.len()) {
        fed = r.end;
        let mut read = stream[r].to_vec();
        let mut plain = match &mut wire {
            Wire::Plain(_) => read,
            Wire::Tls(t) => match t.receive(&mut read) {
                Some(plain) => plain,
                None => {
                    dropped = Some((OfflineReason::Error, "TLS error"));
                    break;
                }
            },
        };
        // The event loop calls the session only with plaintext.
        if !plain.is_empty() {
            verdict = s.on_bytes(&mut cx, &mut plain);
            wire.send(&mut cx);
            if verdict != After::Keep {
                break;
            }
        }
        if let Wire::Tls(t) = &wire
            && t.link.peer_closed()
        {
            dropped = Some(s.on_eof());
            break;
        }
    }
    if let Transport::Plain { eof: true } = transport
        && verdict == After::Keep
    {
        dropped = Some(s.on_eof());
    }
    if let Some((reason, why)) = dropped {
        s.gone(&mut cx, reason, why);
        assert!(cx.timers.is_empty() && cx.registry.is_empty());
    }
    if let (Auth::Webhook(Some(answer)), After::Keep, None) = (auth, verdict, dropped)
        && s.phase() == Phase::Authorizing
    {
        verdict = s.on_authorized(&mut cx, answer());
        wire.send(&mut cx);
    }
    // A session the driver drops frees its buffers with it: only a kept one's count.
    let idle = verdict != After::Keep || dropped.is_some() || s.buffered_bytes() == 0;
    let (phase, client_id) = (s.phase(), s.client_id().map(str::to_owned));
    let mut ending = Vec::new();
    if verdict == After::Keep && dropped.is_none() {
        let mut now = 0;
        'steps: for _ in 0..3 {
            now += 600_000;
            cx.tick(now, if jwt { 946_684_800_000 + now } else { now });
            while let Some((_, conn)) = cx.timers.poll(now) {
                assert_eq!(conn, s.id());
                let after = s.on_timer(&mut cx);
                wire.send(&mut cx);
                ending.push(after);
                if after != After::Keep {
                    break 'steps;
                }
            }
        }
        assert!(
            matches!(ending.last(), Some(After::Close(..))),
            "never ended: {ending:?}"
        );
        assert!(cx.timers.is_empty() && cx.registry.is_empty());
    }
    let steps = rec.0.lock().unwrap().clone();
    if !matches!(auth, Auth::Open) {
        for s in &steps {
            assert!(
                !matches!(s, Step::Open(None)),
                "a connection opened without the id auth gave: {steps:?}"
            );
        }
    }
    let calls = asked.0.lock().unwrap().clone();
    assert!(
        calls.len() <= 2 && calls.first().is_none_or(|c| c.1),
        "asked: {calls:?}"
    );
    let out = match wire {
        Wire::Plain(out) => out,
        Wire::Tls(t) => t.finish(fed == stream.len()),
    };
    Story {
        steps,
        events: std::mem::take(&mut cx.events),
        out,
        verdict,
        phase,
        client_id,
        idle,
        ending,
        dropped,
    }
}

/// The status of the response at the start of `out`.
fn status(out: &[u8]) -> Option<&[u8]> {
    out.strip_prefix(b"HTTP/1.1 ").map(|r| &r[..3.min(r.len())])
}

/// Checks the frames the server wrote after a 101: well formed, whole, unmasked, close codes valid.
fn check_server_frames(out: &[u8]) {
    if status(out) != Some(b"101") {
        return;
    }
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!("an incomplete 101: {out:?}");
    };
    let mut rest = &out[end + 4..];
    while !rest.is_empty() {
        let (h, n) = match parse_header_any(rest) {
            Ok(Some(x)) => x,
            other => panic!("the server wrote a bad frame header: {other:?} in {rest:?}"),
        };
        assert!(h.fin && h.mask.is_none(), "server frames are whole and unmasked: {h:?}");
        let len = usize::try_from(h.len).unwrap();
        let payload = &rest[n..n + len];
        if h.opcode == OpCode::Close && !payload.is_empty() {
            assert!(
                parse_close_payload(payload).is_ok(),
                "invalid close payload {payload:?}"
            );
        }
        rest = &rest[n + len..];
    }
}

/// The two read patterns tell the same story.
fn same_story(one: &Story, many: &Story, sizes: &[u8]) {
    let refused = |s: &Story| status(&s.out).is_some_and(|st| st != b"101");
    if refused(one) && refused(many) && (status(&one.out) == Some(b"431") || status(&many.out) == Some(b"431")) {
        // A head that outgrows MAX_HEADER_BYTES is refused with 431 as soon as the buffer is full;
        // a bigger single read may instead reach a malformed byte past that point first. Either
        // way the request is refused and nothing else happens: only the response may differ.
        assert!(one.steps.is_empty() && many.steps.is_empty());
        let failing = Phase::Failing { write_shut: false };
        assert_eq!((one.phase, many.phase), (failing, failing));
    } else {
        assert_eq!(one, many, "one read vs reads of {sizes:?}");
    }
}

/// Splits off a count byte, `1 + (b % 16)`, and that many bytes after it.
fn counted(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let Some((&n, rest)) = b.split_first() else {
        return (0, &[], &[]);
    };
    let (sizes, rest) = rest.split_at((1 + n as usize % 16).min(rest.len()));
    (n, sizes, rest)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    let (n, sizes, rest) = counted(rest);
    let (writes, conn) = match (n >> 4) & 3 {
        0 => (&[][..], rest),
        _ => {
            let (_, writes, conn) = counted(rest);
            (writes, conn)
        }
    };
    let allowed = match (sel >> 2) & 3 {
        0 => None,
        1 => Some(vec![]),
        2 => Some(vec!["http://example.com".to_string()]),
        _ => Some(vec![
            "https://good.example".to_string(),
            "http://example.com".to_string(),
        ]),
    };
    let cfg = Config {
        path: [None, Some("/"), Some("/ws"), Some("/chat")][sel as usize & 3].map(String::from),
        allowed_origins: allowed,
        max_message_size: [125, 4096, 65536, 1 << 20][(sel as usize >> 4) & 3],
        duplicate_id: DuplicateId::Replace,
        liveness: if sel >> 6 == 2 {
            Liveness::Heartbeat
        } else {
            Liveness::Any
        },
        admin_listen: None,
        handle_signals: false,
        ..Config::default()
    };

    let auth = match sel >> 6 {
        0 | 2 => Auth::Open,
        1 => Auth::Jwt,
        _ => Auth::Webhook(
            [
                Some((|| Verdict::Accept("device-42".into())) as fn() -> Verdict),
                Some(|| Verdict::Unauthorized),
                Some(|| Verdict::Unavailable("fuzz".into())),
                None,
            ][sel as usize & 3],
        ),
    };
    let end = match (n >> 4) & 3 {
        0 => {
            let plain = Transport::Plain { eof: false };
            let one = run(conn, &[], &cfg, auth, plain);
            let many = run(conn, sizes, &cfg, auth, plain);
            check_server_frames(&one.out);
            same_story(&one, &many, sizes);
            return;
        }
        1 => TlsEnd::Open,
        2 => TlsEnd::CloseNotify,
        _ => TlsEnd::RawTail,
    };
    let tls = Transport::Tls(Tls {
        // Bit 6 TLS 1.2, bit 7 ChaCha20 (the order of `tls_peer::client`).
        client: ((n >> 5) & 2 | n >> 7) as usize,
        writes,
        end,
    });
    let one = run(conn, &[], &cfg, auth, tls);
    let many = run(conn, sizes, &cfg, auth, tls);
    check_server_frames(&one.out);
    check_server_frames(&many.out);
    if end != TlsEnd::RawTail {
        // Decrypted in one read, the client's bytes reach the session as one read of plain TCP.
        let plain = run(
            conn,
            &[],
            &cfg,
            auth,
            Transport::Plain {
                eof: end == TlsEnd::CloseNotify,
            },
        );
        assert_eq!(one, plain, "TLS vs plain TCP, one read");
        same_story(&one, &many, sizes);
    }
});
