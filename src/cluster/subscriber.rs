//! The subscriber thread: this node's channel (deliveries, questions,
//! replies, its own probes), the broadcasts and the presence events.
//!
//! The synchronous `PubSub` would wait forever on a half-dead TCP
//! connection (redis-rs#404): it reads with a timeout and PINGs when idle,
//! and reconnects when either fails or when the command thread finds that
//! its probes no longer come back. Every (re)subscription asks the command
//! thread to register this node's state again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::directory::ClusterDirectory;
use super::wire::{self, Directed};
use super::{Delivery, Job, LocalNode, Settings, State};
use crate::presence::ConnId;

/// How long a read waits before the connection is PINGed.
const READ_TIMEOUT: Duration = Duration::from_millis(1000);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Sleeps `d` in short steps; false when the cluster is stopping.
fn pause(state: &State, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if state.stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !state.stop.load(Ordering::Acquire)
}

pub(super) fn run(
    s: Settings,
    state: Arc<State>,
    dir: Arc<ClusterDirectory>,
    local: Arc<dyn LocalNode>,
    jobs: SyncSender<Job>,
) {
    let own = wire::node_channel(&s.node);
    let channels = [own.as_str(), wire::EVENTS_CHANNEL, wire::BROADCAST_CHANNEL];
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    while !state.stop.load(Ordering::Acquire) {
        let mut conn = match super::commands::connect(&s.url).and_then(|c| {
            c.set_read_timeout(Some(READ_TIMEOUT))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    debug!("cluster subscriber: cannot connect ({msg}); retrying");
                    last_error = Some(msg);
                }
                if !pause(&state, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut ps = conn.as_pubsub();
        if let Err(e) = ps.subscribe(&channels[..]) {
            debug!("cluster subscriber: cannot subscribe ({e}); retrying");
            drop(ps);
            if !pause(&state, backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        backoff = BACKOFF_MIN;
        last_error = None;
        state.resubscribe.store(false, Ordering::Release);
        state.subscribed.store(true, Ordering::Release);
        // Whatever happened while unsubscribed (a "replaced" it missed),
        // the command thread registers this node's state again, unless it
        // began doing so after this subscription.
        state.subscriptions.fetch_add(1, Ordering::AcqRel);
        info!("cluster: subscribed as node '{}'", s.node);
        loop {
            if state.stop.load(Ordering::Acquire) || state.resubscribe.load(Ordering::Acquire) {
                break;
            }
            match ps.get_message() {
                Ok(msg) => {
                    let payload = msg.get_payload_bytes();
                    match msg.get_channel_name() {
                        c if c == own => directed(&state, &*local, &jobs, payload),
                        // Read only while someone here streams `/events`.
                        wire::EVENTS_CHANNEL if dir.is_watched() => {
                            if let Some((node, event)) = wire::parse_event(payload) {
                                dir.record(node, event);
                                local.events_arrived();
                            }
                        }
                        wire::BROADCAST_CHANNEL => {
                            if let Some((from, msg)) = wire::parse_broadcast(payload)
                                && from != &*s.node
                            {
                                local.deliver(Delivery::Broadcast(msg));
                            }
                        }
                        _ => {}
                    }
                }
                // A read cut short by a signal (the process was stopped and
                // continued): nothing was read, the connection is fine.
                Err(e) if interrupted(&e) => {}
                Err(e) if e.is_timeout() => {
                    if let Err(e) = ps.ping::<()>() {
                        warn!("cluster subscriber: PING failed ({e}); reconnecting");
                        break;
                    }
                }
                Err(e) => {
                    warn!("cluster subscriber: connection lost ({e}); reconnecting");
                    break;
                }
            }
        }
        state.subscribed.store(false, Ordering::Release);
    }
}

/// EINTR. redis-rs keeps the `io::Error` to itself (`is_timeout` is the only
/// kind it tells), so this reads the message the OS gave it.
fn interrupted(e: &redis::RedisError) -> bool {
    e.to_string().contains("(os error 4)")
}

/// Closes a duplicate; if its loop cannot take it now, the next
/// registration settles it again.
pub(super) fn settle(state: &State, local: &dyn LocalNode, d: Delivery) {
    if !local.deliver(d) {
        state.resync.store(true, Ordering::Release);
    }
}

/// A message on this node's own channel.
fn directed(state: &State, local: &dyn LocalNode, jobs: &SyncSender<Job>, payload: &[u8]) {
    let Some(d) = wire::parse_directed(payload) else {
        debug!("cluster: ignored a malformed message on this node's channel");
        return;
    };
    match d {
        Directed::Replaced { id, conn } => {
            debug!("cluster: {id} was taken by a newer connection on another node");
            settle(state, local, Delivery::Replaced(id.into(), ConnId::from_raw(conn)));
        }
        Directed::Rejected { id, conn } => {
            debug!("cluster: {id} stays with an older connection on another node");
            settle(state, local, Delivery::Rejected(id.into(), ConnId::from_raw(conn)));
        }
        Directed::Push { id, msg } => {
            local.deliver(Delivery::Push(id.into(), msg));
        }
        Directed::Kick { id, reason } => {
            local.deliver(Delivery::Kick(id.into(), reason.to_string()));
        }
        Directed::Probe(seq) => {
            if seq <= state.probe_sent.load(Ordering::Acquire) {
                state.probe_seen.fetch_max(seq, Ordering::AcqRel);
            }
        }
        Directed::Request { from, req, query } => {
            if crate::config::is_valid_node_id(from) {
                // A full queue: the asker's deadline answers for us.
                let _ = jobs.try_send(Job::Answer {
                    from: from.to_string(),
                    req,
                    query,
                    arrived: Instant::now(),
                });
            }
        }
        Directed::Reply { req, body } => {
            let waiter = state.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&req);
            if let Some(tx) = waiter {
                let _ = tx.try_send(body.to_vec());
            }
        }
    }
}
