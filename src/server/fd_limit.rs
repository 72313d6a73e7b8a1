//! Raising the open-file limit to fit `--max-connections`.

use log::{info, warn};

/// Descriptors beyond the connections themselves: listeners, signals,
/// admin connections, logs (each event loop adds two: its poller and its
/// waker).
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` toward `max_connections` plus a reserve
/// for `threads` event loops and the rest (and the hard limit too, when the
/// process may). Returns the soft limit now in force, and logs what was
/// obtained; warns, naming the effective cap, when it is not enough.
pub fn raise_fd_limit(max_connections: usize, threads: usize) -> std::io::Result<u64> {
    use rlimit::Resource;
    let want = max_connections as u64 + RESERVED_FDS + 2 * threads as u64;
    let (soft, hard) = Resource::NOFILE.get()?;
    if soft >= want {
        info!("open-file limit {soft} fits --max-connections {max_connections}");
        return Ok(soft);
    }
    // Raising the hard limit needs privileges; try, and settle for the hard
    // limit otherwise.
    if hard < want && Resource::NOFILE.set(want, want).is_ok() {
        info!("open-file limit raised from {soft} to {want}");
        return Ok(want);
    }
    let target = want.min(hard);
    if target > soft {
        Resource::NOFILE.set(target, hard)?;
    }
    let now = target.max(soft);
    if now < want {
        warn!(
            "open-file limit is {now} (hard limit {hard}), below the {want} that --max-connections {max_connections} needs: connections past it get 503; raise `ulimit -n` or LimitNOFILE"
        );
    } else {
        info!("open-file limit raised from {soft} to {now}");
    }
    Ok(now)
}
