//! One WebSocket connection as a sans-IO state machine: the upgrade, frames,
//! heartbeats, the client id, liveness, and the close handshake.
//!
//! A [`Session`] never touches a socket or a clock. Its driver hands it the
//! bytes a read produced and the time (through the loop's [`Context`]), and
//! it answers with bytes to write (in [`Context::out`], or kept in the
//! session while the transport is backed up), presence changes and handler
//! callbacks (in the context), its next deadline (on the context's timer
//! wheel), and an [`After`] verdict: keep the transport, or close it now.
//!
//! Three drivers run this same code: the event loop (`crate::server`) with
//! a socket as the transport, the [`sim`] with none, for connection counts
//! this machine cannot open, and the `connection` fuzz target.
//!
//! Memory is the product: an idle upgraded session is this struct (80 bytes
//! with a socket), one timer entry, and its id in the registry. Everything
//! else — unsent output, an incomplete upgrade request, a split frame —
//! lives behind pointers that are null while there is none.

mod context;
mod fanout;
mod gate;
mod refusals;
pub mod sim;

use std::sync::Arc;

use log::{debug, info};

use crate::auth::AuthFailure;
use crate::auth::webhook::{Verdict, WebhookRequest};
use crate::config::{Liveness, ServerHeartbeat};
use crate::handler::{AppMessage, ConnId, ConnInfo, Outgoing, Peer, PeerAddr};
use crate::presence::OfflineReason;
use crate::protocol::frame::{self, OpCode};
use crate::protocol::handshake::{self, Outcome, Rejection};
use crate::protocol::heartbeat::{Due, Heartbeat, parse_heartbeat};
use crate::protocol::message::{Decoder, Message};
use crate::timer::TimerKey;

pub use context::{Context, ms};
pub use fanout::{Fanout, Sessions};
pub use gate::{AskBackend, Gate};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete upgrade request. The bytes of an incomplete
    /// request are kept in the spill (at most 8 KiB plus one read).
    Handshake,
    /// The upgrade request is complete and the auth webhook was asked; the
    /// `101` waits for its answer (or for `--auth-webhook-timeout`).
    Authorizing,
    /// Upgraded: frames flow both ways.
    Open,
    /// The server sent a close frame (eviction, replacement, policy) and
    /// waits for the client's; frames are still decoded, but only a close
    /// frame matters.
    Closing,
    /// The client's close was answered; the transport is closed as soon as
    /// the answer is flushed.
    CloseAfterFlush,
    /// Failed (protocol error, or a refused handshake): the last bytes are
    /// being flushed, then the write side is shut and input is discarded until
    /// the client closes or the close timeout passes. Draining the input
    /// instead of closing at once keeps the kernel from answering unread bytes
    /// with a reset that could destroy the response in flight.
    Failing { write_shut: bool },
}

/// The session's verdict on its transport after an input or a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep it; write what the session produced.
    Keep,
    /// Close it now, without writing anything more, and forget the session:
    /// it has already left (timer cancelled, registry, handler and counters
    /// told, as [`Session::gone`] does).
    Close(OfflineReason, &'static str),
}

/// What the driver does once a session's output is all written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    Nothing,
    /// Shut the write side (a failed connection's last bytes are out).
    ShutWrite,
    /// Close the transport (the answer to the client's close is out).
    Close,
}

/// Buffers a session needs only now and then.
#[derive(Default)]
struct Spill {
    /// Bytes the transport did not take.
    out: Vec<u8>,
    /// How much of `out` is already written.
    out_pos: usize,
    /// An upgrade request not complete yet; while authorizing, what the
    /// client sent after its request.
    handshake: Vec<u8>,
    /// While authorizing: what the `101` needs once the webhook answers.
    pending: Option<Box<Pending>>,
}

/// An upgrade waiting for the webhook.
struct Pending {
    accept: String,
    /// From `?client_id=`: must be the id the webhook gives.
    client_id: Option<Box<str>>,
}

/// More than [`handshake::MAX_HEADER_BYTES`] sent after an upgrade request
/// that waits for the webhook: a client must wait for the `101` before it
/// sends frames (RFC 6455 §4.1), so a little is kept, not more.
const EARLY_DATA: Rejection = Rejection {
    status: 400,
    reason: "data sent before the upgrade was answered",
};

/// What lets a session in.
enum Admit {
    /// Bind this id (if any); `exp`: a JWT's, in Unix seconds (0: none).
    Yes(Option<Box<str>>, u32),
    /// With, for an id mismatch, the id asked for and the id given.
    No(AuthFailure, Option<Box<(Box<str>, Box<str>)>>),
}

