//! Admin API connections on the event loop: accept, read, parse (pipelined,
//! keep-alive), answer through `crate::admin` and its [`Backend`], write,
//! and keep `/events` streams fed. They have their own small timer wheel
//! (idle timeouts, keep-alive comments): there are few of them.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use slab::Slab;

use super::connections::{send_records, write_plain, write_some};
use super::token::admin_token;
use crate::admin::http::{self, Limits, Parse};
use crate::admin::{self as api, Backend, RemoteResult, Routed};
use crate::config::Config;
use crate::presence::{ConnId, NodeEvent};
use crate::session::ms;
use crate::timer::{TimerKey, TimerWheel};
use crate::tls::{TlsCerts, TlsLink};

struct AdminConn {
    stream: TcpStream,
    /// With `--admin-tls`: requests and responses below are plaintext.
    tls: Option<Box<TlsLink>>,
    id: ConnId,
    peer: SocketAddr,
    /// Bytes of requests not yet complete.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
    timer: Option<TimerKey>,
    /// Subscribed to `/events`: input is ignored, output never ends.
    events: bool,
    /// Close once the output is written.
    close_after_flush: bool,
    /// Waiting for the result of a request other nodes must answer; later
    /// requests wait behind it (responses keep their order).
    parked: Option<Parked>,
    /// Requests parked so far: tells a late result from the awaited one.
    parked_count: u64,
}

struct Parked {
    seq: u64,
    reply: api::Reply,
    awaiting: api::Awaiting,
}

/// The longest a parked request waits: every admin answer comes within
/// 2 s, and the cluster gives up before this.
const PARK_TIMEOUT_MS: u64 = 1900;

/// Every admin connection of the loop.
pub(super) struct AdminConns {
    table: Slab<AdminConn>,
    timers: TimerWheel<ConnId>,
    registry: Registry,
    next_generation: u32,
    token: Option<String>,
    idle_ms: u64,
    max_body: usize,
    max_backpressure: usize,
    /// The most a client may have buffered: a full header block, a full
    /// body, and one read.
    input_cap: usize,
    /// Requests served, for `wsbeat_admin_requests_total`.
    pub requests: u64,
    /// Connections whose parked request timed out, to serve what waited
    /// behind it.
    resume: Vec<ConnId>,
    /// With `--admin-tls`: the certificate, shared with the WebSocket
    /// listener (and its reloads).
    tls: Option<Arc<TlsCerts>>,
    /// TLS records to send, and plaintext not wanted (input after a
    /// request that ends the connection or starts a stream).
    tls_out: Vec<u8>,
    tls_discard: Vec<u8>,
}

