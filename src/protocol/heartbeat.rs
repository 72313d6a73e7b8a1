//! What a client heartbeat is, and which client ids are acceptable.

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// A client id is 1 to 128 bytes of `A-Z a-z 0-9 . _ ~ : @ -`: safe in a
/// URL path, a log line and a JSON string without escaping.
pub fn is_valid_client_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'@' | b'-'))
}

/// How a text message reads as a heartbeat.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Heartbeat<'a> {
    /// Not a heartbeat: an application message.
    NotHeartbeat,
    /// `heartbeat`: refreshes liveness.
    Plain,
    /// `heartbeat:ID` or `heartbeat ID` with a valid id.
    WithId(&'a str),
    /// `heartbeat:` or `heartbeat ` followed by something that is not a valid id.
    InvalidId,
}

/// Classifies a text message. The message is trimmed of ASCII white space;
/// it is a heartbeat when it is `heartbeat` alone or `heartbeat` followed by
/// `:` or white space and an id. `heartbeats`, `heartbeat2` and the like are
/// application messages: the word must end where the keyword ends.
pub fn parse_heartbeat(text: &str) -> Heartbeat<'_> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let Some(rest) = t.strip_prefix("heartbeat") else {
        return Heartbeat::NotHeartbeat;
    };
    let id = if rest.is_empty() {
        return Heartbeat::Plain;
    } else if let Some(id) = rest.strip_prefix(':') {
        id
    } else if rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        rest.trim_start_matches(|c: char| c.is_ascii_whitespace())
    } else {
        return Heartbeat::NotHeartbeat;
    };
    if is_valid_client_id(id.as_bytes()) {
        Heartbeat::WithId(id)
    } else {
        Heartbeat::InvalidId
    }
}

/// The per-connection heartbeat schedule, as pure arithmetic on
/// milliseconds of a monotonic clock the caller owns.
///
/// A connection has one timer. It is armed at the earlier of the next server
/// heartbeat and the liveness deadline (`last_seen + timeout`). Frames only
/// move `last_seen` forward; they never touch the timer. When the timer fires
/// the deadline is re-checked against the current `last_seen` ("lazy"
/// liveness), so a busy connection costs one timer operation per heartbeat
/// interval, not one per frame, and a silent one is evicted exactly at its
/// deadline.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub interval: u64,
    pub timeout: u64,
    /// Whether the server sends heartbeats at all.
    pub beats: bool,
}

/// What to do when a connection's timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// No liveness signal for `timeout`: evict.
    Evict,
    /// Still alive: send a server heartbeat first if `beat`, then re-arm the
    /// timer at `wake_at`, with the next heartbeat due at `next_beat`.
    Wait { beat: bool, next_beat: u64, wake_at: u64 },
}

impl Schedule {
    /// At the upgrade: when the first heartbeat is due and when to wake.
    pub fn start(&self, now: u64) -> (u64, u64) {
        let next_beat = if self.beats {
            now.saturating_add(self.interval)
        } else {
            u64::MAX
        };
        (next_beat, next_beat.min(now.saturating_add(self.timeout)))
    }

