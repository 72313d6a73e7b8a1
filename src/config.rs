//! Server settings, their defaults, and the parsing of durations and sizes.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::auth::jwt::{JwtKey, JwtSettings};
pub use crate::auth::webhook::WebhookSettings;
pub use crate::forward::ForwardSettings;
pub use crate::presence::DuplicateId;

/// Who may claim an id (SPEC §13).
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Anyone may name itself (`?client_id=`, heartbeats).
    #[default]
    Open,
    /// Every connection brings a JWT as `?token=`; its `sub` is the id.
    Jwt(JwtSettings),
    /// The backend decides each upgrade, and names the id.
    Webhook(WebhookSettings),
}

/// What the server sends every heartbeat interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerHeartbeat {
    /// An RFC 6455 ping frame (browsers answer it by themselves).
    #[default]
    Ping,
    /// A text message `heartbeat` (visible to scripts in a page).
    Text,
    /// Both, ping first.
    Both,
    /// Nothing.
    Off,
}

/// How the binary writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `env_logger`'s lines.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

/// What proves a client alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Liveness {
    /// Every complete frame from the client: heartbeat, pong, data.
    #[default]
    Any,
    /// Only client heartbeat messages.
    Heartbeat,
}

/// Everything the server can be told. `Config::default()` is what
/// `wsbeat` runs with when given no flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// WebSocket listener.
    pub listen: SocketAddr,
    /// Admin HTTP API listener; `None` serves no admin API (library use).
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin API requires (all endpoints but `/healthz`).
    /// Required when the admin listener is not on a loopback address.
    pub admin_token: Option<String>,
    /// An admin connection idle this long is closed (`/events` streams get
    /// a keep-alive comment at a third of it instead).
    pub admin_idle_timeout: Duration,
    /// When set, upgrades on other paths get `404`.
    pub path: Option<String>,
    /// When set, only these exact `Origin` values may upgrade (`403`
    /// otherwise); requests without `Origin` are let through.
    pub allowed_origins: Option<Vec<String>>,
    /// How often the server sends its heartbeat to each client.
    pub heartbeat_interval: Duration,
    /// A client with no liveness signal for this long is evicted (4000).
    pub heartbeat_timeout: Duration,
    pub server_heartbeat: ServerHeartbeat,
    pub liveness: Liveness,
    pub duplicate_id: DuplicateId,
    /// A connection that has not completed its upgrade by then is dropped.
    pub handshake_timeout: Duration,
    /// After sending a close frame, how long to wait for the client's.
    pub close_timeout: Duration,
    /// Connections beyond this get `503`.
    pub max_connections: usize,
    /// Largest message after reassembly; larger ones close with 1009.
    pub max_message_size: usize,
    /// Unsent outbound bytes beyond which a connection is dropped.
    pub max_backpressure: usize,
    /// Echo every non-heartbeat text and binary message back.
    pub echo: bool,
    /// On SIGINT/SIGTERM: stop accepting, close every client with 1001 and
    /// wait this long for their close frames.
    pub shutdown_timeout: Duration,
    /// How the binary writes its log (the library leaves logging to the
    /// embedding program).
    pub log_format: LogFormat,
    /// Event loops, one thread each (1 to 256). Each owns the connections it
    /// is given; ids, pushes, the admin API and shutdown cover them all.
    pub threads: usize,
    /// A cluster of nodes sharing presence through Redis
    /// (`redis://[[user]:password@]host[:port][/db]`); `None`: one node.
    pub cluster: Option<String>,
    /// This node's name in the cluster (1–64 bytes of `A-Za-z0-9._-`);
    /// `None`: `<hostname>-<listen port>`. Shown as `"node"` by the admin API
    /// also on a single node.
    pub node_id: Option<String>,
    /// A node that has not renewed its lease for this long is dead, and its
    /// clients go offline (`node_lost`).
    pub node_lease: Duration,
    /// Who may claim an id: anyone, a JWT's `sub`, or the webhook's answer.
    pub auth: Auth,
    /// Client messages and presence events POSTed to a backend.
    pub forward: Option<ForwardSettings>,
    /// TLS on the WebSocket listener (`wss://`): the PEM certificate chain
    /// and key, reloaded on SIGHUP. `None`: plain `ws://`.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The admin API over TLS too, with the same certificate.
    pub admin_tls: bool,
    /// Whether the server installs its SIGINT/SIGTERM handling (graceful
    /// shutdown; a second signal stops at once). Programs that handle
    /// signals themselves set it to false and call `Handle::shutdown`.
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8181)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8182))),
            admin_token: None,
            admin_idle_timeout: Duration::from_secs(60),
            path: None,
            allowed_origins: None,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(60),
            server_heartbeat: ServerHeartbeat::Ping,
            liveness: Liveness::Any,
            duplicate_id: DuplicateId::Replace,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_connections: 1_000_000,
            max_message_size: 1 << 20,
            max_backpressure: 1 << 20,
            echo: false,
            shutdown_timeout: Duration::from_secs(5),
            handle_signals: true,
            threads: default_threads(),
            log_format: LogFormat::Text,
            cluster: None,
            node_id: None,
            node_lease: Duration::from_secs(10),
            auth: Auth::Open,
            forward: None,
            tls: None,
            admin_tls: false,
        }
    }
}

/// The number of CPUs this process may run on (one loop per CPU).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(crate::presence::ConnId::MAX_LOOPS)
}

/// A setting that cannot be used, as `validate` finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The admin API would listen beyond loopback with no token.
    PublicAdminWithoutToken(SocketAddr),
    /// The admin API and the WebSocket listener share an address.
    AdminOnListenAddress(SocketAddr),
    /// No loop, or more than a connection id can name.
    Threads(usize),
    /// Not 1–64 bytes of `A-Za-z0-9._-`.
    NodeId(String),
    /// Outside what [`NODE_LEASE_RANGE`] allows.
    NodeLease(Duration),
    /// `--admin-tls` without a certificate to serve.
    AdminTlsWithoutCertificate,
}

