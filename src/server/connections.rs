//! The WebSocket connections of a loop: their sockets in a slab, moving
//! bytes between sockets and sessions (`crate::session`), and dropping a
//! connection when its session or its socket says so.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::links::Shared;
use super::token::conn_token;
use crate::presence::{ConnId, OfflineReason};
use crate::session::{After, Context, Drained, Fanout, Session, Sessions};
use crate::tls::TlsLink;

/// Reads per connection per readiness event before others get their turn.
const MAX_READS_PER_EVENT: usize = 16;
/// Plaintext encrypted per write: what a backed-up TLS connection holds as
/// ciphertext beyond its session's (plaintext) backlog.
const ENCRYPT_CHUNK: usize = 64 * 1024;

pub(super) type Conn = Session<TcpStream>;

/// Whether a connection is still there after an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Fate {
    Alive,
    Dropped,
}

/// Every WebSocket connection of the loop and what their sessions share.
pub(super) struct Connections {
    pub table: Slab<Conn>,
    pub cx: Context,
    /// This loop's index among the process's loops.
    pub loop_index: usize,
    pub shared: Arc<Shared>,
    /// The poller's registry, for write interest.
    registry: Registry,
    next_generation: u32,
    /// One past the highest slot ever used: where a broadcast's walk ends.
    high_water: usize,
    /// Broadcasts in progress, oldest first.
    pub fanouts: VecDeque<Fanout>,
    /// When this turn's time for broadcasts is up (set by the first one).
    pub fanout_until: Option<std::time::Instant>,
    /// Messages for single clients that wait for the broadcasts in progress.
    pub behind_fanouts: Vec<crate::handler::Command>,
    /// The TLS state of each slot (`--tls-cert`), beside the table rather
    /// than in the session, so that a plain server pays nothing for it.
    tls: Vec<Option<Box<TlsLink>>>,
    /// What one read decrypted, the records its handshake answers, and
    /// encrypted output: shared by every TLS connection of the loop, so
    /// that an idle one holds no buffer. `tls_out` keeps its length (only
    /// the first bytes an encryption reports are meaningful), so that it is
    /// not zeroed again for every message.
    tls_plain: Vec<u8>,
    tls_records: Vec<u8>,
    tls_out: Vec<u8>,
    /// The server is closing every connection (shutdown).
    pub closing_all: bool,
}

impl Connections {
    pub fn new(cx: Context, loop_index: usize, shared: Arc<Shared>, registry: Registry, capacity: usize) -> Self {
        Connections {
            table: Slab::with_capacity(capacity),
            cx,
            loop_index,
            shared,
            registry,
            next_generation: 0,
            high_water: 0,
            fanouts: VecDeque::new(),
            fanout_until: None,
            behind_fanouts: Vec::new(),
            tls: Vec::new(),
            tls_plain: Vec::new(),
            tls_records: Vec::new(),
            tls_out: Vec::new(),
            closing_all: false,
        }
    }