/// One connection. `T` is the driver's transport (a socket in the server,
/// `()` in the simulation); the session only ever asks it for the peer
/// address, to show in logs and to handlers.
pub struct Session<T = ()> {
    pub(crate) io: T,
    id: ConnId,
    phase: Phase,
    /// The driver's: whether it asked its poller for writability.
    pub(crate) want_write: bool,
    /// Upgraded and not yet left the registry, the handler and the metrics
    /// (see [`Session::leave`]): makes leaving happen exactly once.
    joined: bool,
    decoder: Decoder,
    spill: Option<Box<Spill>>,
    /// The session's one timer: handshake deadline, then the earlier of the
    /// next server heartbeat and the liveness deadline, then the close
    /// deadline. Liveness is re-checked lazily when it fires, so frames only
    /// update `last_seen` and never touch the wheel.
    timer: Option<TimerKey>,
    /// Bound client id, shared with the registry, while the session holds it.
    client_id: Option<Arc<str>>,
    /// Monotonic ms of the last liveness signal.
    last_seen: u64,
    /// Monotonic ms at which the next server heartbeat is due.
    next_beat: u64,
    /// The upgrade (accept time before it), in monotonic seconds and 4 ms
    /// steps: what the admin API shows needs no more, and the 3 bytes saved
    /// hold `exp` within the 80 bytes of a session.
    connected_s: u32,
    connected_q: u8,
    /// The JWT's `exp`, Unix seconds; 0 without JWT auth.
    exp: u32,
}

/// The output buffer to append to: the shared one while nothing waits, else
/// the session's own (created if missing), so frames stay in order. A free
/// function over the fields so it can be borrowed alongside the decoder.
fn sink<'a>(spill: &'a mut Option<Box<Spill>>, out: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
    match spill {
        Some(s) if s.out_pos < s.out.len() => &mut s.out,
        _ => out,
    }
}

fn spilled(spill: &mut Option<Box<Spill>>) -> &mut Vec<u8> {
    &mut spill.get_or_insert_with(Default::default).out
}

/// The handler's view of a session, from its fields (so it can be built
/// while the decoder is borrowed).
fn conn_info<'a>(id: ConnId, client_id: &'a Option<Arc<str>>, io: &'a dyn PeerAddr) -> ConnInfo<'a> {
    ConnInfo {
        conn: id,
        id: client_id.as_deref(),
        peer: io,
    }
}

impl<T: PeerAddr> Session<T> {
    /// A transport just accepted, waiting for its upgrade request; its
    /// handshake deadline is armed.
    pub fn accept(io: T, id: ConnId, cx: &mut Context) -> Self {
        let mut s = Session {
            io,
            id,
            phase: Phase::Handshake,
            want_write: false,
            joined: false,
            decoder: Decoder::new(),
            spill: None,
            timer: None,
            client_id: None,
            last_seen: cx.now,
            next_beat: u64::MAX,
            connected_s: 0,
            connected_q: 0,
            exp: 0,
        };
        s.set_connected_at(cx.now);
        let at = cx.now + cx.handshake_timeout;
        s.arm(cx, at);
        s
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The bound client id, if any.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Monotonic ms of the upgrade (of the accept, before it), to 4 ms.
    pub fn connected_at(&self) -> u64 {
        u64::from(self.connected_s) * 1000 + u64::from(self.connected_q) * 4
    }

    fn set_connected_at(&mut self, now: u64) {
        self.connected_s = (now / 1000).min(u32::MAX as u64) as u32;
        self.connected_q = ((now % 1000) / 4) as u8;
    }

    /// The JWT's `exp` (Unix seconds), with JWT auth.
    pub fn token_exp(&self) -> Option<u64> {
        (self.exp != 0).then_some(u64::from(self.exp))
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// Shows the peer address in a log line.
    pub(crate) fn peer(&self) -> Peer<'_> {
        Peer(&self.io)
    }

    /// Whether the decoder holds no partial frame or message.
    pub fn decoder_is_idle(&self) -> bool {
        self.decoder.is_idle()
    }

    /// Heap bytes held in this session's buffers (outbound bytes, a partial
    /// frame or message, an incomplete upgrade request).
    pub fn buffered_bytes(&self) -> usize {
        let spill = self.spill.as_ref().map_or(0, |s| {
            let pending = s.pending.as_ref().map_or(0, |p| {
                std::mem::size_of::<Pending>() + p.accept.capacity() + p.client_id.as_ref().map_or(0, |c| c.len())
            });
            std::mem::size_of::<Spill>() + s.out.capacity() + s.handshake.capacity() + pending
        });
        spill + self.decoder.heap_bytes()
    }

    /// Unsent bytes held by this session.
    pub fn backlog(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.out.len() - s.out_pos)
    }

