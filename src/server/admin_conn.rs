//! Admin API connections on the event loop: accept, read, parse (pipelined,
//! keep-alive), route, write, and `/events` streams.

use std::io::{self, Read};
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::event_loop::{ADMIN_FLAG, GENERATION_MASK, READ_BUFFER, Server};
use super::handler::Outgoing;
use crate::admin::http::{self, Limits, Parse};
use crate::admin::metrics::{self, Gauges};
use crate::admin::{self as api, Backend, ClientInfo, Routed, Settings};
use crate::timer::TimerKey;

pub(super) struct AdminConn {
    stream: TcpStream,
    token: u64,
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
}

impl Server {
    pub(super) fn accept_admin(&mut self) {
        loop {
            let Some(listener) = self.admin_listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let generation = self.core.next_generation;
                    self.core.next_generation = (generation + 1) & GENERATION_MASK;
                    let entry = self.admin.vacant_entry();
                    let token = ADMIN_FLAG | ((generation as u64) << 32) | entry.key() as u64;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(token as usize), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let at = self.core.now + self.core.cfg.admin_idle_timeout.as_millis() as u64;
                    let timer = Some(self.core.timers.schedule(at, token));
                    entry.insert(AdminConn {
                        stream,
                        token,
                        peer,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        want_write: false,
                        timer,
                        events: false,
                        close_after_flush: false,
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

    fn admin_index(&self, token: u64) -> Option<usize> {
        let idx = (token & 0xFFFF_FFFF) as usize;
        match self.admin.get(idx) {
            Some(a) if a.token == token => Some(idx),
            _ => None,
        }
    }

    pub(super) fn admin_event(&mut self, token: u64, readable: bool, writable: bool) {
        let Some(idx) = self.admin_index(token) else { return };
        if writable && !self.admin_flush(idx) {
            return;
        }
        if readable {
            self.admin_readable(idx);
        }
    }

    /// The most a client may have buffered: a full header block, a full
    /// body, and one read.
    fn admin_input_cap(&self) -> usize {
        http::MAX_HEADER_BYTES + self.core.cfg.max_message_size + READ_BUFFER
    }

    fn admin_readable(&mut self, idx: usize) {
        loop {
            let a = &mut self.admin[idx];
            match a.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.admin_drop(idx, "closed by peer");
                    return;
                }
                Ok(n) => {
                    if !a.events && !a.close_after_flush {
                        a.inbuf.extend_from_slice(&self.rbuf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.admin_drop(idx, "read error");
                    return;
                }
            }
            // Parse as we go, so pipelined requests never pile up past the cap.
            if !self.admin_process(idx) {
                return;
            }
        }
        self.admin_flush(idx);
    }

    /// Answers every complete request in the input. False if the connection
    /// was dropped.
    fn admin_process(&mut self, idx: usize) -> bool {
        let cap = self.admin_input_cap();
        let limits = Limits {
            max_body: self.core.cfg.max_message_size,
        };
        let token = self.core.cfg.admin_token.clone();
        let mut input = std::mem::take(&mut self.admin[idx].inbuf);
        let mut out = std::mem::take(&mut self.admin[idx].out);
        let mut pos = 0;
        let mut events = false;
        let mut close = false;
        let mut served = 0;
        while pos < input.len() && !events && !close {
            match http::parse_request(&input[pos..], &limits) {
                Parse::Partial => break,
                Parse::Complete(req, used) => {
                    pos += used;
                    served += 1;
                    let settings = Settings {
                        token: token.as_deref(),
                    };
                    if api::route(&req, &settings, self, &mut out) == Routed::Events {
                        events = true;
                    }
                    close = !req.keep_alive;
                }
                Parse::Error(e) => {
                    http::write_json_error(&mut out, e.status, e.message, &[], false);
                    close = true;
                }
            }
        }
        self.core.metrics.admin_requests += served;
        let keepalive = self.keepalive_ms();
        input.drain(..pos);
        let a = &mut self.admin[idx];
        if events || close {
            // Nothing more is read from a stream or a closing connection.
            input = Vec::new();
        } else if input.len() > cap {
            // Cannot happen with a parser that errs past its limits; a guard
            // against a silent pile-up all the same.
            a.inbuf = Vec::new();
            a.out = out;
            self.admin_drop(idx, "input over its cap");
            return false;
        }
        a.inbuf = input;
        a.out = out;
        a.events |= events;
        a.close_after_flush |= close;
        if served > 0 && !a.events {
            let at = self.core.now + self.core.cfg.admin_idle_timeout.as_millis() as u64;
            rearm(&mut self.core.timers, &mut a.timer, at, a.token);
        }
        if events {
            let at = self.core.now + keepalive;
            rearm(&mut self.core.timers, &mut a.timer, at, a.token);
            debug!("admin {}: subscribed to /events", a.peer);
        }
        true
    }

    fn keepalive_ms(&self) -> u64 {
        (self.core.cfg.admin_idle_timeout.as_millis() as u64 / 3).max(1)
    }

    /// Writes pending output. False if the connection was dropped.
    fn admin_flush(&mut self, idx: usize) -> bool {
        let a = &mut self.admin[idx];
        while a.out_pos < a.out.len() {
            match io::Write::write(&mut a.stream, &a.out[a.out_pos..]) {
                Ok(0) => break,
                Ok(n) => a.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.admin_drop(idx, "write error");
                    return false;
                }
            }
        }
        let backlog = a.out.len() - a.out_pos;
        if backlog > self.core.cfg.max_backpressure {
            // A client that does not read its responses or its event stream.
            self.admin_drop(idx, "backpressure");
            return false;
        }
        if backlog == 0 {
            a.out = Vec::new();
            a.out_pos = 0;
            if a.close_after_flush {
                self.admin_drop(idx, "done");
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
                .poll
                .registry()
                .reregister(&mut a.stream, Token(a.token as usize), interest)
                .is_err()
            {
                self.admin_drop(idx, "reregister failed");
                return false;
            }
        }
        true
    }

    fn admin_drop(&mut self, idx: usize, why: &str) {
        let a = self.admin.remove(idx);
        if let Some(k) = a.timer {
            self.core.timers.cancel(k);
        }
        debug!("admin {}: closed: {why}", a.peer);
    }

    pub(super) fn admin_timer(&mut self, token: u64) {
        let Some(idx) = self.admin_index(token) else { return };
        let a = &mut self.admin[idx];
        a.timer = None;
        if a.events {
            a.out.extend_from_slice(b": keepalive\n\n");
            let at = self.core.now + self.keepalive_ms();
            let a = &mut self.admin[idx];
            a.timer = Some(self.core.timers.schedule(at, a.token));
            self.admin_flush(idx);
        } else {
            self.admin_drop(idx, "idle timeout");
        }
    }

    /// Sends this turn's presence events to every `/events` subscriber.
    pub(super) fn publish_events(&mut self) {
        let subscribers: Vec<usize> = self.admin.iter().filter(|(_, a)| a.events).map(|(k, _)| k).collect();
        if subscribers.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        for ev in &self.core.events {
            api::write_event(&mut bytes, ev);
        }
        for idx in subscribers {
            self.admin[idx].out.extend_from_slice(&bytes);
            self.admin_flush(idx);
        }
    }

    /// On shutdown, after each turn's events are out: every admin
    /// connection closes once its output is written (event streams get the
    /// offline events of the shutdown first).
    pub(super) fn admin_shutdown(&mut self) {
        let idxs: Vec<usize> = self.admin.iter().map(|(k, _)| k).collect();
        for idx in idxs {
            let a = &mut self.admin[idx];
            a.close_after_flush = true;
            a.inbuf.clear();
            if a.out_pos == a.out.len() {
                self.admin_drop(idx, "shutting down");
            }
        }
    }

    fn wall_ms(&self, mono: u64) -> u64 {
        self.core.wall.saturating_sub(self.core.now.saturating_sub(mono))
    }

    fn client_info(&self, id: &str, token: u64) -> Option<ClientInfo> {
        let idx = (token & 0xFFFF_FFFF) as usize;
        let c = self.conns.get(idx).filter(|c| c.token == token)?;
        Some(ClientInfo {
            id: id.to_string(),
            peer: c.peer_addr()?,
            connected_at_ms: self.wall_ms(c.connected_at),
            last_seen_ms: self.wall_ms(c.last_seen),
        })
    }
}

fn rearm(timers: &mut crate::timer::TimerWheel<u64>, key: &mut Option<TimerKey>, at: u64, token: u64) {
    if let Some(k) = *key
        && timers.reset(k, at)
    {
        return;
    }
    *key = Some(timers.schedule(at, token));
}

impl Backend for Server {
    fn client(&self, id: &str) -> Option<ClientInfo> {
        let token = self.core.registry.get(id)?;
        self.client_info(id, token)
    }

    fn clients_page(&self, after: Option<&str>, limit: usize) -> (usize, Vec<ClientInfo>, bool) {
        let mut page: Vec<ClientInfo> = self
            .core
            .registry
            .page(after, limit + 1)
            .filter_map(|(id, token)| self.client_info(id, token))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (self.core.registry.len(), page, more)
    }

    fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        let ok = Server::push(self, id, msg);
        self.run_deferred();
        ok
    }

    fn broadcast(&mut self, msg: Outgoing) -> usize {
        let n = Server::broadcast(self, msg);
        self.run_deferred();
        n
    }

    fn kick(&mut self, id: &str, reason: &str) -> bool {
        let ok = Server::kick(self, id, reason);
        self.run_deferred();
        ok
    }

    fn metrics(&self) -> String {
        let open = self.conns.len();
        // One pass over the connections per scrape keeps the hot path free
        // of bookkeeping.
        let (mut buffering, mut buffered) = (0, 0);
        for (_, c) in self.conns.iter() {
            let b = c.buffered_bytes();
            buffering += usize::from(b > 0);
            buffered += b;
        }
        metrics::render(
            &self.core.metrics,
            Gauges {
                connections_open: open,
                clients_online: self.core.registry.len(),
                sse_subscribers: self.admin.iter().filter(|(_, a)| a.events).count(),
                admin_connections: self.admin.len(),
                connections_buffering: buffering,
                buffered_bytes: buffered,
            },
        )
    }
}
