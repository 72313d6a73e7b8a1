//! The load generator: one thread, one mio poll, non-blocking sockets, raw
//! upgrade requests and pre-encoded masked frames. It parses only frame
//! headers (server frames are unmasked) and never builds a message object,
//! so that per message it does less work than the servers it measures.
//!
//! With `set_tls`, each connection is a rustls `ClientConnection` (TLS 1.3,
//! X25519, no resumption: every connection is a full handshake) that trusts
//! exactly the bench's certificate. Ciphertext is read with one `read` per
//! event into the shared buffer, as without TLS, and handed to rustls.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wsbeat::protocol::frame::{OpCode, encode_frame_masked, parse_header_any};

use crate::procs::Server;

/// Client sockets are bound round-robin to 127.0.0.1 ..= 127.0.0.SOURCE_ADDRS
/// before connecting: each source address has its own ephemeral port range,
/// which is what lets one machine open more than ~28k connections to one
/// server port.
pub const SOURCE_ADDRS: usize = 16;
/// Connections between `connect` and the 101, at most: keeps the accept
/// queues (1024 for tokio's listener) from overflowing into SYN retransmits.
const MAX_PENDING: usize = 256;
/// How long reaching the connection count may take before the bench fails.
const RAMP_TIMEOUT: Duration = Duration::from_secs(120);
/// The idle clients' heartbeat period.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// How often the loop checks that the server process is still alive.
const ALIVE_CHECK_EVERY: Duration = Duration::from_millis(100);
const POLL_TIMEOUT: Duration = Duration::from_millis(10);
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];
/// The 32-byte text message of the echo scenarios (not a heartbeat).
pub const ECHO_PAYLOAD: &[u8; 32] = b"wsbeat-load-echo-0123456789abcde";

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Upgrade, send one `heartbeat`, then one every 30 s.
    Idle,
    /// Keep `in_flight` echo messages outstanding on every connection.
    Echo { in_flight: usize },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Handshake,
    Open,
}

struct Conn {
    sock: TcpStream,
    st: St,
    /// `wss://`: plaintext goes through it (`wbuf` then holds plaintext not
    /// yet handed to it, and it keeps the ciphertext the socket did not take).
    tls: Option<Box<ClientConnection>>,
    /// Bytes of an incomplete head or frame, carried to the next read.
    rbuf: Vec<u8>,
    /// Bytes not yet accepted by the socket.
    wbuf: Vec<u8>,
    /// Send times of the echo messages in flight, oldest first (a server
    /// echoes in order on one connection).
    sent_at: VecDeque<Instant>,
}

/// Echo results since the last `start_recording`.
#[derive(Default)]
pub struct Stats {
    pub echoes: u64,
    /// Round-trip times in nanoseconds, one per echo.
    pub rtt_ns: Vec<u64>,
    /// When the last recorded echo arrived.
    #[allow(dead_code)] // read by benches/auth.rs only
    pub last_echo: Option<Instant>,
}

/// State shared by all connections.
struct Shared {
    mode: Mode,
    port: u16,
    echo_frame: Vec<u8>,
    heartbeat: Vec<u8>,
    sending: bool,
    recording: bool,
    stats: Stats,
    opened: usize,
    /// Echo messages that may still be sent; `None`: no limit (see
    /// `Gen::set_send_budget`).
    budget: Option<u64>,
    /// The query of connection i's upgrade request, instead of
    /// `client_id=load-{i}` (see `Gen::set_queries`).
    queries: Option<Vec<String>>,
    /// `wss://` (see `Gen::set_tls`), and the name asked for.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Shared {
    /// Whether one more echo message may be sent; counts it if so.
    fn take_send(&mut self) -> bool {
        if !self.sending {
            return false;
        }
        match &mut self.budget {
            None => true,
            Some(0) => false,
            Some(b) => {
                *b -= 1;
                true
            }
        }
    }
}

pub struct Gen {
    poll: Poll,
    events: Events,
    server: SocketAddr,
    conns: Vec<Conn>,
    sh: Shared,
    scratch: Vec<u8>,
    /// What one read decrypted (TLS only).
    plain: Vec<u8>,
    last_alive_check: Instant,
    next_heartbeat: Instant,
}