    /// The bytes waiting for the transport.
    pub fn unsent(&self) -> &[u8] {
        self.spill.as_ref().map_or(&[], |s| &s.out[s.out_pos..])
    }

    /// The transport and the bytes waiting for it, to write them.
    pub(crate) fn io_and_unsent(&mut self) -> (&mut T, &[u8]) {
        let unsent = self.spill.as_ref().map_or(&[][..], |s| &s.out[s.out_pos..]);
        (&mut self.io, unsent)
    }

    /// The transport took `n` bytes of [`unsent`](Self::unsent).
    pub fn wrote_unsent(&mut self, n: usize) {
        if let Some(s) = &mut self.spill {
            s.out_pos = (s.out_pos + n).min(s.out.len());
        }
    }

    /// Keeps `bytes` as the unsent output (the transport took what came
    /// before them, and nothing else waits).
    pub fn keep_unsent(&mut self, bytes: &[u8]) {
        debug_assert_eq!(
            self.backlog(),
            0,
            "output goes to the session's buffer while it is non-empty"
        );
        let s = self.spill.get_or_insert_with(Default::default);
        s.out.clear();
        s.out.extend_from_slice(bytes);
        s.out_pos = 0;
    }

    /// The transport has written everything: give buffers back, and say
    /// what the phase wants now.
    pub fn on_drained(&mut self) -> Drained {
        self.release_spill();
        match self.phase {
            Phase::CloseAfterFlush => Drained::Close,
            Phase::Failing { write_shut: false } => {
                self.phase = Phase::Failing { write_shut: true };
                Drained::ShutWrite
            }
            _ => Drained::Nothing,
        }
    }

    fn release_spill(&mut self) {
        if let Some(s) = &mut self.spill {
            if s.out_pos == s.out.len() && s.out.capacity() > 0 {
                s.out = Vec::new();
                s.out_pos = 0;
            }
            if s.out.capacity() == 0 && s.handshake.is_empty() && s.pending.is_none() {
                self.spill = None;
            }
        }
    }

    /// The transport ended its input (a read of 0 bytes): why it is gone.
    pub fn on_eof(&self) -> (OfflineReason, &'static str) {
        match self.phase {
            Phase::Failing { .. } | Phase::Closing | Phase::CloseAfterFlush => (OfflineReason::Closed, "closed"),
            _ => (
                OfflineReason::Error,
                "peer closed the TCP connection without a close frame",
            ),
        }
    }

    /// The transport is closed (or about to be): the timer goes, the
    /// session leaves for `reason` if it had not yet.
    pub fn gone(&mut self, cx: &mut Context, reason: OfflineReason, why: &str) {
        if let Some(key) = self.timer.take() {
            cx.timers.cancel(key);
        }
        if self.phase == Phase::Authorizing {
            self.forget_authorization(cx);
        }
        match reason {
            OfflineReason::Backpressure => info!(
                "dropped {} ({}): backpressure",
                self.client_id.as_deref().unwrap_or("-"),
                self.peer()
            ),
            _ => debug!("{}: dropped: {why}", self.peer()),
        }
        self.leave(cx, reason);
    }

    /// Points the session's one timer at `at`.
    fn arm(&mut self, cx: &mut Context, at: u64) {
        cx.timers.rearm(&mut self.timer, at, self.id);
    }

    /// The session leaves the open state for `reason`: its id leaves the
    /// registry (if it still holds it) with an offline event, and the
    /// handler hears of it. Idempotent.
    fn leave(&mut self, cx: &mut Context, reason: OfflineReason) {
        if !self.joined {
            return;
        }
        self.joined = false;
        cx.open -= 1;
        cx.metrics.eviction(reason);
        let info = conn_info(self.id, &self.client_id, &self.io);
        cx.handler.on_close(&info, reason, &mut cx.ctl);
        if let Some(id) = self.client_id.take() {
            cx.unbind(id, self.id, reason);
        }
    }

