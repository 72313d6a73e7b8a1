//! Counters a loop keeps, rendered in the Prometheus text format 0.0.4.
//! Plain integers: only the loop's thread touches them.

use std::fmt::Write;

use crate::auth::AuthFailure;
use crate::presence::OfflineReason;

/// Handshake answers other than 101 that are counted by status.
pub const HANDSHAKE_STATUSES: [u16; 6] = [400, 403, 404, 426, 431, 503];
/// Close codes the server sends for protocol and policy violations.
pub const PROTOCOL_ERROR_CODES: [u16; 4] = [1002, 1007, 1008, 1009];
/// Why a connection was refused before it could be upgraded (the `reason`
/// label of `wsbeat_connections_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    MaxConnections,
    OutOfDescriptors,
    HandshakeFailed,
    HandshakeTimeout,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::MaxConnections,
        RejectReason::OutOfDescriptors,
        RejectReason::HandshakeFailed,
        RejectReason::HandshakeTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MaxConnections => "max_connections",
            RejectReason::OutOfDescriptors => "out_of_descriptors",
            RejectReason::HandshakeFailed => "handshake_failed",
            RejectReason::HandshakeTimeout => "handshake_timeout",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub rejected: [u64; RejectReason::ALL.len()],
    pub handshake_failures: [u64; HANDSHAKE_STATUSES.len()],
    pub heartbeats_received: u64,
    pub heartbeats_sent: u64,
    pub evictions: [u64; OfflineReason::ALL.len()],
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub protocol_errors: [u64; PROTOCOL_ERROR_CODES.len()],
    pub accept_errors: u64,
    /// By [`AuthFailure`] (its index in `ALL`).
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// TLS connections closed before their handshake completed.
    pub tls_handshake_failures: u64,
}

impl Metrics {
    /// Adds another loop's counters to these.
    pub fn add(&mut self, o: &Metrics) {
        fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.connections_accepted += o.connections_accepted;
        sum(&mut self.rejected, &o.rejected);
        sum(&mut self.handshake_failures, &o.handshake_failures);
        self.heartbeats_received += o.heartbeats_received;
        self.heartbeats_sent += o.heartbeats_sent;
        sum(&mut self.evictions, &o.evictions);
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.messages_dropped += o.messages_dropped;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        sum(&mut self.protocol_errors, &o.protocol_errors);
        self.accept_errors += o.accept_errors;
        sum(&mut self.auth_failures, &o.auth_failures);
        self.tls_handshake_failures += o.tls_handshake_failures;
    }

    pub fn auth_failure(&mut self, f: AuthFailure) {
        // The discriminant is the index: `ALL` lists them in order.
        self.auth_failures[f as usize] += 1;
    }

    pub fn reject(&mut self, reason: RejectReason) {
        // The discriminant is the index: `ALL` lists them in order.
        self.rejected[reason as usize] += 1;
    }

    pub fn handshake_failure(&mut self, status: u16) {
        if let Some(i) = HANDSHAKE_STATUSES.iter().position(|s| *s == status) {
            self.handshake_failures[i] += 1;
        }
    }

    pub fn eviction(&mut self, reason: OfflineReason) {
        if let Some(i) = OfflineReason::ALL.iter().position(|r| *r == reason) {
            self.evictions[i] += 1;
        }
    }

    pub fn protocol_error(&mut self, code: u16) {
        if let Some(i) = PROTOCOL_ERROR_CODES.iter().position(|c| *c == code) {
            self.protocol_errors[i] += 1;
        }
    }
}