impl Gen {
    pub fn new(server: SocketAddr, mode: Mode) -> Result<Gen, String> {
        let mut echo_frame = Vec::new();
        encode_frame_masked(&mut echo_frame, true, OpCode::Text, ECHO_PAYLOAD, MASK);
        let mut heartbeat = Vec::new();
        encode_frame_masked(&mut heartbeat, true, OpCode::Text, b"heartbeat", MASK);
        Ok(Gen {
            poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
            events: Events::with_capacity(4096),
            server,
            conns: Vec::new(),
            sh: Shared {
                mode,
                port: server.port(),
                echo_frame,
                heartbeat,
                sending: true,
                recording: false,
                stats: Stats::default(),
                opened: 0,
                budget: None,
                queries: None,
                tls: None,
            },
            scratch: vec![0; 64 * 1024],
            plain: Vec::new(),
            last_alive_check: Instant::now(),
            next_heartbeat: Instant::now() + HEARTBEAT_EVERY,
        })
    }

    /// Connections upgraded so far.
    pub fn open(&self) -> usize {
        self.sh.opened
    }

    /// Opens `n` connections and waits for all of them to be upgraded;
    /// returns the time from the first `connect` to the last 101.
    pub fn ramp(&mut self, n: usize, srv: &mut Server) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.next_heartbeat = t0 + HEARTBEAT_EVERY;
        let deadline = t0 + RAMP_TIMEOUT;
        while self.sh.opened < n {
            while self.conns.len() < n && self.conns.len() - self.sh.opened < MAX_PENDING {
                self.connect_one()?;
            }
            self.step(srv)?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: only {} of {n} connections upgraded after {RAMP_TIMEOUT:?} ({} started)",
                    srv.kind.label(),
                    self.sh.opened,
                    self.conns.len()
                ));
            }
        }
        Ok(t0.elapsed())
    }

    /// Serves the connections for `d`.
    pub fn run_for(&mut self, d: Duration, srv: &mut Server) -> Result<(), String> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step(srv)?;
        }
        Ok(())
    }

    /// What the first connection negotiated: TLS version, cipher suite, key
    /// exchange group and ALPN protocol (`None` without TLS or connections).
    #[allow(dead_code)] // used by benches/load.rs only
    pub fn tls_summary(&self) -> Option<String> {
        let tls = self.conns.first()?.tls.as_ref()?;
        Some(format!(
            "{:?}, {:?}, {:?}, ALPN {}",
            tls.protocol_version()?,
            tls.negotiated_cipher_suite()?.suite(),
            tls.negotiated_key_exchange_group()?.name(),
            tls.alpn_protocol().map_or("none".into(), String::from_utf8_lossy)
        ))
    }

    /// Connects with TLS (`wss://`) from now on. Call before `ramp`.
    #[allow(dead_code)] // used by benches/load.rs only
    pub fn set_tls(&mut self, config: Arc<ClientConfig>) {
        self.plain = vec![0; 64 * 1024];
        self.sh.tls = Some((config, ServerName::DnsName(SERVER_NAME.try_into().expect("a DNS name"))));
    }

    /// Connection i's upgrade request asks for `/?{queries[i]}` instead of
    /// `/?client_id=load-{i}` (e.g. `token=JWT`); connections past the end
    /// of `queries` fail. Call before `ramp`.
    #[allow(dead_code)] // used by benches/auth.rs only
    pub fn set_queries(&mut self, queries: Vec<String>) {
        self.sh.queries = Some(queries);
    }

    /// Echo mode: at most `n` more echo messages are sent in all, from now
    /// on (`None`: no limit, the default). `Some(0)` before `ramp` opens the
    /// connections without sending; `burst` then starts the traffic.
    #[allow(dead_code)] // used by benches/auth.rs only
    pub fn set_send_budget(&mut self, n: Option<u64>) {
        self.sh.budget = n;
    }

    /// Echo mode: sets the send budget to `n` and fills every open
    /// connection's window (`in_flight` messages, the budget permitting);
    /// each echo then sends the next message until the budget is spent.
    #[allow(dead_code)] // used by benches/auth.rs only
    pub fn burst(&mut self, n: u64, srv: &mut Server) -> Result<(), String> {
        let Mode::Echo { in_flight } = self.sh.mode else {
            return Err("burst needs echo mode".into());
        };
        self.sh.budget = Some(n);
        self.sh.sending = true;
        let now = Instant::now();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if c.st != St::Open {
                continue;
            }
            while c.sent_at.len() < in_flight && self.sh.take_send() {
                c.wbuf.extend_from_slice(&self.sh.echo_frame);
                c.sent_at.push_back(now);
            }
            flush(c).map_err(|e| format!("{}: connection {i}: {e}", srv.kind.label()))?;
        }
        Ok(())
    }

    /// Serves the connections until `echoes` echoes were recorded since
    /// `start_recording`; fails after `timeout`.
    #[allow(dead_code)] // used by benches/auth.rs only
    pub fn run_until_echoes(&mut self, echoes: u64, timeout: Duration, srv: &mut Server) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while self.sh.stats.echoes < echoes {
            if Instant::now() > end {
                return Err(format!(
                    "{}: {} of {echoes} echoes after {timeout:?}",
                    srv.kind.label(),
                    self.sh.stats.echoes
                ));
            }
            self.step(srv)?;
        }
        Ok(())
    }

    /// Resets the echo statistics and counts from now on.
    pub fn start_recording(&mut self) {
        self.sh.stats = Stats::default();
        self.sh.recording = true;
    }

    /// Stops recording and returns what was recorded; no new messages are
    /// sent after this.
    pub fn finish(&mut self) -> Stats {
        self.sh.recording = false;
        self.sh.sending = false;
        std::mem::take(&mut self.sh.stats)
    }

    fn connect_one(&mut self) -> Result<(), String> {
        let i = self.conns.len();
        let src = Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_ADDRS) as u8);
        let err = |what: &str, e: io::Error| format!("connection {i} from {src}: {what}: {e}");
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|e| err("socket", e))?;
        s.set_nonblocking(true).map_err(|e| err("O_NONBLOCK", e))?;
        s.set_tcp_nodelay(true).map_err(|e| err("TCP_NODELAY", e))?;
        // Abortive close at teardown: no TIME_WAIT left to eat the ports of
        // the next scenario.
        s.set_linger(Some(Duration::ZERO)).map_err(|e| err("SO_LINGER", e))?;
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .map_err(|e| err("bind", e))?;
        match s.connect(&SockAddr::from(self.server)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(err("connect", e)),
        }
        let mut sock = TcpStream::from_std(std::net::TcpStream::from(s));
        self.poll
            .registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| err("epoll_ctl", e))?;
        let tls = match &self.sh.tls {
            // The ClientHello waits in it until the socket is connected.
            Some((config, name)) => Some(Box::new(
                ClientConnection::new(config.clone(), name.clone()).map_err(|e| format!("connection {i}: TLS: {e}"))?,
            )),
            None => None,
        };
        self.conns.push(Conn {
            sock,
            st: St::Connecting,
            tls,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            sent_at: VecDeque::new(),
        });
        Ok(())
    }

    fn step(&mut self, srv: &mut Server) -> Result<(), String> {
        match self.poll.poll(&mut self.events, Some(POLL_TIMEOUT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        for ev in self.events.iter() {
            let i = ev.token().0;
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            // Per event, not per poll: a batch of a thousand events takes
            // long enough to matter to round-trip times.
            let now = Instant::now();
            let bufs = (&mut self.scratch[..], &mut self.plain[..]);
            if let Err(e) = handle(i, &mut self.conns[i], &mut self.sh, bufs, readable, now) {
                // A dead server explains a failed connection better.
                srv.check_alive_within(Duration::from_millis(500))?;
                return Err(format!("{}: connection {i}: {e}", srv.kind.label()));
            }
        }
        let now = Instant::now();
        if matches!(self.sh.mode, Mode::Idle) && now >= self.next_heartbeat {
            self.next_heartbeat += HEARTBEAT_EVERY;
            for (i, c) in self.conns.iter_mut().enumerate() {
                if c.st == St::Open {
                    c.wbuf.extend_from_slice(&self.sh.heartbeat);
                    flush(c).map_err(|e| format!("{}: connection {i}: {e}", srv.kind.label()))?;
                }
            }
        }
        if now.duration_since(self.last_alive_check) >= ALIVE_CHECK_EVERY {
            self.last_alive_check = now;
            srv.check_alive()?;
        }
        Ok(())
    }
}

const EINPROGRESS: i32 = 115;

/// `bufs`: where a read goes, and where TLS puts what it decrypts.
fn handle(
    i: usize,
    c: &mut Conn,
    sh: &mut Shared,
    (scratch, plain): (&mut [u8], &mut [u8]),
    readable: bool,
    now: Instant,
) -> Result<(), String> {
    if c.st == St::Connecting {
        if let Some(e) = c.sock.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect failed: {e}"));
        }
        match c.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(format!("connect failed: {e}")),
        }
        let mut sink = Utf8Sink(&mut c.wbuf);
        let _ = match &sh.queries {
            None => write!(sink, "GET /?client_id=load-{i} HTTP/1.1\r\n"),
            Some(q) => match q.get(i) {
                Some(q) => write!(sink, "GET /?{q} HTTP/1.1\r\n"),
                None => return Err(format!("no query for connection {i} ({} given)", q.len())),
            },
        };
        let _ = write!(
            sink,
            "Host: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            sh.port
        );
        c.st = St::Handshake;
    }
    if readable {
        loop {
            let k = match c.sock.read(scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            if c.tls.is_some() {
                tls_data(c, sh, &scratch[..k], plain, now)?;
            } else {
                on_data(c, sh, &scratch[..k], now)?;
            }
            // A short read emptied the socket; epoll signals the next
            // arrival anew, so no extra read to see EAGAIN.
            if k < scratch.len() {
                break;
            }
        }
    }
    flush(c)
}