    /// Handles bytes the transport just read, in place.
    pub fn on_bytes(&mut self, cx: &mut Context, data: &mut [u8]) -> After {
        match self.phase {
            Phase::Handshake => match self.spill.as_mut().filter(|s| !s.handshake.is_empty()) {
                None => self.on_handshake_bytes(cx, data, true),
                Some(s) => {
                    let mut pending = std::mem::take(&mut s.handshake);
                    pending.extend_from_slice(data);
                    let after = self.on_handshake_bytes(cx, &mut pending, false);
                    if self.phase == Phase::Handshake {
                        // Still incomplete: keep the bytes.
                        self.spill.get_or_insert_with(Default::default).handshake = pending;
                    } else {
                        self.release_spill();
                    }
                    after
                }
            },
            Phase::Authorizing => {
                let s = self.spill.get_or_insert_with(Default::default);
                if s.handshake.len() + data.len() > handshake::MAX_HEADER_BYTES {
                    s.pending = None;
                    s.handshake = Vec::new();
                    self.forget_authorization(cx);
                    self.refuse_request(cx, EARLY_DATA, &[]);
                } else {
                    s.handshake.extend_from_slice(data);
                }
                After::Keep
            }
            Phase::Open | Phase::Closing => self.on_frames(cx, data),
            Phase::CloseAfterFlush | Phase::Failing { .. } => After::Keep,
        }
    }

    /// The session stops waiting for the webhook other than by its answer:
    /// the call, if still queued, is not made.
    fn forget_authorization(&self, cx: &Context) {
        if let Gate::Webhook(backend, _) = &cx.gate {
            backend.cancel(self.id);
        }
    }

    /// Answers an upgrade request with an HTTP error and fails.
    fn refuse_request(&mut self, cx: &mut Context, r: Rejection, request: &[u8]) {
        cx.refusal(|| {
            let d = handshake::describe(request);
            let mut line = format!("{}: upgrade refused: {} {}", self.peer(), r.status, r.reason);
            if let Some(p) = d.path {
                line += &format!(", path {}", refusals::shown(p));
            }
            if let Some(o) = d.origin {
                line += &format!(", origin {}", refusals::shown(&String::from_utf8_lossy(o)));
            }
            if let Some(id) = d.client_id {
                line += &format!(", client_id {}", refusals::shown(id));
            }
            line
        });
        cx.metrics.handshake_failure(r.status);
        cx.metrics.reject(crate::metrics::RejectReason::HandshakeFailed);
        handshake::write_rejection(&mut cx.out, &r);
        self.release_spill();
        self.fail(cx);
    }

    fn on_handshake_bytes(&mut self, cx: &mut Context, data: &mut [u8], fresh: bool) -> After {
        match handshake::parse_request(data, &cx.policy()) {
            Outcome::Partial => {
                if fresh && !data.is_empty() {
                    self.spill.get_or_insert_with(Default::default).handshake = data.to_vec();
                }
                After::Keep
            }
            Outcome::Reject(r) => {
                self.refuse_request(cx, r, data);
                After::Keep
            }
            Outcome::Accept(a) => {
                let admit = match &cx.gate {
                    Gate::Open => Admit::Yes(a.client_id, 0),
                    Gate::Jwt(verifier) => match gate::check(verifier, a.token, cx.wall) {
                        Ok(claims) => match a.client_id {
                            Some(id) if id != claims.sub => {
                                Admit::No(AuthFailure::IdMismatch, Some(Box::new((id, claims.sub))))
                            }
                            _ => Admit::Yes(Some(claims.sub), gate::exp_u32(claims.exp)),
                        },
                        Err(f) => Admit::No(f, None),
                    },
                    Gate::Webhook(..) if data.len() - a.consumed > handshake::MAX_HEADER_BYTES => {
                        // As for bytes that come later while it waits.
                        self.refuse_request(cx, EARLY_DATA, data);
                        return After::Keep;
                    }
                    Gate::Webhook(backend, timeout) => {
                        let req = WebhookRequest {
                            peer: self.io.peer_addr(),
                            request: a.request.map(|r| *r).unwrap_or_default(),
                        };
                        let timeout = *timeout;
                        if backend.ask(self.id, req).is_err() {
                            cx.metrics.auth_failure(AuthFailure::WebhookBusy);
                            self.refuse_request(
                                cx,
                                Rejection {
                                    status: 503,
                                    reason: "too many upgrades waiting for authorization, try again later",
                                },
                                data,
                            );
                            return After::Keep;
                        }
                        self.phase = Phase::Authorizing;
                        let s = self.spill.get_or_insert_with(Default::default);
                        s.pending = Some(Box::new(Pending {
                            accept: a.accept,
                            client_id: a.client_id,
                        }));
                        s.handshake = data[a.consumed..].to_vec();
                        // The webhook answers within its timeout; this is
                        // the backstop, inside the handshake's own deadline.
                        let handshake_deadline = self.connected_at() + cx.handshake_timeout;
                        let at = (cx.now + timeout + 250).min(handshake_deadline);
                        self.arm(cx, at);
                        return After::Keep;
                    }
                };
                self.admit(cx, &a.accept, admit, &mut data[a.consumed..])
            }
        }
    }

