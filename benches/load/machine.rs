//! What the machine is, for the benchmark reports (both `load` and `auth`
//! print it with their tables), and number formatting for those tables.

#![allow(dead_code)] // each bench uses its own subset

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// `1234567.8` → `1,234,568` (with `decimals` places).
pub fn group(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

pub fn has_program(name: &str) -> bool {
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d.join(name).is_file()))
}

pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

pub fn cpu_count() -> usize {
    let s = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    s.lines().filter(|l| l.starts_with("processor")).count().max(1)
}

pub fn cpu_model() -> String {
    let s = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn mem_total_mib() -> u64 {
    let s = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|v| format!("Linux {}", v.trim()))
        .unwrap_or_else(|_| "Linux".into())
}

pub fn cpus_allowed(pid: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Runs this bench again under `taskset -c CPU` (the load generator on its
/// own CPU, the servers on another) and returns its exit code; `None` when
/// this already is that run, or pinning is off (`{PREFIX}_PIN=0`), or there
/// is no `taskset` or a single CPU.
pub fn run_pinned(prefix: &str, cpu: &str, args: &[String]) -> Option<ExitCode> {
    let marker = format!("{prefix}_GENERATOR_PINNED");
    let wanted =
        env::var(format!("{prefix}_PIN")).map_or(true, |v| v != "0") && has_program("taskset") && cpu_count() >= 2;
    if !wanted || env::var_os(&marker).is_some() {
        return None;
    }
    let name = prefix.to_ascii_lowercase();
    let exe = match env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{name}: current_exe: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let status = Command::new("taskset")
        .args(["-c", cpu])
        .arg(exe)
        .args(&args[1..])
        .env(marker, "1")
        .status();
    Some(match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("{name}: generator process {s}");
            ExitCode::from(s.code().map_or(1, |c| c.clamp(1, 255) as u8))
        }
        Err(e) => {
            eprintln!("{name}: taskset: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Raises the soft open-file limit to the hard one (each side of a load test
/// needs a descriptor per connection); the hard limit.
pub fn raise_nofile() -> Result<u64, String> {
    let (_, hard) = rlimit::Resource::NOFILE.get().map_err(|e| format!("getrlimit: {e}"))?;
    rlimit::Resource::NOFILE
        .set(hard, hard)
        .map_err(|e| format!("raising RLIMIT_NOFILE to {hard}: {e}"))?;
    Ok(hard)
}

/// The target directory of the build holding `bin` (`target/release/wsbeat`).
pub fn target_dir(bin: &Path) -> Result<PathBuf, String> {
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot find the target directory".to_string())
}