    /// When the timer fires at `now`.
    pub fn on_timer(&self, now: u64, last_seen: u64, next_beat: u64) -> Due {
        let deadline = last_seen.saturating_add(self.timeout);
        if now >= deadline {
            return Due::Evict;
        }
        let beat = now >= next_beat;
        let next_beat = if beat {
            now.saturating_add(self.interval)
        } else {
            next_beat
        };
        Due::Wait {
            beat,
            next_beat,
            wake_at: next_beat.min(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::TimerWheel;

    #[test]
    fn client_id_rules() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        let ok = ["a", "device-42", "A.b_c~d:e@f-g", "0", long.as_str()];
        let bad = ["", "a b", "a/b", "é", "a\0", "a%20", "a+b", "a\"b", too_long.as_str()];
        for id in ok {
            assert!(is_valid_client_id(id.as_bytes()), "{id:?}");
        }
        for id in bad {
            assert!(!is_valid_client_id(id.as_bytes()), "{id:?}");
        }
    }

    #[test]
    fn heartbeat_forms() {
        use Heartbeat::*;
        let cases = [
            ("heartbeat", Plain),
            ("  heartbeat\r\n", Plain),
            ("\theartbeat \t", Plain),
            ("heartbeat:device-42", WithId("device-42")),
            ("heartbeat device-42", WithId("device-42")),
            ("heartbeat   device-42  ", WithId("device-42")),
            (" heartbeat:a:b@c ", WithId("a:b@c")),
            ("heartbeat:", InvalidId),
            ("heartbeat: x", InvalidId),
            ("heartbeat bad id", InvalidId),
            ("heartbeat:é", InvalidId),
            ("heartbeats", NotHeartbeat),
            ("heartbeat2", NotHeartbeat),
            ("Heartbeat", NotHeartbeat),
            ("hello", NotHeartbeat),
            ("", NotHeartbeat),
            ("heart", NotHeartbeat),
        ];
        for (text, want) in cases {
            assert_eq!(parse_heartbeat(text), want, "{text:?}");
        }
        let long = format!("heartbeat:{}", "x".repeat(129));
        assert_eq!(parse_heartbeat(&long), InvalidId);
    }

    /// Drives one connection through the schedule on a timer wheel with a
    /// fake clock. `frames` are the times the client proves itself alive.
    /// Returns the times server heartbeats were sent, the eviction time, and
    /// how many timer operations happened.
    fn simulate(s: Schedule, frames: &[u64], until: u64) -> (Vec<u64>, Option<u64>, usize) {
        let mut wheel = TimerWheel::new(0);
        let (mut next_beat, wake) = s.start(0);
        let mut key = wheel.schedule(wake, ());
        let mut ops = 1;
        let mut last_seen = 0;
        let mut beats = Vec::new();
        let mut frames = frames.iter().peekable();
        for now in 0..=until {
            while frames.peek().is_some_and(|&&f| f <= now) {
                last_seen = *frames.next().unwrap();
            }
            while wheel.poll(now).is_some() {
                match s.on_timer(now, last_seen, next_beat) {
                    Due::Evict => return (beats, Some(now), ops),
                    Due::Wait {
                        beat,
                        next_beat: nb,
                        wake_at,
                    } => {
                        if beat {
                            beats.push(now);
                        }
                        next_beat = nb;
                        key = wheel.schedule(wake_at, ());
                        ops += 1;
                    }
                }
            }
        }
        let _ = key;
        (beats, None, ops)
    }

    #[test]
    fn silent_client_is_evicted_exactly_at_timeout() {
        let s = Schedule {
            interval: 200,
            timeout: 600,
            beats: true,
        };
        let (beats, evicted, _) = simulate(s, &[], 10_000);
        assert_eq!(beats, [200, 400]);
        assert_eq!(evicted, Some(600));
    }

    #[test]
    fn eviction_follows_the_last_frame_lazily() {
        let s = Schedule {
            interval: 30_000,
            timeout: 60_000,
            beats: true,
        };
        // Frames every second for 100 s, then silence.
        let frames: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let (beats, evicted, ops) = simulate(s, &frames, 1_000_000);
        assert_eq!(evicted, Some(100_000 + 60_000));
        assert_eq!(beats, [30_000, 60_000, 90_000, 120_000, 150_000]);
        // One timer operation per wake-up, not one per frame.
        assert!(ops <= 10, "{ops} timer operations for 100 frames");
    }

    #[test]
    fn a_heartbeating_client_is_never_evicted() {
        let s = Schedule {
            interval: 200,
            timeout: 600,
            beats: true,
        };
        let frames: Vec<u64> = (1..=100).map(|i| i * 500).collect();
        let (beats, evicted, _) = simulate(s, &frames, 50_000);
        assert_eq!(evicted, None);
        assert_eq!(beats.len(), 250);
        assert!(beats.windows(2).all(|w| w[1] - w[0] == 200));
    }

    #[test]
    fn without_server_heartbeats_only_the_deadline_wakes() {
        let s = Schedule {
            interval: 200,
            timeout: 600,
            beats: false,
        };
        let (beats, evicted, ops) = simulate(s, &[100, 300], 10_000);
        assert!(beats.is_empty());
        assert_eq!(evicted, Some(900));
        assert_eq!(ops, 2); // armed at 600, re-armed once at 900
    }
}