    /// Sends the `101` and lets the session in with its id, or closes it at
    /// once with the auth failure's code and reason (a browser sees a close
    /// code; a refused upgrade would reach its scripts as 1006). `rest`:
    /// frames that came with the request.
    fn admit(&mut self, cx: &mut Context, accept: &str, admit: Admit, rest: &mut [u8]) -> After {
        handshake::write_accept(&mut cx.out, accept);
        let (id, exp) = match admit {
            Admit::Yes(id, exp) => (id, exp),
            Admit::No(failure, ids) => {
                let (code, reason) = failure.close();
                cx.refusal(|| {
                    let mut line = format!("{}: upgrade refused: close {code} {reason}", self.peer());
                    if let Some((asked, given)) = ids.as_deref() {
                        line += &format!(
                            ", client_id {} but authorized as {}",
                            refusals::shown(asked),
                            refusals::shown(given)
                        );
                    }
                    line
                });
                cx.metrics.auth_failure(failure);
                // Counted as close_inline counts it (1008 for a mismatch).
                cx.metrics.protocol_error(code);
                frame::encode_close(&mut cx.out, code, reason);
                self.phase = Phase::Closing;
                let at = cx.now + cx.close_timeout;
                self.arm(cx, at);
                return self.on_frames(cx, rest);
            }
        };
        self.phase = Phase::Open;
        self.joined = true;
        cx.open += 1;
        self.set_connected_at(cx.now);
        self.last_seen = cx.now;
        self.exp = exp;
        let (next_beat, wake_at) = cx.schedule.start(cx.now);
        self.next_beat = next_beat;
        let at = self.expiry_within(cx, wake_at);
        self.arm(cx, at);
        debug!("{}: upgraded", self.peer());
        let bound = match id {
            Some(id) => Some(cx.bind(&mut self.client_id, self.id, &id)),
            None => None,
        };
        let info = conn_info(self.id, &self.client_id, &self.io);
        cx.handler.on_open(&info, &mut cx.ctl);
        match bound {
            Some(true) => cx.handler.on_bind(&info, &mut cx.ctl),
            Some(false) => self.close_inline(cx, 4002, "client id already in use", OfflineReason::Error),
            None => {}
        }
        self.on_frames(cx, rest)
    }

    /// The webhook decided (or its time ran out): answer the waiting
    /// upgrade. Nothing happens unless the session is still waiting.
    pub fn on_authorized(&mut self, cx: &mut Context, verdict: Verdict) -> After {
        if self.phase != Phase::Authorizing {
            return After::Keep;
        }
        let Some(spill) = self.spill.as_mut() else {
            return After::Keep;
        };
        let Some(pending) = spill.pending.take() else {
            return After::Keep;
        };
        let mut rest = std::mem::take(&mut spill.handshake);
        self.release_spill();
        let admit = match verdict {
            Verdict::Accept(id) => match pending.client_id {
                Some(asked) if asked != id => Admit::No(AuthFailure::IdMismatch, Some(Box::new((asked, id)))),
                _ => Admit::Yes(Some(id), 0),
            },
            Verdict::Unauthorized => Admit::No(AuthFailure::WebhookUnauthorized, None),
            Verdict::Forbidden => Admit::No(AuthFailure::WebhookForbidden, None),
            Verdict::Unavailable(why) => {
                debug!("{}: auth webhook: {why}", self.peer());
                Admit::No(AuthFailure::WebhookError, None)
            }
        };
        self.admit(cx, &pending.accept, admit, &mut rest)
    }

    /// The session's wake-up `at`, or the token's expiry if earlier.
    fn expiry_within(&self, cx: &Context, at: u64) -> u64 {
        match self.token_exp() {
            None => at,
            Some(exp) => at.min(cx.now + (exp * 1000).saturating_sub(cx.wall)),
        }
    }