    /// Takes an accepted socket, already counted in this loop's `assigned`:
    /// registers it and starts its session.
    pub fn insert(&mut self, mut stream: TcpStream) -> io::Result<()> {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1) & ConnId::GENERATION_MASK;
        let entry = self.table.vacant_entry();
        let slot = entry.key();
        let id = ConnId::new(slot, self.loop_index, generation);
        if let Err(e) = self.registry.register(&mut stream, conn_token(id), Interest::READABLE) {
            self.forget_one();
            return Err(e);
        }
        let tls = match &self.shared.tls {
            Some(certs) => match TlsLink::new(certs.current()) {
                Ok(link) => Some(Box::new(link)),
                Err(e) => {
                    self.forget_one();
                    return Err(io::Error::other(format!("TLS: {e}")));
                }
            },
            None => None,
        };
        entry.insert(Session::accept(stream, id, &mut self.cx));
        self.high_water = self.high_water.max(slot + 1);
        if tls.is_some() {
            if self.tls.len() <= slot {
                self.tls.resize_with(slot + 1, || None);
            }
            self.tls[slot] = tls;
        }
        Ok(())
    }

    /// Takes a connection out of the table, and its TLS state with it.
    fn remove(&mut self, idx: usize) -> Conn {
        let conn = self.table.remove(idx);
        self.forget_one();
        if let Some(link) = self.tls.get_mut(idx).and_then(Option::take)
            && !link.is_established()
            && link.received_any()
            && !self.closing_all
        {
            // Whatever ended it (an error, silence past the handshake
            // timeout, the client giving up), the handshake began and did
            // not complete. A TCP probe that sent nothing (a load
            // balancer's health check) is not a failure, nor is the
            // server's own shutdown.
            self.cx.metrics.tls_handshake_failures += 1;
        }
        conn
    }

    /// Heap bytes a connection's TLS link holds in its own buffers.
    pub fn tls_buffered(&self, idx: usize) -> usize {
        self.tls
            .get(idx)
            .and_then(Option::as_ref)
            .map_or(0, |l| l.buffered_bytes())
    }

    /// Ciphertext a TLS connection holds for its socket.
    fn tls_unsent(&self, idx: usize) -> usize {
        self.tls
            .get(idx)
            .and_then(Option::as_ref)
            .map_or(0, |l| l.unsent().len())
    }

    /// A connection of this loop is gone (or never came): one less to count.
    fn forget_one(&self) {
        self.shared.loops[self.loop_index]
            .assigned
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The slot of connection `id`, if it is still the one in it.
    pub fn live(&self, id: ConnId) -> Option<usize> {
        let slot = id.slot();
        self.table.get(slot).filter(|c| c.id() == id).map(|_| slot)
    }

    /// The slot named by a mio token, if its connection is still the one
    /// the token was made for.
    pub fn live_token(&self, slot: usize, token: mio::Token) -> Option<usize> {
        self.table
            .get(slot)
            .filter(|c| conn_token(c.id()) == token)
            .map(|_| slot)
    }

    pub fn on_event(&mut self, idx: usize, readable: bool, hangup: bool, writable: bool, rbuf: &mut [u8]) {
        if writable && self.on_writable(idx) == Fate::Dropped {
            return;
        }
        if readable {
            self.on_readable(idx, hangup, rbuf);
        }
    }

    /// Reads and hands to the session what the connection sent. `hangup`:
    /// the event also reported the peer's FIN or a reset, which raise no
    /// further event, so read on until the socket says so.
    fn on_readable(&mut self, idx: usize, hangup: bool, rbuf: &mut [u8]) {
        for _ in 0..MAX_READS_PER_EVENT {
            let conn = &mut self.table[idx];
            let n = match conn.io.read(rbuf) {
                Ok(0) => {
                    let (reason, why) = conn.on_eof();
                    self.drop_conn(idx, reason, why);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "read error");
                    return;
                }
            };
            self.cx.metrics.bytes_received += n as u64;
            let after = match self.tls.get_mut(idx).and_then(Option::as_deref_mut) {
                None => conn.on_bytes(&mut self.cx, &mut rbuf[..n]),
                Some(_) => match self.tls_input(idx, &mut rbuf[..n]) {
                    Some(after) => after,
                    None => return,
                },
            };
            if self.apply(idx, after) == Fate::Dropped {
                return;
            }
            if self
                .tls
                .get(idx)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.peer_closed())
            {
                // close_notify: no more input will come. Answered with ours
                // (TLS 1.2 requires it).
                self.close_notify(idx);
                let (reason, why) = self.table[idx].on_eof();
                self.drop_conn(idx, reason, why);
                return;
            }
            // A short read drained the socket: with edge-triggered readiness
            // the next byte to arrive raises a new event, so another read
            // now would only return WouldBlock. Not so for a FIN or a reset
            // reported with this event: only a read shows it.
            if n < rbuf.len() && !hangup {
                return;
            }
        }
        // Read budget spent with data still waiting: come back next turn
        // rather than starve the other connections. Re-registering re-arms
        // the edge so the remaining bytes raise a new event.
        let want_write = self.table[idx].want_write;
        let _ = self.set_interest(idx, want_write);
    }

    /// A TLS connection's ciphertext: decrypts it, sends what the handshake
    /// answers, and hands the plaintext to the session. `None`: the
    /// connection failed and is gone.
    fn tls_input(&mut self, idx: usize, data: &mut [u8]) -> Option<After> {
        let Connections {
            table,
            tls,
            tls_plain,
            tls_records,
            cx,
            ..
        } = self;
        let conn = &mut table[idx];
        let link = tls[idx].as_deref_mut()?;
        tls_plain.clear();
        tls_records.clear();
        let received = link.receive(data, tls_plain, tls_records);
        // Handshake records and alerts go out before anything else.
        let sent = send_records(&mut conn.io, link, tls_records);
        cx.metrics.bytes_sent += *sent.as_ref().unwrap_or(&0) as u64;
        match (received, sent) {
            (Err(f), _) => {
                let why = if f.established {
                    "TLS error"
                } else {
                    "TLS handshake failed"
                };
                log::debug!("{}: {f}", conn.peer());
                self.drop_conn(idx, OfflineReason::Error, why);
                None
            }
            (Ok(_), Err(_)) => {
                self.drop_conn(idx, OfflineReason::Error, "write error");
                None
            }
            (Ok(r), Ok(_)) => {
                if r.established_now {
                    log::debug!(
                        "{}: TLS {:?}, ALPN {}",
                        conn.peer(),
                        link.version(),
                        link.alpn().map_or("none".into(), String::from_utf8_lossy)
                    );
                }
                Some(if tls_plain.is_empty() {
                    After::Keep
                } else {
                    conn.on_bytes(cx, tls_plain)
                })
            }
        }
    }

    fn on_writable(&mut self, idx: usize) -> Fate {
        let Connections {
            table,
            tls,
            tls_out,
            cx,
            ..
        } = self;
        let conn = &mut table[idx];
        let link = tls.get_mut(idx).and_then(Option::as_deref_mut);
        if conn.backlog() > 0 || link.as_ref().is_some_and(|l| !l.unsent().is_empty()) {
            let (io, unsent) = conn.io_and_unsent();
            match write_plain(io, link, unsent, tls_out) {
                Ok(w) => {
                    conn.wrote_unsent(w.plain);
                    cx.metrics.bytes_sent += w.wire as u64;
                }
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return Fate::Dropped;
                }
            }
        }
        self.after_write(idx)
    }

    /// Carries out a session's verdict: drop the connection, or write what
    /// the session produced (in `cx.out`).
    pub fn apply(&mut self, idx: usize, after: After) -> Fate {
        match after {
            After::Close(reason, _) => {
                self.cx.out.clear();
                if reason == OfflineReason::Closed {
                    // The close handshake is done (the client answered the
                    // server's close frame): end TLS cleanly too.
                    self.close_notify(idx);
                }
                // The session has already left; closing the descriptor
                // removes it from the poll set.
                self.remove(idx);
                Fate::Dropped
            }
            After::Keep => self.flush(idx),
        }
    }

    /// Writes what the session produced (in `cx.out`), keeps what the socket
    /// does not take, and runs what must happen once output drains.
    fn flush(&mut self, idx: usize) -> Fate {
        let Connections {
            table,
            tls,
            tls_out,
            cx,
            ..
        } = self;
        let conn = &mut table[idx];
        if !cx.out.is_empty() {
            let link = tls.get_mut(idx).and_then(Option::as_deref_mut);
            match write_plain(&mut conn.io, link, &cx.out, tls_out) {
                Ok(w) => {
                    cx.metrics.bytes_sent += w.wire as u64;
                    if w.plain < cx.out.len() {
                        conn.keep_unsent(&cx.out[w.plain..]);
                    }
                    cx.out.clear();
                }
                Err(_) => {
                    cx.out.clear();
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return Fate::Dropped;
                }
            }
        }
        self.after_write(idx)
    }

    fn after_write(&mut self, idx: usize) -> Fate {
        let tls_unsent = self.tls_unsent(idx);
        let conn = &mut self.table[idx];
        if conn.backlog() > 0 || tls_unsent > 0 {
            return if conn.want_write {
                Fate::Alive
            } else {
                self.set_interest(idx, true)
            };
        }
        let drained = conn.on_drained();
        if conn.want_write && self.set_interest(idx, false) == Fate::Dropped {
            return Fate::Dropped;
        }
        match drained {
            Drained::Close => {
                self.close_notify(idx);
                self.drop_conn(idx, OfflineReason::Closed, "closed");
                Fate::Dropped
            }
            Drained::ShutWrite => {
                self.close_notify(idx);
                let _ = self.table[idx].io.shutdown(Shutdown::Write);
                Fate::Alive
            }
            Drained::Nothing => Fate::Alive,
        }
    }

    /// (Re-)registers the connection for readability, and writability when
    /// `write` (which also re-arms an edge that was not consumed).
    fn set_interest(&mut self, idx: usize, write: bool) -> Fate {
        let conn = &mut self.table[idx];
        let interest = if write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        conn.want_write = write;
        let token = conn_token(conn.id());
        if self.registry.reregister(&mut conn.io, token, interest).is_err() {
            self.drop_conn(idx, OfflineReason::Error, "reregister failed");
            return Fate::Dropped;
        }
        Fate::Alive
    }

    /// A TLS connection closing cleanly says so (best effort: its output
    /// is drained, so the socket takes these few bytes).
    fn close_notify(&mut self, idx: usize) {
        let Connections {
            table,
            tls,
            tls_out,
            cx,
            ..
        } = self;
        if let Some(link) = tls.get_mut(idx).and_then(Option::as_deref_mut)
            && link.unsent().is_empty()
            && let Ok(n) = link.close_notify(tls_out)
            && n > 0
        {
            let sent = write_some(&mut table[idx].io, &tls_out[..n]).unwrap_or(0);
            cx.metrics.bytes_sent += sent as u64;
        }
    }

    /// Drops a connection for a reason of its socket's (or the loop's).
    pub fn drop_conn(&mut self, idx: usize, reason: OfflineReason, why: &str) {
        let mut conn = self.remove(idx);
        conn.gone(&mut self.cx, reason, why);
        // Closing the descriptor removes it from the poll set.
    }

    /// Runs a session's timer.
    pub fn on_timer(&mut self, idx: usize) {
        let after = self.table[idx].on_timer(&mut self.cx);
        let _ = self.apply(idx, after);
    }
}