impl AdminConns {
    /// `tls`: the certificate to serve the API with (`--admin-tls`).
    pub fn new(cfg: &Config, registry: Registry, read_buffer: usize, tls: Option<Arc<TlsCerts>>) -> Self {
        AdminConns {
            table: Slab::new(),
            timers: TimerWheel::new(0),
            registry,
            next_generation: 0,
            token: cfg.admin_token.clone(),
            idle_ms: ms(cfg.admin_idle_timeout),
            max_body: cfg.max_message_size,
            max_backpressure: cfg.max_backpressure,
            input_cap: http::MAX_HEADER_BYTES + cfg.max_message_size + read_buffer,
            requests: 0,
            resume: Vec::new(),
            tls,
            tls_out: Vec::new(),
            tls_discard: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Open `/events` streams.
    pub fn subscribers(&self) -> usize {
        self.table.iter().filter(|(_, a)| a.events).count()
    }

    /// Pending idle and keep-alive timers.
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    pub fn next_expiry(&self) -> Option<u64> {
        self.timers.next_expiry()
    }

    fn keepalive_ms(&self) -> u64 {
        (self.idle_ms / 3).max(1)
    }

    fn rearm(&mut self, idx: usize, at: u64) {
        let a = &mut self.table[idx];
        self.timers.rearm(&mut a.timer, at, a.id);
    }

    pub fn accept(&mut self, listener: &TcpListener, now: u64) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let tls = match &self.tls {
                        Some(certs) => match TlsLink::new(certs.current()) {
                            Ok(link) => Some(Box::new(link)),
                            Err(e) => {
                                warn!("admin {peer}: TLS: {e}");
                                continue;
                            }
                        },
                        None => None,
                    };
                    let generation = self.next_generation;
                    self.next_generation = generation.wrapping_add(1) & ConnId::GENERATION_MASK;
                    let entry = self.table.vacant_entry();
                    let id = ConnId::new(entry.key(), 0, generation);
                    if self
                        .registry
                        .register(&mut stream, admin_token(id), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let timer = Some(self.timers.schedule(now + self.idle_ms, id));
                    entry.insert(AdminConn {
                        stream,
                        tls,
                        id,
                        peer,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        want_write: false,
                        timer,
                        events: false,
                        close_after_flush: false,
                        parked: None,
                        parked_count: 0,
                    });
                    debug!("admin {peer}: accepted");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    warn!("admin accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// The slot named by a mio token, if its connection is still the one
    /// the token was made for.
    pub fn live_token(&self, slot: usize, token: mio::Token) -> Option<usize> {
        self.table
            .get(slot)
            .filter(|a| admin_token(a.id) == token)
            .map(|_| slot)
    }

    pub fn on_event(
        &mut self,
        idx: usize,
        readable: bool,
        writable: bool,
        now: u64,
        rbuf: &mut [u8],
        backend: &mut dyn Backend,
    ) {
        if writable && !self.flush(idx) {
            return;
        }
        if readable {
            self.on_readable(idx, now, rbuf, backend);
        }
    }

    fn on_readable(&mut self, idx: usize, now: u64, rbuf: &mut [u8], backend: &mut dyn Backend) {
        loop {
            let a = &mut self.table[idx];
            match a.stream.read(rbuf) {
                Ok(0) => {
                    self.drop_conn(idx, "closed by peer");
                    return;
                }
                Ok(n) => {
                    let wanted = !a.events && !a.close_after_flush;
                    match &mut a.tls {
                        None if wanted => a.inbuf.extend_from_slice(&rbuf[..n]),
                        None => {}
                        Some(link) => {
                            let plain = if wanted { &mut a.inbuf } else { &mut self.tls_discard };
                            self.tls_out.clear();
                            let received = link.receive(&mut rbuf[..n], plain, &mut self.tls_out);
                            self.tls_discard.clear();
                            let sent = send_records(&mut a.stream, link, &self.tls_out);
                            if let Err(f) = received {
                                debug!("admin {}: {f}", a.peer);
                                self.drop_conn(idx, "TLS failed");
                                return;
                            }
                            if sent.is_err() {
                                self.drop_conn(idx, "write error");
                                return;
                            }
                            if link.peer_closed() {
                                // Nothing more will be read; what is left of
                                // the answers is of no use to a client that
                                // has closed.
                                self.drop_conn(idx, "TLS closed by peer");
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(idx, "read error");
                    return;
                }
            }
            // Parse as we go, so pipelined requests never pile up past the cap.
            if !self.process(idx, now, backend) {
                return;
            }
        }
        self.flush(idx);
    }

    /// Answers every complete request in the input. False if the connection
    /// was dropped.
    fn process(&mut self, idx: usize, now: u64, backend: &mut dyn Backend) -> bool {
        let limits = Limits {
            max_body: self.max_body,
        };
        let settings = api::Settings {
            token: self.token.as_deref(),
        };
        let a = &mut self.table[idx];
        let mut input = std::mem::take(&mut a.inbuf);
        let mut out = std::mem::take(&mut a.out);
        let mut pos = 0;
        let mut events = false;
        // A parked request that said `Connection: close` ended the input.
        let mut close = a.close_after_flush;
        let mut served = 0;
        let was_parked = a.parked.is_some();
        let mut parked = was_parked;
        while pos < input.len() && !events && !close && !parked {
            match http::parse_request(&input[pos..], &limits) {
                Parse::Partial => break,
                Parse::Complete(req, used) => {
                    pos += used;
                    served += 1;
                    match api::route(&req, &settings, backend, &mut out) {
                        Routed::Done => close = !req.keep_alive,
                        Routed::Events => events = true,
                        Routed::Remote(op, reply) => {
                            a.parked_count += 1;
                            let awaiting = api::Awaiting::of(&op);
                            a.parked = Some(Parked {
                                seq: a.parked_count,
                                reply,
                                awaiting,
                            });
                            parked = true;
                            backend.remote(op, (a.id, a.parked_count));
                        }
                    }
                }
                Parse::Error(e) if e.status == 413 => {
                    // Say what the limit is and which flag sets it.
                    let msg = format!(
                        "request body too large: at most {} bytes (--max-message-size)",
                        self.max_body
                    );
                    http::write_json_error(&mut out, 413, &msg, &[], false);
                    close = true;
                }
                Parse::Error(e) => {
                    http::write_json_error(&mut out, e.status, e.message, &[], false);
                    close = true;
                }
            }
        }
        self.requests += served;
        input.drain(..pos);
        let over_cap = input.len() > self.input_cap;
        if events || close || over_cap {
            // Nothing more is read from a stream or a closing connection.
            input = Vec::new();
        }
        a.inbuf = input;
        a.out = out;
        if over_cap {
            // Cannot happen with a parser that errs past its limits; a guard
            // against a silent pile-up all the same.
            self.drop_conn(idx, "input over its cap");
            return false;
        }
        a.events |= events;
        a.close_after_flush |= close;
        let subscribed = a.events;
        if parked && !was_parked {
            // Armed once per parked request: bytes arriving behind it do
            // not push its deadline out.
            self.rearm(idx, now + PARK_TIMEOUT_MS);
        } else if !parked && served > 0 && !subscribed {
            self.rearm(idx, now + self.idle_ms);
        }
        if events {
            self.rearm(idx, now + self.keepalive_ms());
            debug!("admin {}: subscribed to /events", self.table[idx].peer);
        }
        true
    }

    /// Writes pending output. False if the connection was dropped.
    fn flush(&mut self, idx: usize) -> bool {
        let a = &mut self.table[idx];
        let link = a.tls.as_deref_mut();
        match write_plain(&mut a.stream, link, &a.out[a.out_pos..], &mut self.tls_out) {
            Ok(w) => a.out_pos += w.plain,
            Err(_) => {
                self.drop_conn(idx, "write error");
                return false;
            }
        }
        let tls_unsent = a.tls.as_ref().map_or(0, |l| l.unsent().len());
        let backlog = a.out.len() - a.out_pos + tls_unsent;
        if backlog > self.max_backpressure {
            // A client that does not read its responses or its event stream.
            self.drop_conn(idx, "backpressure");
            return false;
        }
        if backlog == 0 {
            a.out = Vec::new();
            a.out_pos = 0;
            if a.close_after_flush {
                if let Some(link) = a.tls.as_deref_mut()
                    && let Ok(n) = link.close_notify(&mut self.tls_out)
                {
                    // Best effort: the output is drained, so these few
                    // bytes fit in the socket.
                    let _ = write_some(&mut a.stream, &self.tls_out[..n]);
                }
                self.drop_conn(idx, "done");
                return false;
            }
        }
        let want = backlog > 0;
        if want != a.want_write {
            a.want_write = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .registry
                .reregister(&mut a.stream, admin_token(a.id), interest)
                .is_err()
            {
                self.drop_conn(idx, "reregister failed");
                return false;
            }
        }
        true
    }

    fn drop_conn(&mut self, idx: usize, why: &str) {
        let a = self.table.remove(idx);
        if let Some(k) = a.timer {
            self.timers.cancel(k);
        }
        debug!("admin {}: closed: {why}", a.peer);
    }

    /// Runs the timers due at `now`: a keep-alive comment for streams, the
    /// idle timeout for the others.
    pub fn expire(&mut self, now: u64) {
        while let Some((_, id)) = self.timers.poll(now) {
            let idx = id.slot();
            if self.table.get(idx).is_none_or(|a| a.id != id) {
                continue;
            }
            let a = &mut self.table[idx];
            a.timer = None;
            if a.parked.is_some() {
                // The cluster did not answer in time: 503 now (the cluster
                // ends its operations before this); requests behind it are
                // served by `resume`.
                self.complete_parked(idx, RemoteResult::Unavailable);
                self.rearm(idx, now + self.idle_ms);
                self.resume.push(id);
            } else if a.events {
                a.out.extend_from_slice(b": keepalive\n\n");
                self.rearm(idx, now + self.keepalive_ms());
                self.flush(idx);
            } else {
                self.drop_conn(idx, "idle timeout");
            }
        }
    }

    /// Serves what waited behind requests that timed out in [`expire`].
    ///
    /// [`expire`]: AdminConns::expire
    pub fn resume(&mut self, now: u64, backend: &mut dyn Backend) {
        for id in std::mem::take(&mut self.resume) {
            let idx = id.slot();
            if self.table.get(idx).is_some_and(|a| a.id == id) && self.process(idx, now, backend) {
                self.flush(idx);
            }
        }
    }

    /// Whether [`resume`](AdminConns::resume) has work.
    pub fn has_resumable(&self) -> bool {
        !self.resume.is_empty()
    }

    /// Writes a parked request's answer.
    fn complete_parked(&mut self, idx: usize, result: RemoteResult) {
        let a = &mut self.table[idx];
        let Some(p) = a.parked.take() else { return };
        api::write_awaited(&mut a.out, &p.awaiting, result, p.reply);
        a.close_after_flush |= !p.reply.keep_alive;
    }

    /// The result of a remote operation, for the admin connection that is
    /// waiting for it (if it still is: it may have timed out or gone).
    pub fn on_remote_result(
        &mut self,
        waiter: (ConnId, u64),
        result: RemoteResult,
        now: u64,
        backend: &mut dyn Backend,
    ) {
        let (id, seq) = waiter;
        let idx = id.slot();
        let waiting = self
            .table
            .get(idx)
            .is_some_and(|a| a.id == id && a.parked.as_ref().is_some_and(|p| p.seq == seq));
        if !waiting {
            return;
        }
        self.complete_parked(idx, result);
        self.rearm(idx, now + self.idle_ms);
        // Requests that arrived behind it.
        if self.process(idx, now, backend) {
            self.flush(idx);
        }
    }

    /// Sends presence events to every `/events` subscriber.
    pub fn publish(&mut self, events: &[NodeEvent], this_node: &str) {
        let subscribers: Vec<usize> = self.table.iter().filter(|(_, a)| a.events).map(|(k, _)| k).collect();
        if subscribers.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        for ev in events {
            api::write_event(&mut bytes, &ev.event, ev.node.as_deref().unwrap_or(this_node));
        }
        for idx in subscribers {
            self.table[idx].out.extend_from_slice(&bytes);
            self.flush(idx);
        }
    }

    /// On shutdown, after each turn's events are out: every admin
    /// connection closes once its output is written (event streams get the
    /// offline events of the shutdown first).
    pub fn shut_down(&mut self) {
        let idxs: Vec<usize> = self.table.iter().map(|(k, _)| k).collect();
        for idx in idxs {
            let a = &mut self.table[idx];
            a.close_after_flush = true;
            a.inbuf.clear();
            let tls_unsent = a.tls.as_ref().map_or(0, |l| l.unsent().len());
            if a.out_pos == a.out.len() && tls_unsent == 0 {
                // Closes it (with close_notify over TLS): nothing waits.
                self.flush(idx);
            }
        }
    }
}