    /// Enters the failing phase: what is queued is flushed, then the write
    /// side is shut and the client gets `close_timeout` to go away.
    fn fail(&mut self, cx: &mut Context) {
        self.leave(cx, OfflineReason::Error);
        self.phase = Phase::Failing { write_shut: false };
        // Nothing is decoded again: give back a partial message at once
        // rather than hold it for the close timeout.
        self.decoder = Decoder::new();
        let at = cx.now + cx.close_timeout;
        self.arm(cx, at);
    }

    /// Leaves for `why`, queues a close frame and waits `--close-timeout`
    /// for the client's.
    fn close_inline(&mut self, cx: &mut Context, code: u16, reason: &str, why: OfflineReason) {
        if (1000..4000).contains(&code) {
            cx.metrics.protocol_error(code);
        }
        self.leave(cx, why);
        frame::encode_close(sink(&mut self.spill, &mut cx.out), code, reason);
        self.phase = Phase::Closing;
        let at = cx.now + cx.close_timeout;
        self.arm(cx, at);
    }

    fn on_frames(&mut self, cx: &mut Context, data: &mut [u8]) -> After {
        let limits = cx.limits;
        let any_frame_counts = cx.cfg.liveness == Liveness::Any;
        let mut alive = false;
        let mut pos = 0;
        let after = loop {
            if self.backlog() > cx.cfg.max_backpressure {
                break After::Close(OfflineReason::Backpressure, "backpressure");
            }
            let open = matches!(self.phase, Phase::Open);
            let msg = match self.decoder.decode(&mut data[pos..], &limits) {
                Ok((_, None)) => break After::Keep,
                Ok((used, Some(msg))) => {
                    pos += used;
                    msg
                }
                Err(e) => {
                    debug!("{}: protocol error: {e}", Peer(&self.io));
                    cx.metrics.protocol_error(e.code);
                    frame::encode_close(sink(&mut self.spill, &mut cx.out), e.code, e.reason);
                    self.fail(cx);
                    break After::Keep;
                }
            };
            alive |= any_frame_counts;
            if !open {
                // Closing: only the client's close matters, and it ends the
                // close handshake.
                if matches!(msg, Message::Close(_)) {
                    break After::Close(OfflineReason::Closed, "closed");
                }
                continue;
            }
            let app = match msg {
                Message::Text(t) if self.exp != 0 && gate::refresh_token(t).is_some() => {
                    cx.metrics.messages_received += 1;
                    let token = gate::refresh_token(t).unwrap_or_default();
                    let checked = gate::check_refresh(&cx.gate, token, cx.wall, self.client_id.as_deref(), self.exp);
                    self.refreshed(cx, checked);
                    None
                }
                Message::Text(t) => {
                    cx.metrics.messages_received += 1;
                    match parse_heartbeat(t) {
                        Heartbeat::NotHeartbeat => Some(AppMessage::Text(t)),
                        Heartbeat::Plain => {
                            alive = true;
                            cx.heartbeat(conn_info(self.id, &self.client_id, &self.io));
                            None
                        }
                        Heartbeat::WithId(id) => {
                            alive = true;
                            match self.client_id.as_deref() {
                                Some(current) if current == id => {
                                    cx.heartbeat(conn_info(self.id, &self.client_id, &self.io));
                                }
                                Some(current) => {
                                    cx.refusal(|| {
                                        format!(
                                            "{}: client id mismatch: heartbeat id {} on a connection bound to {}",
                                            Peer(&self.io),
                                            refusals::shown(id),
                                            refusals::shown(current)
                                        )
                                    });
                                    if !matches!(cx.gate, Gate::Open) {
                                        // The id was given by a token or the webhook.
                                        cx.metrics.auth_failure(AuthFailure::IdMismatch);
                                    }
                                    self.close_inline(cx, 1008, "client id mismatch", OfflineReason::Error);
                                }
                                None => {
                                    if cx.bind(&mut self.client_id, self.id, id) {
                                        let info = conn_info(self.id, &self.client_id, &self.io);
                                        cx.handler.on_bind(&info, &mut cx.ctl);
                                        cx.heartbeat(info);
                                    } else {
                                        self.close_inline(cx, 4002, "client id already in use", OfflineReason::Error);
                                    }
                                }
                            }
                            None
                        }
                        Heartbeat::InvalidId => {
                            cx.refusal(|| {
                                format!(
                                    "{}: invalid client id in heartbeat {} (1 to 128 bytes of A-Z a-z 0-9 . _ ~ : @ -)",
                                    Peer(&self.io),
                                    refusals::shown(t)
                                )
                            });
                            self.close_inline(cx, 1008, "invalid client id", OfflineReason::Error);
                            None
                        }
                    }
                }
                Message::Binary(b) => {
                    cx.metrics.messages_received += 1;
                    Some(AppMessage::Binary(b))
                }
                Message::Ping(p) => {
                    frame::encode_frame(sink(&mut self.spill, &mut cx.out), OpCode::Pong, p);
                    None
                }
                Message::Pong(_) => None,
                Message::Close(c) => {
                    let out = sink(&mut self.spill, &mut cx.out);
                    match c {
                        Some((code, _)) => frame::encode_close(out, code, ""),
                        None => frame::encode_frame(out, OpCode::Close, &[]),
                    }
                    debug!("{}: client closed with {:?}", Peer(&self.io), c.map(|c| c.0));
                    self.leave(cx, OfflineReason::Closed);
                    self.phase = Phase::CloseAfterFlush;
                    self.decoder = Decoder::new();
                    break After::Keep;
                }
            };
            if let Some(m) = app {
                if let Some(f) = &mut cx.forwarding {
                    let (binary, data) = match m {
                        AppMessage::Text(t) => (false, t.as_bytes()),
                        AppMessage::Binary(b) => (true, b),
                    };
                    f.push(crate::forward::Item::Message {
                        id: self.client_id.clone(),
                        conn: self.id,
                        binary,
                        data: data.into(),
                        at_ms: cx.wall,
                    });
                }
                if cx.cfg.echo {
                    m.encode(sink(&mut self.spill, &mut cx.out));
                    cx.metrics.messages_sent += 1;
                }
                if cx.app_handler {
                    let info = conn_info(self.id, &self.client_id, &self.io);
                    cx.handler.on_message(&info, m, &mut cx.ctl);
                } else if !cx.cfg.echo && cx.forwarding.is_none() {
                    cx.metrics.messages_dropped += 1;
                }
            }
        };
        if any_frame_counts && self.decoder.take_fragment_done() {
            alive = true;
        }
        if alive {
            self.last_seen = cx.now;
        }
        if let After::Close(reason, why) = after {
            self.gone(cx, reason, why);
        }
        after
    }