impl Sessions for Connections {
    type Io = TcpStream;

    fn slots(&self) -> usize {
        self.high_water
    }

    fn session(&mut self, slot: usize) -> Option<(&mut Conn, &mut Context)> {
        let Connections { table, cx, .. } = self;
        table.get_mut(slot).map(|s| (s, cx))
    }

    fn carry_out(&mut self, slot: usize, after: After) {
        let _ = self.apply(slot, after);
    }
}

/// What a write through the transport took: plaintext consumed (encrypted
/// and sent, or kept as ciphertext by the TLS link), and bytes on the wire.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wrote {
    pub plain: usize,
    pub wire: usize,
}

/// Writes plaintext through the transport: as is, or encrypted by `link`,
/// whose ciphertext waiting from before goes first. Encrypts at most one
/// chunk the socket does not take, so a backed-up connection's backlog
/// stays plaintext in its session (counted against `--max-backpressure`).
pub(super) fn write_plain(
    tcp: &mut TcpStream,
    link: Option<&mut TlsLink>,
    plain: &[u8],
    scratch: &mut Vec<u8>,
) -> io::Result<Wrote> {
    let Some(link) = link else {
        let n = write_some(tcp, plain)?;
        return Ok(Wrote { plain: n, wire: n });
    };
    let mut wire = 0;
    if !link.unsent().is_empty() {
        let n = write_some(tcp, link.unsent())?;
        link.wrote_unsent(n);
        wire += n;
        if !link.unsent().is_empty() {
            return Ok(Wrote { plain: 0, wire });
        }
    }
    let mut done = 0;
    while done < plain.len() {
        let chunk = (plain.len() - done).min(ENCRYPT_CHUNK);
        let n = link
            .encrypt(&plain[done..done + chunk], scratch)
            .map_err(|f| io::Error::other(f.to_string()))?;
        done += chunk;
        let w = write_some(tcp, &scratch[..n])?;
        wire += w;
        if w < n {
            link.keep_unsent(&scratch[w..n]);
            break;
        }
    }
    Ok(Wrote { plain: done, wire })
}

/// Sends records the TLS state machine produced (handshake messages,
/// alerts), after any ciphertext already waiting; keeps what the socket
/// does not take. Returns the bytes written.
pub(super) fn send_records(tcp: &mut TcpStream, link: &mut TlsLink, records: &[u8]) -> io::Result<usize> {
    if records.is_empty() {
        return Ok(0);
    }
    if !link.unsent().is_empty() {
        link.keep_unsent(records);
        return Ok(0);
    }
    let n = write_some(tcp, records)?;
    if n < records.len() {
        link.keep_unsent(&records[n..]);
    }
    Ok(n)
}

/// Writes as much of `buf` as the socket takes without blocking.
pub(super) fn write_some<W: Write>(w: &mut W, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