/// Hands ciphertext to the connection's TLS state and what it decrypts to
/// `on_data`; the handshake's answers wait in it for `flush`.
fn tls_data(c: &mut Conn, sh: &mut Shared, mut data: &[u8], plain: &mut [u8], now: Instant) -> Result<(), String> {
    // rustls takes a bounded amount per `read_tls`: feed it until all is in.
    while !data.is_empty() {
        let tls = c.tls.as_mut().expect("a TLS connection");
        tls.read_tls(&mut data).map_err(|e| format!("TLS read: {e}"))?;
        tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
        loop {
            let tls = c.tls.as_mut().expect("a TLS connection");
            match tls.reader().read(plain) {
                Ok(0) => return Err("the server closed the TLS connection (close_notify)".into()),
                Ok(n) => on_data(c, sh, &plain[..n], now)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
    }
    Ok(())
}

fn flush(c: &mut Conn) -> Result<(), String> {
    if let Some(tls) = c.tls.as_mut() {
        // Encrypted as one record (buffered until the handshake completes),
        // then written with whatever else rustls has to send.
        if !c.wbuf.is_empty() {
            tls.writer().write_all(&c.wbuf).map_err(|e| format!("TLS write: {e}"))?;
            c.wbuf.clear();
        }
        while tls.wants_write() {
            match tls.write_tls(&mut c.sock) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        return Ok(());
    }
    while !c.wbuf.is_empty() {
        match c.sock.write(&c.wbuf) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

fn on_data(c: &mut Conn, sh: &mut Shared, data: &[u8], now: Instant) -> Result<(), String> {
    if c.st == St::Handshake {
        c.rbuf.extend_from_slice(data);
        let Some(end) = c.rbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if c.rbuf.len() > 8192 {
                return Err("response head over 8 KiB".into());
            }
            return Ok(());
        };
        if !c.rbuf.starts_with(b"HTTP/1.1 101 ") {
            let head = String::from_utf8_lossy(&c.rbuf[..end]);
            return Err(format!("upgrade refused: {}", head.lines().next().unwrap_or("")));
        }
        c.st = St::Open;
        sh.opened += 1;
        match sh.mode {
            Mode::Idle => c.wbuf.extend_from_slice(&sh.heartbeat),
            Mode::Echo { in_flight } => {
                for _ in 0..in_flight {
                    if !sh.take_send() {
                        break;
                    }
                    c.wbuf.extend_from_slice(&sh.echo_frame);
                    c.sent_at.push_back(now);
                }
            }
        }
        let rest = c.rbuf.split_off(end + 4);
        c.rbuf = Vec::new();
        return if rest.is_empty() {
            Ok(())
        } else {
            frames(c, sh, &rest, now)
        };
    }
    frames(c, sh, data, now)
}

/// Consumes the complete frames of `rbuf + data`, keeping any tail.
fn frames(c: &mut Conn, sh: &mut Shared, data: &[u8], now: Instant) -> Result<(), String> {
    if c.rbuf.is_empty() {
        let used = consume(data, c, sh, now)?;
        c.rbuf.extend_from_slice(&data[used..]);
    } else {
        let mut buf = std::mem::take(&mut c.rbuf);
        buf.extend_from_slice(data);
        let used = consume(&buf, c, sh, now)?;
        buf.drain(..used);
        c.rbuf = buf;
    }
    Ok(())
}

fn consume(buf: &[u8], c: &mut Conn, sh: &mut Shared, now: Instant) -> Result<usize, String> {
    let mut pos = 0;
    while let Some((h, hlen)) = parse_header_any(&buf[pos..]).map_err(|e| format!("bad server frame: {}", e.reason))? {
        if h.mask.is_some() || h.len > 1 << 20 {
            return Err(format!("unexpected server frame {h:?}"));
        }
        let total = hlen + h.len as usize;
        if buf.len() - pos < total {
            break;
        }
        let payload = &buf[pos + hlen..pos + total];
        match h.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if h.fin {
                    on_message(c, sh, payload, now)?;
                }
            }
            OpCode::Ping => encode_frame_masked(&mut c.wbuf, true, OpCode::Pong, payload, MASK),
            OpCode::Pong => {}
            OpCode::Close => {
                let code = payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                return Err(format!(
                    "the server sent a close frame: {code:?} {}",
                    String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]))
                ));
            }
        }
        pos += total;
    }
    Ok(pos)
}