    /// A text message `token JWT` was checked ([`gate::check_refresh`]):
    /// the new `exp`, or the connection closes.
    fn refreshed(&mut self, cx: &mut Context, checked: Result<u32, AuthFailure>) {
        let failure = match checked {
            Ok(exp) => {
                // The timer armed for the old `exp` finds it moved and
                // sleeps on.
                self.exp = exp;
                return;
            }
            Err(f) => f,
        };
        let (code, reason) = failure.close();
        debug!("{}: token refresh refused: {reason}", self.peer());
        cx.metrics.auth_failure(failure);
        self.close_inline(cx, code, reason, OfflineReason::Error);
    }

    /// The session's timer fired (the driver found it by the id the wheel
    /// handed out).
    pub fn on_timer(&mut self, cx: &mut Context) -> After {
        self.timer = None;
        let (reason, why) = match self.phase {
            Phase::Handshake => {
                cx.metrics.reject(crate::metrics::RejectReason::HandshakeTimeout);
                (OfflineReason::Error, "handshake timeout")
            }
            Phase::Authorizing if cx.now < self.connected_at() + cx.handshake_timeout => {
                return self.on_authorized(cx, Verdict::Unavailable("no answer in time".into()));
            }
            Phase::Authorizing => {
                cx.metrics.reject(crate::metrics::RejectReason::HandshakeTimeout);
                (OfflineReason::Error, "handshake timeout while authorizing")
            }
            Phase::Open if self.exp != 0 && cx.wall >= u64::from(self.exp) * 1000 => {
                info!(
                    "closed {} ({}): token expired",
                    self.client_id.as_deref().unwrap_or("-"),
                    self.peer()
                );
                cx.metrics.auth_failure(AuthFailure::TokenExpired);
                let (code, reason) = AuthFailure::TokenExpired.close();
                return self.close(cx, code, reason, OfflineReason::Error);
            }
            Phase::Open => match cx.schedule.on_timer(cx.now, self.last_seen, self.next_beat) {
                Due::Evict => {
                    info!(
                        "evicted {} ({}): heartbeat timeout",
                        self.client_id.as_deref().unwrap_or("-"),
                        self.peer()
                    );
                    return self.close(cx, 4000, "heartbeat timeout", OfflineReason::HeartbeatTimeout);
                }
                Due::Wait {
                    beat,
                    next_beat,
                    wake_at,
                } => {
                    self.next_beat = next_beat;
                    if beat {
                        let mode = cx.cfg.server_heartbeat;
                        cx.metrics.heartbeats_sent += 1;
                        if mode != ServerHeartbeat::Ping {
                            cx.metrics.messages_sent += 1;
                        }
                        let after = self.queue(cx, |out| {
                            if matches!(mode, ServerHeartbeat::Ping | ServerHeartbeat::Both) {
                                frame::encode_frame(out, OpCode::Ping, b"");
                            }
                            if matches!(mode, ServerHeartbeat::Text | ServerHeartbeat::Both) {
                                frame::encode_frame(out, OpCode::Text, b"heartbeat");
                            }
                        });
                        if after != After::Keep {
                            return after;
                        }
                    }
                    let at = self.expiry_within(cx, wake_at);
                    self.arm(cx, at);
                    return After::Keep;
                }
            },
            Phase::Closing | Phase::CloseAfterFlush | Phase::Failing { .. } => (OfflineReason::Closed, "close timeout"),
        };
        self.gone(cx, reason, why);
        After::Close(reason, why)
    }

