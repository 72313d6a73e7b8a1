//! What the sessions of one loop share: the settings, the clock, the timer
//! wheel, the registry, this turn's presence events, the counters, the
//! output of the session being served, and the embedding program's handler.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ServerHeartbeat};
use crate::forward::Item;
use crate::handler::{Command, ConnId, ConnInfo, Control, Handler};
use crate::metrics::Metrics;
use crate::presence::{Bind, Directory, OfflineReason, PresenceEvent};
use crate::protocol::handshake::Policy;
use crate::protocol::heartbeat::Schedule;
use crate::protocol::message::Limits;
use crate::timer::TimerWheel;

/// The state every session of a loop acts on. The driver sets the clock
/// ([`tick`](Context::tick)) before it hands a session bytes or a timer,
/// writes out [`out`](Context::out) after each session call, and runs the
/// commands collected in [`ctl`](Context::ctl).
pub struct Context {
    pub cfg: Config,
    /// Monotonic ms, set by the driver.
    pub(crate) now: u64,
    /// Unix ms, set with `now`; what users see.
    pub(crate) wall: u64,
    pub(super) schedule: Schedule,
    pub(super) limits: Limits,
    pub(super) handshake_timeout: u64,
    pub(super) close_timeout: u64,
    /// One timer per session, named by its id.
    pub timers: TimerWheel<ConnId>,
    /// Where client ids are bound: shared by every loop of the process.
    pub registry: Arc<dyn Directory>,
    /// Sessions upgraded and not yet left (the recipients of a broadcast).
    pub open: usize,
    /// This loop's presence changes since the driver last took them (for
    /// its log; `/events` reads the directory's, ordered across loops).
    pub events: Vec<PresenceEvent>,
    pub metrics: Metrics,
    /// What the session being served wants written, in order; the driver
    /// writes it and clears it after every session call.
    pub out: Vec<u8>,
    /// Commands decided while serving a session (by the handler, or a
    /// replacement), for the driver to run once the session is done.
    pub ctl: Control,
    pub(super) handler: Box<dyn Handler>,
    /// False for the binary's handler: application messages are dropped.
    pub(super) app_handler: bool,
    /// Who may come in (set by the driver; open by default).
    pub gate: super::Gate,
    /// With forwarding: this turn's client messages and presence changes,
    /// in order, for the driver to hand to the forwarder.
    pub forwarding: Option<Vec<Item>>,
    /// Refusals logged this second, to keep an attack from flooding the log.
    pub(super) refusals: super::refusals::RefusalLog,
}

/// Whole milliseconds, saturating far beyond any deadline.
pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128 / 2) as u64
}

impl Context {
    /// `capacity`: sessions to reserve timer room for up front; `registry`:
    /// where ids are bound (shared with the other loops, if any).
    pub fn new(
        cfg: Config,
        registry: Arc<dyn Directory>,
        handler: Box<dyn Handler>,
        app_handler: bool,
        capacity: usize,
    ) -> Context {
        Context {
            schedule: Schedule {
                interval: ms(cfg.heartbeat_interval),
                timeout: ms(cfg.heartbeat_timeout),
                beats: cfg.server_heartbeat != ServerHeartbeat::Off,
            },
            limits: Limits {
                max_message_size: cfg.max_message_size,
            },
            handshake_timeout: ms(cfg.handshake_timeout),
            close_timeout: ms(cfg.close_timeout),
            cfg,
            now: 0,
            wall: 0,
            timers: TimerWheel::with_capacity(0, capacity),
            registry,
            open: 0,
            events: Vec::new(),
            metrics: Metrics::default(),
            out: Vec::new(),
            ctl: Control::default(),
            handler,
            app_handler,
            gate: super::Gate::Open,
            forwarding: None,
            refusals: Default::default(),
        }
    }

    /// Logs why a client was refused at `info`, within the loop's limit
    /// (`line` is only built when it is logged). Their own target, so that
    /// `RUST_LOG=info,wsbeat::refused=warn` silences them.
    pub(super) fn refusal(&mut self, line: impl FnOnce() -> String) {
        use super::refusals::{PER_SECOND, Verdict};
        if let Verdict::Log { suppressed } = self.refusals.admit(self.now) {
            if suppressed > 0 {
                log::info!(
                    target: "wsbeat::refused",
                    "refusals: {suppressed} lines suppressed (at most {PER_SECOND} a second per event loop)"
                );
            }
            log::info!(target: "wsbeat::refused", "{}", line());
        }
    }

    /// A presence change of this loop: for its log and, with forwarding,
    /// for the backend.
    fn event(&mut self, ev: PresenceEvent) {
        if let Some(f) = &mut self.forwarding {
            f.push(Item::Event(ev.clone()));
        }
        self.events.push(ev);
    }

    /// Sets the clock: monotonic ms (never backwards) and Unix ms.
    pub fn tick(&mut self, now: u64, wall: u64) {
        self.now = self.now.max(now);
        self.wall = wall;
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// Unix ms of monotonic instant `mono` (in the past).
    pub fn wall_ms(&self, mono: u64) -> u64 {
        self.wall.saturating_sub(self.now.saturating_sub(mono))
    }

    pub(super) fn policy(&self) -> Policy<'_> {
        Policy {
            path: self.cfg.path.as_deref(),
            allowed_origins: self.cfg.allowed_origins.as_deref(),
            token: matches!(self.gate, super::Gate::Jwt(_)),
            capture: matches!(self.gate, super::Gate::Webhook(..)),
        }
    }

    /// Binds `id` to session `conn` (its slot `client_id`). False when
    /// `--duplicate-id reject` keeps it with another session.
    pub(super) fn bind(&mut self, client_id: &mut Option<Arc<str>>, conn: ConnId, id: &str) -> bool {
        let id: Arc<str> = id.into();
        match self.registry.bind(&id, conn, self.cfg.duplicate_id, self.wall) {
            Bind::Bound => {}
            Bind::Replaced(old) => {
                // Offline first, so a subscriber never sees the id go
                // offline after it came back.
                self.event(PresenceEvent::Offline {
                    id: id.clone(),
                    reason: OfflineReason::Replaced,
                    at_ms: self.wall,
                });
                self.ctl.commands.push(Command::Replaced(old));
            }
            Bind::Rejected => return false,
        }
        *client_id = Some(id.clone());
        self.event(PresenceEvent::Online { id, at_ms: self.wall });
        true
    }

    /// Session `conn` lets go of `id`; an offline event if it still held it.
    pub(super) fn unbind(&mut self, id: Arc<str>, conn: ConnId, reason: OfflineReason) {
        if self.registry.unbind(&id, conn, reason, self.wall) {
            self.event(PresenceEvent::Offline {
                id,
                reason,
                at_ms: self.wall,
            });
        }
    }

    /// A heartbeat from an open session (after its id, if any, is bound).
    pub(super) fn heartbeat(&mut self, info: ConnInfo<'_>) {
        self.metrics.heartbeats_received += 1;
        self.handler.on_heartbeat(&info, &mut self.ctl);
    }
}