fn on_message(c: &mut Conn, sh: &mut Shared, payload: &[u8], now: Instant) -> Result<(), String> {
    match sh.mode {
        // The peer echoes the heartbeat; wsbeat does not. Either is fine.
        Mode::Idle => Ok(()),
        Mode::Echo { .. } => {
            let Some(sent) = c.sent_at.pop_front() else {
                return Err("a message that was not sent came back".into());
            };
            if payload != ECHO_PAYLOAD {
                return Err(format!("echo mismatch: {:?}", String::from_utf8_lossy(payload)));
            }
            if sh.recording {
                sh.stats.echoes += 1;
                sh.stats.rtt_ns.push(now.duration_since(sent).as_nanos() as u64);
                sh.stats.last_echo = Some(now);
            }
            if sh.take_send() {
                c.wbuf.extend_from_slice(&sh.echo_frame);
                c.sent_at.push_back(now);
            }
            Ok(())
        }
    }
}

/// The name the TLS clients ask for (SNI), one of the certificate's names.
pub const SERVER_NAME: &str = "localhost";

/// The clients' TLS configuration: aws-lc-rs, TLS 1.3 and 1.2 offered,
/// ALPN `http/1.1` (as a browser's WebSocket offers), no resumption, and
/// `cert` as the one certificate trusted. `prefer` (e.g.
/// `TLS13_AES_128_GCM_SHA256`) is offered first, the others after it in
/// the provider's order: a server that follows the client's order (both
/// here do) picks it.
#[allow(dead_code)] // used by benches/load.rs only
pub fn client_config(cert: CertificateDer<'static>, prefer: &str) -> Result<Arc<ClientConfig>, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    if !provider.cipher_suites.iter().any(|s| name(s) == prefer) {
        let known: Vec<String> = provider.cipher_suites.iter().map(name).collect();
        return Err(format!("no cipher suite {prefer:?} (known: {})", known.join(", ")));
    }
    // A stable sort: the rest keep the provider's order.
    provider.cipher_suites.sort_by_key(|s| name(s) != prefer);
    let provider = Arc::new(provider);
    let verifier = Arc::new(Pinned {
        cert,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake: the server's cost for a new client.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Trusts one certificate by its bytes, instead of building a chain to a
/// root: a web PKI check would spend the generator's CPU on a signature
/// that says nothing here. The handshake signature is still verified.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `fmt::Write` into a byte buffer (the request is formatted in place).
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