    /// Queues frames outside of the session's own input (server heartbeats,
    /// pushes, closes), unless the transport is backed up past
    /// `--max-backpressure`.
    fn queue(&mut self, cx: &mut Context, encode: impl FnOnce(&mut Vec<u8>)) -> After {
        let backlog = self.backlog();
        if backlog > cx.cfg.max_backpressure {
            self.gone(cx, OfflineReason::Backpressure, "backpressure");
            return After::Close(OfflineReason::Backpressure, "backpressure");
        }
        if backlog > 0 {
            encode(spilled(&mut self.spill));
        } else {
            debug_assert!(cx.out.is_empty(), "the driver flushes after every session call");
            encode(&mut cx.out);
        }
        After::Keep
    }

    /// Sends an application message; `None` when the session is not open.
    pub fn push(&mut self, cx: &mut Context, msg: &Outgoing) -> Option<After> {
        self.push_with(cx, |out| msg.encode(out))
    }

    /// Sends a frame encoded once for many sessions (a broadcast); `None`
    /// when the session is not open.
    pub fn push_encoded(&mut self, cx: &mut Context, frame: &[u8]) -> Option<After> {
        self.push_with(cx, |out| out.extend_from_slice(frame))
    }

    fn push_with(&mut self, cx: &mut Context, encode: impl FnOnce(&mut Vec<u8>)) -> Option<After> {
        if self.phase != Phase::Open {
            return None;
        }
        cx.metrics.messages_sent += 1;
        Some(self.queue(cx, encode))
    }

    /// Leaves for `why`, sends a close frame with `code` and `reason`, and
    /// waits `--close-timeout` for the client's. Does nothing unless open.
    pub fn close(&mut self, cx: &mut Context, code: u16, reason: &str, why: OfflineReason) -> After {
        if self.phase != Phase::Open {
            return After::Keep;
        }
        self.leave(cx, why);
        self.phase = Phase::Closing;
        let at = cx.now + cx.close_timeout;
        self.arm(cx, at);
        self.queue(cx, |out| frame::encode_close(out, code, reason))
    }

    /// A newer connection took this session's id (the registry already
    /// names it, and the offline event is out): close with 4001.
    pub fn replaced(&mut self, cx: &mut Context) -> After {
        if self.phase != Phase::Open {
            return After::Keep;
        }
        debug!("{}: replaced by a newer connection", self.peer());
        self.close(cx, 4001, "replaced by a newer connection", OfflineReason::Replaced)
    }

    /// Another node holds the id this session claimed and keeps it
    /// (`--duplicate-id reject`): close with 4002, as a local rejection.
    pub fn rejected(&mut self, cx: &mut Context) -> After {
        if self.phase != Phase::Open {
            return After::Keep;
        }
        debug!("{}: its id is held on another node", self.peer());
        self.close(cx, 4002, "client id already in use", OfflineReason::Error)
    }

    /// The server is shutting down: an open session closes with 1001, one
    /// still in its handshake is dropped; others are already closing.
    pub fn shut_down(&mut self, cx: &mut Context) -> After {
        match self.phase {
            Phase::Open => self.close(cx, 1001, "server shutting down", OfflineReason::Shutdown),
            Phase::Handshake | Phase::Authorizing => {
                self.gone(cx, OfflineReason::Shutdown, "shutting down");
                After::Close(OfflineReason::Shutdown, "shutting down")
            }
            _ => After::Keep,
        }
    }
}

#[cfg(test)]
mod tests;
