//! The files under `deploy/`: the systemd unit passes `systemd-analyze
//! verify`, the Grafana dashboard and the alert rules parse and only use
//! metrics the binary serves, and the environment file only names
//! variables the binary reads.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tls::{Cert, Files, TempDir};
use common::*;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// The metric names `text` mentions: words starting `wsbeat_` or
/// `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices(['w', 'p']) {
        // Only at the start of a word.
        if text[..i].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with("wsbeat_") || rest.starts_with("process_") {
            let end = rest.find(|c| !word(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_string());
        }
    }
    names
}

/// The metric names of every sample of the binary's `/metrics`, with every
/// optional family switched on: TLS, forwarding and the cluster (the last
/// two pointed at closed ports; their families are there all the same).
fn served_metric_names() -> BTreeSet<String> {
    let dir = TempDir::new("deploy");
    let files = Files::in_dir(&dir, "");
    Cert::generate().write(&files);
    let mut cmd = wsbeat_on_free_ports();
    cmd.arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .args(["--forward", "http://127.0.0.1:9/forward"])
        .args(["--cluster", "redis://127.0.0.1:9"]);
    let p = start_binary(cmd);
    let text = http(p.admin, "GET", "/metrics", "", b"").text();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn assert_served(file: &str, used: &BTreeSet<String>, served: &BTreeSet<String>) {
    let missing: Vec<_> = used.difference(served).collect();
    assert!(
        missing.is_empty(),
        "deploy/{file} uses metrics /metrics does not serve: {missing:?}\nserved: {served:?}"
    );
}

#[test]
fn dashboard_and_alerts_use_only_served_metrics() {
    let served = served_metric_names();
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "wsbeat_build_info",
    ] {
        assert!(served.contains(name), "{name} not served: {served:?}");
    }

    let dashboard = read("grafana-dashboard.json");
    let used = metric_names(&dashboard);
    assert!(used.len() >= 20, "{used:?}");
    assert_served("grafana-dashboard.json", &used, &served);

    let alerts = read("alerts.yml");
    let used = metric_names(&alerts);
    assert!(used.len() >= 10, "{used:?}");
    assert_served("alerts.yml", &used, &served);
}

#[test]
fn dashboard_is_importable() {
    let text = read("grafana-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("deploy/grafana-dashboard.json");
    assert_eq!(d["title"], "wsbeat");
    // Import asks for the data source this input names.
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id at {title}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let e = t["expr"].as_str().unwrap();
            // Every query follows the instance picker.
            assert!(e.contains("instance=~\"$instance\""), "{title}: {e}");
            exprs += 1;
        }
    }
    assert!(exprs >= 25, "{exprs} queries");
    // What the issue asks the dashboard to show.
    let all = metric_names(&text);
    for name in [
        "wsbeat_clients_online",
        "wsbeat_loop_connections",
        "wsbeat_connections_accepted_total",
        "wsbeat_evictions_total",
        "wsbeat_messages_received_total",
        "wsbeat_bytes_sent_total",
        "wsbeat_handshake_failures_total",
        "wsbeat_auth_failures_total",
        "wsbeat_tls_handshake_failures_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(all.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn alert_rules_are_well_formed() {
    let text = read("alerts.yml");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(lines[0], "groups:");
    assert_eq!(lines[1], "  - name: wsbeat");
    assert_eq!(lines[2], "    rules:");
    assert!(!text.contains('\t'), "tabs in YAML");
    // Each rule: a name, an expression, a severity and a summary.
    let rules: Vec<&str> = text.split("\n      - alert: ").skip(1).collect();
    let mut names = BTreeSet::new();
    for r in &rules {
        let name = r.lines().next().unwrap();
        assert!(names.insert(name), "duplicate alert {name}");
        assert!(r.contains("\n        expr: "), "{name} has no expr");
        assert!(r.contains("\n          severity: "), "{name} has no severity");
        assert!(r.contains("\n          summary: "), "{name} has no summary");
    }
    for want in [
        "WsbeatDown",
        "WsbeatFileDescriptorsNearLimit",
        "WsbeatMemoryGrowth",
        "WsbeatEvictionStorm",
        "WsbeatTlsHandshakeFailures",
        "WsbeatForwardDropping",
        "WsbeatClusterDown",
    ] {
        assert!(names.contains(want), "no {want} in {names:?}");
    }
    // A full YAML parse where PyYAML is at hand (it is not a test
    // dependency: the checks above stand without it).
    let has_pyyaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_pyyaml {
        let script = "import sys, yaml\n\
            d = yaml.safe_load(open(sys.argv[1]))\n\
            rules = d['groups'][0]['rules']\n\
            assert all(set(r) <= {'alert', 'expr', 'for', 'labels', 'annotations'} for r in rules), rules\n\
            print(len(rules))";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(deploy("alerts.yml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), rules.len().to_string());
    }
}

#[test]
fn env_example_names_only_variables_the_binary_reads() {
    let out = wsbeat_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let text = read("wsbeat.env.example");
    let mut seen = 0;
    for line in text.lines() {
        let setting = line.strip_prefix('#').unwrap_or(line);
        let Some((name, _)) = setting.split_once('=') else {
            continue;
        };
        if !name.starts_with("WSBEAT_") || name.contains(' ') {
            continue;
        }
        assert!(
            // `NAME=` or, for secrets (hide_env_values), `NAME]`.
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "deploy/wsbeat.env.example names {name}, which `wsbeat --help` does not list"
        );
        seen += 1;
    }
    assert!(seen >= 30, "{seen} settings");
    // Nothing is set by default: the file documents the defaults.
    assert!(text.lines().all(|l| l.is_empty() || l.starts_with('#')));
}

#[test]
fn systemd_unit_verifies() {
    let unit = read("wsbeat.service");
    for want in [
        "\nExecStart=/usr/local/bin/wsbeat\n",
        "\nEnvironmentFile=-/etc/wsbeat/wsbeat.env\n",
        "\nExecReload=/bin/kill -HUP $MAINPID\n",
        "\nLimitNOFILE=",
        "\nKillSignal=SIGTERM\n",
    ] {
        assert!(unit.contains(want), "deploy/wsbeat.service lacks {want:?}");
    }
    let version = Command::new("systemd-analyze").arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        panic!(
            "systemd-analyze is not installed: run scripts/install-test-deps.sh \
             (it installs the Debian package systemd)"
        );
    }
    // verify checks that ExecStart's binary exists: point it at this build.
    let dir = TempDir::new("unit");
    let copy = dir.join("wsbeat.service");
    let unit = unit.replace(
        "\nExecStart=/usr/local/bin/wsbeat\n",
        &format!("\nExecStart={}\n", env!("CARGO_BIN_EXE_wsbeat")),
    );
    std::fs::write(&copy, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown or misspelt settings are only warned about: none allowed.
    let about_unit: Vec<_> = stderr.lines().filter(|l| l.contains("wsbeat.service")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify warns:\n{stderr}");
}