/// `--auth-webhook-timeout`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// `--auth-webhook-concurrency`: calls in flight at once.
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 16;
/// `--auth-webhook-queue`: upgrades waiting for a call.
pub const DEFAULT_WEBHOOK_QUEUE: usize = 1024;
/// `--forward-buffer`.
pub const DEFAULT_FORWARD_BUFFER: usize = 16 << 20;
/// `--forward-timeout`: long enough for a slow backend, so that a batch it
/// would have taken is not sent twice.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The node leases allowed: renewals every third of it must fit between a
/// Redis round trip and a reasonable failover time.
pub const NODE_LEASE_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

/// Whether `id` may name a node: 1–64 bytes of `A-Za-z0-9._-`.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The default node id: `<hostname>-<port>`, the host name cut to what a
/// node id allows.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let mut host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(58)
        .collect();
    if host.is_empty() {
        host.push_str("wsbeat");
    }
    format!("{host}-{port}")
}

impl ConfigError {
    /// The flag at fault.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::PublicAdminWithoutToken(_) | ConfigError::AdminOnListenAddress(_) => "--admin-listen",
            ConfigError::Threads(_) => "--threads",
            ConfigError::NodeId(_) => "--node-id",
            ConfigError::NodeLease(_) => "--node-lease",
            ConfigError::AdminTlsWithoutCertificate => "--admin-tls",
        }
    }
}

impl std::fmt::Display for ConfigError {
    /// Names the flag, the value and what is allowed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::PublicAdminWithoutToken(addr) => write!(
                f,
                "invalid value '{addr}' for '{}': not a loopback address, so --admin-token (WSBEAT_ADMIN_TOKEN) must be set",
                self.flag()
            ),
            ConfigError::AdminOnListenAddress(addr) => write!(
                f,
                "invalid value '{addr}' for '{}': the same address as --listen",
                self.flag()
            ),
            ConfigError::Threads(n) => write!(
                f,
                "invalid value '{n}' for '{}': a whole number from 1 to {}",
                self.flag(),
                crate::presence::ConnId::MAX_LOOPS
            ),
            ConfigError::NodeId(id) => write!(
                f,
                "invalid value '{id}' for '{}': 1 to 64 bytes of A-Z a-z 0-9 . _ -",
                self.flag()
            ),
            ConfigError::NodeLease(d) => write!(f, "invalid value '{d:?}' for '{}': from 1s to 1h", self.flag()),
            ConfigError::AdminTlsWithoutCertificate => {
                write!(f, "'{}' needs --tls-cert and --tls-key", self.flag())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks what flags cannot check one by one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = self.admin_listen
            && !addr.ip().is_loopback()
            && self.admin_token.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::PublicAdminWithoutToken(addr));
        }
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(ConfigError::AdminOnListenAddress(self.listen));
        }
        if !(1..=crate::presence::ConnId::MAX_LOOPS).contains(&self.threads) {
            return Err(ConfigError::Threads(self.threads));
        }
        if let Some(id) = &self.node_id
            && !is_valid_node_id(id)
        {
            return Err(ConfigError::NodeId(id.clone()));
        }
        if !NODE_LEASE_RANGE.contains(&self.node_lease) {
            return Err(ConfigError::NodeLease(self.node_lease));
        }
        if self.admin_tls && self.tls.is_none() {
            return Err(ConfigError::AdminTlsWithoutCertificate);
        }
        Ok(())
    }
}

/// What the duration parser accepts, for error messages.
pub const DURATION_HELP: &str = "a whole number followed by ms, s, m or h, e.g. 500ms, 30s";
/// What the size parser accepts, for error messages.
pub const SIZE_HELP: &str = "a whole number of bytes, optionally followed by KiB, MiB or GiB, e.g. 65536, 16MiB";

/// Parses `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let err = || format!("expected {DURATION_HELP}");
    if num.is_empty() {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(err()),
    };
    // A century is plenty; beyond it, arithmetic on deadlines could overflow.
    match ms {
        Some(ms) if ms <= 100 * 365 * 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => Err("duration too large".into()),
    }
}

/// Parses `65536`, `64KiB`, `16MiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let err = || format!("expected {SIZE_HELP}");
    if num.is_empty() {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v <= 1 << 40)
        .ok_or_else(|| "size too large (at most 1024GiB)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_admin_listener_needs_a_token() {
        let mut c = Config {
            admin_listen: Some("0.0.0.0:8182".parse().unwrap()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("--admin-token"));
        c.admin_token = Some(String::new());
        assert!(c.validate().is_err());
        c.admin_token = Some("t".into());
        assert!(c.validate().is_ok());
        c.admin_listen = Some("[::1]:8182".parse().unwrap());
        c.admin_token = None;
        assert!(c.validate().is_ok());
        assert!(Config::default().validate().is_ok());
        for bad in [0, 257] {
            let c = Config {
                threads: bad,
                ..Default::default()
            };
            assert_eq!(c.validate(), Err(ConfigError::Threads(bad)));
            assert!(c.validate().unwrap_err().to_string().contains("--threads"));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "30 s",
            "30sec",
            "1d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_not_shown() {
        let f = ForwardSettings {
            url: "https://user:pw@backend/in?key=k3y".into(),
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            buffer: 1,
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{f:?}");
        assert!(
            !shown.contains("pw") && !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.contains("Authorization") && shown.contains("backend"), "{shown}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "MiB", "1.5MiB", "-1", "16mb", "16MB", "16 MiB", "99999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
