//! Refused upgrades and ids are logged at `info`, so that an operator sees
//! why a client cannot get in; but a flood of refused requests must not
//! become a flood of log lines. Each loop logs at most [`PER_SECOND`]
//! refusals a second, and the next line logged after some were left out is
//! preceded by their count.

/// Refusal lines a loop logs per second at most.
pub const PER_SECOND: u32 = 10;

/// The limit's state: which second it counts, on the loop's clock.
#[derive(Debug, Default)]
pub struct RefusalLog {
    second: u64,
    logged: u32,
    suppressed: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log the line, after a line that says `suppressed` were left out
    /// when it is not 0.
    Log {
        suppressed: u64,
    },
    Suppress,
}

impl RefusalLog {
    /// Whether a refusal at monotonic `now_ms` is logged.
    pub fn admit(&mut self, now_ms: u64) -> Verdict {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.logged = 0;
        }
        if self.logged >= PER_SECOND {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.logged += 1;
        Verdict::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// An attacker's bytes in a log line: escaped, and cut to 100 characters.
pub fn shown(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}...", &value[..i]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_then_the_count_of_the_rest() {
        let mut log = RefusalLog::default();
        for i in 0..PER_SECOND {
            assert_eq!(log.admit(5_000 + u64::from(i)), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..25 {
            assert_eq!(log.admit(5_900), Verdict::Suppress);
        }
        // The next second: the first line carries the count, once.
        assert_eq!(log.admit(6_000), Verdict::Log { suppressed: 25 });
        assert_eq!(log.admit(6_001), Verdict::Log { suppressed: 0 });
        // Much later, the limit starts afresh.
        for _ in 0..PER_SECOND {
            assert!(matches!(log.admit(60_000), Verdict::Log { .. }));
        }
        assert_eq!(log.admit(60_999), Verdict::Suppress);
        assert_eq!(log.admit(61_000), Verdict::Log { suppressed: 1 });
    }

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("https://evil.example"), "\"https://evil.example\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(300);
        let s = shown(&long);
        assert!(
            s.ends_with("...") && s.chars().filter(|&c| c == 'é').count() == 100,
            "{s}"
        );
    }
}