/// Numbers read from the loops' state at scrape time, so they are exact
/// (gauges, and the admin side's own request counter).
#[derive(Debug, Clone)]
pub struct Gauges {
    pub connections_open: usize,
    pub clients_online: usize,
    pub sse_subscribers: usize,
    pub admin_connections: usize,
    pub admin_requests: u64,
    /// Connections holding a buffer of any kind right now.
    pub connections_buffering: usize,
    pub buffered_bytes: usize,
    /// Connections held by each event loop, by loop index.
    pub loop_connections: Vec<usize>,
    /// With `--cluster`: whether it is up, and the live nodes it counts.
    pub cluster: Option<(bool, usize)>,
    /// With `--forward`.
    pub forward: Option<crate::forward::ForwardStats>,
    /// With `--tls-cert`: certificate reloads that worked, and that failed.
    pub tls_reloads: Option<[u64; 2]>,
    /// Read from `/proc/self` for this scrape.
    pub process: crate::process_stats::ProcessStats,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn float(out: &mut String, name: &str, kind: &str, help: &str, value: Option<f64>) {
    if let Some(v) = value {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Renders every metric, with `# HELP` and `# TYPE` lines. Labelled
/// families list every label value, zeros included, so a series never
/// appears out of nowhere.
pub fn render(m: &Metrics, g: Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    single(
        o,
        "wsbeat_connections_open",
        "gauge",
        "WebSocket connections held, in any phase.",
        g.connections_open as u64,
    );
    single(
        o,
        "wsbeat_clients_online",
        "gauge",
        "Client ids in the registry.",
        g.clients_online as u64,
    );
    single(
        o,
        "wsbeat_connections_accepted_total",
        "counter",
        "TCP connections accepted on the WebSocket listener.",
        m.connections_accepted,
    );
    family(
        o,
        "wsbeat_connections_rejected_total",
        "counter",
        "Connections refused before an upgrade, by reason.",
    );
    for (r, v) in RejectReason::ALL.iter().zip(m.rejected) {
        let _ = writeln!(o, "wsbeat_connections_rejected_total{{reason=\"{}\"}} {v}", r.as_str());
    }
    family(
        o,
        "wsbeat_handshake_failures_total",
        "counter",
        "Upgrade requests answered with an error status.",
    );
    for (s, v) in HANDSHAKE_STATUSES.iter().zip(m.handshake_failures) {
        let _ = writeln!(o, "wsbeat_handshake_failures_total{{status=\"{s}\"}} {v}");
    }
    single(
        o,
        "wsbeat_heartbeats_received_total",
        "counter",
        "Client heartbeat messages received.",
        m.heartbeats_received,
    );
    single(
        o,
        "wsbeat_heartbeats_sent_total",
        "counter",
        "Server heartbeats sent (a ping and a text heartbeat in `both` mode count once).",
        m.heartbeats_sent,
    );
    family(
        o,
        "wsbeat_evictions_total",
        "counter",
        "Upgraded connections that ended, by reason (as in /events).",
    );
    for (r, v) in OfflineReason::ALL.iter().zip(m.evictions) {
        let _ = writeln!(o, "wsbeat_evictions_total{{reason=\"{}\"}} {v}", r.as_str());
    }
    single(
        o,
        "wsbeat_messages_received_total",
        "counter",
        "Text and binary messages received, heartbeats included.",
        m.messages_received,
    );
    single(
        o,
        "wsbeat_messages_sent_total",
        "counter",
        "Text and binary messages sent: echoes, pushes, broadcasts, text heartbeats.",
        m.messages_sent,
    );
    single(
        o,
        "wsbeat_messages_dropped_total",
        "counter",
        "Application messages received with no application to take them.",
        m.messages_dropped,
    );
    single(
        o,
        "wsbeat_bytes_received_total",
        "counter",
        "Bytes read from WebSocket connections.",
        m.bytes_received,
    );
    single(
        o,
        "wsbeat_bytes_sent_total",
        "counter",
        "Bytes written to WebSocket connections.",
        m.bytes_sent,
    );
    family(
        o,
        "wsbeat_protocol_errors_total",
        "counter",
        "Connections closed for a protocol or policy violation, by close code.",
    );
    for (c, v) in PROTOCOL_ERROR_CODES.iter().zip(m.protocol_errors) {
        let _ = writeln!(o, "wsbeat_protocol_errors_total{{code=\"{c}\"}} {v}");
    }
    single(
        o,
        "wsbeat_accept_errors_total",
        "counter",
        "Failed accepts (e.g. out of file descriptors); accepting pauses 100 ms when it cannot answer with 503.",
        m.accept_errors,
    );
    single(
        o,
        "wsbeat_admin_requests_total",
        "counter",
        "Admin API requests served.",
        g.admin_requests,
    );
    single(
        o,
        "wsbeat_events_subscribers",
        "gauge",
        "Open /events streams.",
        g.sse_subscribers as u64,
    );
    single(
        o,
        "wsbeat_admin_connections",
        "gauge",
        "Open admin API connections.",
        g.admin_connections as u64,
    );
    single(
        o,
        "wsbeat_connections_buffering",
        "gauge",
        "WebSocket connections holding a heap buffer (unsent output, a split frame, an incomplete upgrade); idle ones hold none.",
        g.connections_buffering as u64,
    );
    single(
        o,
        "wsbeat_buffered_bytes",
        "gauge",
        "Heap bytes in per-connection buffers.",
        g.buffered_bytes as u64,
    );
    family(
        o,
        "wsbeat_loop_connections",
        "gauge",
        "Connections held by each event loop (--threads), by loop index.",
    );
    for (i, n) in g.loop_connections.iter().enumerate() {
        let _ = writeln!(o, "wsbeat_loop_connections{{loop=\"{i}\"}} {n}");
    }
    family(
        o,
        "wsbeat_auth_failures_total",
        "counter",
        "Connections refused or closed by authentication (JWT or the auth webhook), by reason.",
    );
    for (f, v) in AuthFailure::ALL.iter().zip(m.auth_failures) {
        let _ = writeln!(o, "wsbeat_auth_failures_total{{reason=\"{}\"}} {v}", f.label());
    }
    if let Some([ok, error]) = g.tls_reloads {
        single(
            o,
            "wsbeat_tls_handshake_failures_total",
            "counter",
            "TLS connections closed before their handshake completed (not TLS, refused versions or ALPN, errors, silence past --handshake-timeout).",
            m.tls_handshake_failures,
        );
        family(
            o,
            "wsbeat_tls_reloads_total",
            "counter",
            "Certificate reloads on SIGHUP, by result (an error keeps the certificate in use).",
        );
        let _ = writeln!(o, "wsbeat_tls_reloads_total{{result=\"ok\"}} {ok}");
        let _ = writeln!(o, "wsbeat_tls_reloads_total{{result=\"error\"}} {error}");
    }
    if let Some(f) = g.forward {
        single(
            o,
            "wsbeat_forward_delivered_total",
            "counter",
            "Messages and events the --forward backend acknowledged.",
            f.delivered,
        );
        single(
            o,
            "wsbeat_forward_dropped_total",
            "counter",
            "Messages and events dropped past --forward-buffer (or refused by the backend as too large on their own).",
            f.dropped,
        );
        family(
            o,
            "wsbeat_forward_requests_total",
            "counter",
            "Requests to the --forward backend, by result (errors are retried).",
        );
        let _ = writeln!(o, "wsbeat_forward_requests_total{{result=\"ok\"}} {}", f.requests_ok);
        let _ = writeln!(
            o,
            "wsbeat_forward_requests_total{{result=\"error\"}} {}",
            f.requests_failed
        );
        single(
            o,
            "wsbeat_forward_buffered_bytes",
            "gauge",
            "Bytes of messages and events waiting for the --forward backend or in flight.",
            f.buffered_bytes,
        );
    }
    family(
        o,
        "wsbeat_build_info",
        "gauge",
        "Always 1; the version of the running binary is in its label.",
    );
    let _ = writeln!(o, "wsbeat_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let p = &g.process;
    let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
    float(
        o,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    float(
        o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
    float(
        o,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        as_f64(p.resident_memory_bytes),
    );
    float(
        o,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        as_f64(p.virtual_memory_bytes),
    );
    float(
        o,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        as_f64(p.open_fds),
    );
    float(
        o,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors (the soft limit).",
        as_f64(p.max_fds),
    );
    if let Some((up, nodes)) = g.cluster {
        single(
            o,
            "wsbeat_cluster_up",
            "gauge",
            "1 while Redis is reachable, this node registered and its subscription proven (--cluster).",
            u64::from(up),
        );
        single(
            o,
            "wsbeat_cluster_nodes",
            "gauge",
            "Live nodes of the cluster, this one included, as last counted.",
            nodes as u64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_is_seconds(series: &str) -> bool {
        series.starts_with("process_") && series.contains("_seconds")
    }

    #[test]
    fn process_metrics_left_out_when_unread() {
        let text = render(
            &Metrics::default(),
            Gauges {
                connections_open: 0,
                clients_online: 0,
                sse_subscribers: 0,
                admin_connections: 0,
                admin_requests: 0,
                connections_buffering: 0,
                buffered_bytes: 0,
                loop_connections: vec![0],
                cluster: None,
                forward: None,
                tls_reloads: None,
                process: crate::process_stats::ProcessStats::default(),
            },
        );
        assert!(!text.contains("process_"), "{text}");
        assert!(text.contains("wsbeat_build_info{"));
    }

    #[test]
    fn every_family_has_help_and_type_and_samples_parse() {
        let mut m = Metrics::default();
        m.eviction(OfflineReason::HeartbeatTimeout);
        m.protocol_error(1007);
        m.handshake_failure(426);
        m.reject(RejectReason::HandshakeTimeout);
        let text = render(
            &m,
            Gauges {
                connections_open: 3,
                clients_online: 2,
                sse_subscribers: 0,
                admin_connections: 1,
                admin_requests: 4,
                connections_buffering: 0,
                buffered_bytes: 0,
                loop_connections: vec![2, 1],
                cluster: Some((true, 3)),
                forward: Some(crate::forward::ForwardStats::default()),
                tls_reloads: Some([1, 2]),
                process: crate::process_stats::ProcessStats {
                    cpu_seconds: Some(3.25),
                    start_time_seconds: Some(1_764_409_876.54),
                    resident_memory_bytes: Some(5_242_880),
                    virtual_memory_bytes: Some(123_456_789),
                    open_fds: Some(17),
                    max_fds: Some(1_048_576),
                },
            },
        );
        let mut families = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            // Integers, but for the process collector's seconds.
            if name_is_seconds(series) {
                value.parse::<f64>().unwrap();
            } else {
                value.parse::<u64>().unwrap();
            }
            let name = series.split('{').next().unwrap();
            assert!(families.contains(name), "{name} has no TYPE line before it");
        }
        assert!(text.contains("wsbeat_connections_open 3\n"));
        assert!(text.contains("wsbeat_clients_online 2\n"));
        assert!(text.contains("wsbeat_loop_connections{loop=\"0\"} 2\n"));
        assert!(text.contains("wsbeat_loop_connections{loop=\"1\"} 1\n"));
        assert!(text.contains("wsbeat_cluster_up 1\n"));
        assert!(text.contains("wsbeat_cluster_nodes 3\n"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("wsbeat_build_info{{version=\"{version}\"}} 1\n")));
        assert!(text.contains("process_cpu_seconds_total 3.25\n"));
        assert!(text.contains("process_start_time_seconds 1764409876.54\n"));
        assert!(text.contains("process_resident_memory_bytes 5242880\n"));
        assert!(text.contains("process_virtual_memory_bytes 123456789\n"));
        assert!(text.contains("process_open_fds 17\n"));
        assert!(text.contains("process_max_fds 1048576\n"));
        let mut sum = m.clone();
        sum.add(&m);
        assert_eq!(sum.evictions[OfflineReason::HeartbeatTimeout as usize], 2);
        assert_eq!(sum.protocol_errors, m.protocol_errors.map(|v| v * 2));
        assert!(text.contains("wsbeat_evictions_total{reason=\"heartbeat_timeout\"} 1\n"));
        assert!(text.contains("wsbeat_evictions_total{reason=\"shutdown\"} 0\n"));
        assert!(text.contains("wsbeat_protocol_errors_total{code=\"1007\"} 1\n"));
        assert!(text.contains("wsbeat_handshake_failures_total{status=\"426\"} 1\n"));
        assert!(text.contains("wsbeat_connections_rejected_total{reason=\"handshake_timeout\"} 1\n"));
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "RejectReason::ALL is in declaration order");
        }
    }
}
