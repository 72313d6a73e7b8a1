//! The process's own numbers for `/metrics`, under the names of the
//! Prometheus process collector, read from `/proc/self` at scrape time.
//! Parsing is split from reading so it can be tested on sample text;
//! anything missing or unparsable (not Linux, a hardened `/proc`) is left
//! out of the output rather than shown as zero.

use std::sync::OnceLock;

/// What one scrape read; `None` when it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// The unit of the times in `/proc/<pid>/stat` (USER_HZ, what
/// `getconf CLK_TCK` prints): part of the kernel ABI, 100 on every
/// architecture but Alpha, so no libc call is needed to learn it.
const CLK_TCK: f64 = 100.0;

/// Above this many descriptor slots (`FDSize` in `/proc/self/status`),
/// descriptors are not counted one by one on kernels that do not report
/// the count directly (before 6.2): listing `/proc/self/fd` costs one to
/// two microseconds per descriptor on the loop that serves the scrape,
/// which also serves connections (20-40 ms for 20k, a second or two for a
/// million).
pub const MAX_FDS_TO_COUNT: u64 = 32_768;

/// The fields of `/proc/self/stat` that are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here: field N is index N - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
    })
}

/// The boot time in seconds since the epoch, from `/proc/stat`.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// A `kB` value of `/proc/<pid>/status` (`VmRSS`, `VmSize`), in bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let kb = v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// A plain number of `/proc/<pid>/status` (`FDSize`).
pub fn parse_status_number(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files from `/proc/<pid>/limits` (what the
/// process can use; `None` when unlimited).
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process start time in seconds since the epoch.
pub fn start_time_seconds(btime: u64, starttime_ticks: u64) -> f64 {
    btime as f64 + starttime_ticks as f64 / CLK_TCK
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Open descriptors. Linux 6.2 and later report the count as the size of
/// `/proc/self/fd` (one `stat`, tens of microseconds whatever the count);
/// older kernels report 0 and the entries are counted instead, up to
/// [`MAX_FDS_TO_COUNT`] slots.
fn open_fds(status: Option<&str>) -> Option<u64> {
    let size = std::fs::metadata("/proc/self/fd").ok()?.len();
    if size > 0 {
        return Some(size);
    }
    let slots = status.and_then(|s| parse_status_number(s, "FDSize"))?;
    if slots > MAX_FDS_TO_COUNT {
        return None;
    }
    count_fd_entries()
}

/// Open descriptors by listing `/proc/self/fd`.
fn count_fd_entries() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    // The listing's own descriptor is one of the entries.
    Some(entries.saturating_sub(1))
}

/// Reads what can be read now. The start time is read once: it does not
/// change, and `/proc/stat` grows with the number of CPUs.
pub fn read_now() -> ProcessStats {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
    let status = read("/proc/self/status");
    let start = *START.get_or_init(|| {
        let btime = parse_btime(&read("/proc/stat")?)?;
        Some(start_time_seconds(btime, stat?.starttime))
    });
    ProcessStats {
        cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / CLK_TCK),
        start_time_seconds: start,
        resident_memory_bytes: status.as_deref().and_then(|s| parse_status_kb(s, "VmRSS")),
        virtual_memory_bytes: stat.map(|s| s.vsize),
        open_fds: open_fds(status.as_deref()),
        max_fds: read("/proc/self/limits").and_then(|l| parse_max_open_files(&l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A command name with a space and a parenthesis, as a process may set.
    const STAT: &str = "4242 (ws beat) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
        250 75 0 0 20 0 3 0 987654 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17664 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 75,
                starttime: 987654,
                vsize: 123456789,
            }
        );
        assert_eq!(parse_stat("4242 (wsbeat) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn start_time_is_boot_time_plus_ticks() {
        let proc_stat = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5 6\nctxt 77\nbtime 1764400000\nprocesses 9\n";
        let btime = parse_btime(proc_stat).unwrap();
        assert_eq!(btime, 1_764_400_000);
        assert_eq!(start_time_seconds(btime, 987654), 1_764_409_876.54);
        assert_eq!(parse_btime("cpu 1 2\n"), None);
    }

    #[test]
    fn status_values() {
        let status = "Name:\twsbeat\nFDSize:\t1024\nVmPeak:\t  200000 kB\nVmSize:\t  123456 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(5120 * 1024));
        assert_eq!(parse_status_kb(status, "VmSize"), Some(123456 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_number(status, "FDSize"), Some(1024));
    }

    #[test]
    fn soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            65536                1048576              files     \n\
            Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_open_files(limits), Some(65536));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn counting_agrees_with_the_kernels_count() {
        let size = std::fs::metadata("/proc/self/fd").unwrap().len();
        // 0 before Linux 6.2: nothing to compare with.
        if size > 0 {
            // Other tests open and close descriptors meanwhile: allow some.
            let counted = count_fd_entries().unwrap();
            assert!(counted.abs_diff(size) <= 8, "{counted} vs {size}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = read_now();
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.virtual_memory_bytes.unwrap() >= p.resident_memory_bytes.unwrap());
        assert!(p.max_fds.unwrap() > 0);
        // stdin, stdout, stderr at least; the test harness holds more.
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        // Boot time is whole seconds, so the start may read up to one early.
        assert!(start <= now + 1.0 && start > now - 3600.0, "{start} vs {now}");
    }
}
