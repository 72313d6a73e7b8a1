//! Command-line flags (each also read from a `WSBEAT_*` variable) to
//! [`Config`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::config::{self, Config, DuplicateId, Liveness, LogFormat, ServerHeartbeat};

#[derive(Parser, Debug)]
#[command(
    name = "wsbeat",
    version,
    about = "WebSocket server for very many long-lived connections",
    after_help = "Durations take ms, s, m, h (500ms, 30s). Sizes take bytes or KiB, MiB, GiB (16MiB).\nA flag beats its environment variable. Logging: RUST_LOG (default info)."
)]
struct Flags {
    /// WebSocket listener address.
    #[arg(long, env = "WSBEAT_LISTEN", default_value = "0.0.0.0:8181", value_name = "ADDR")]
    listen: SocketAddr,

    /// Admin HTTP API listener, or off (no admin API).
    #[arg(
        long,
        env = "WSBEAT_ADMIN_LISTEN",
        default_value = "127.0.0.1:8182",
        value_name = "ADDR",
        value_parser = parse_admin_listen
    )]
    admin_listen: AdminListen,

    /// Bearer token the admin API requires (all but /healthz). Required when
    /// --admin-listen is not a loopback address. Default: none.
    #[arg(long, env = "WSBEAT_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Close an admin connection idle this long (/events streams get a
    /// keep-alive comment at a third of it instead).
    #[arg(long, env = "WSBEAT_ADMIN_IDLE_TIMEOUT", default_value = "60s", value_name = "D", value_parser = positive_duration)]
    admin_idle_timeout: Duration,

    /// Only upgrade on this path (others get 404). Default: any path.
    #[arg(long, env = "WSBEAT_PATH", value_name = "PATH", value_parser = parse_path)]
    path: Option<String>,

    /// Comma list of Origin values (scheme://host[:port], no path) allowed to
    /// upgrade (others get 403). Default: any origin.
    #[arg(long, env = "WSBEAT_ALLOWED_ORIGINS", value_name = "LIST", value_parser = parse_origins)]
    allowed_origins: Option<Origins>,

    /// How often the server sends its heartbeat to each client.
    #[arg(long, env = "WSBEAT_HEARTBEAT_INTERVAL", default_value = "30s", value_name = "D", value_parser = positive_duration)]
    heartbeat_interval: Duration,

    /// Evict a client with no liveness signal for this long (close 4000).
    #[arg(long, env = "WSBEAT_HEARTBEAT_TIMEOUT", default_value = "60s", value_name = "D", value_parser = positive_duration)]
    heartbeat_timeout: Duration,

    /// What the server sends every interval: ping (RFC 6455 ping frame), text
    /// (text message "heartbeat"), both, off.
    #[arg(long, env = "WSBEAT_SERVER_HEARTBEAT", default_value = "ping", value_name = "MODE")]
    server_heartbeat: HeartbeatMode,

    /// What proves a client alive: any (every complete frame) or heartbeat
    /// (only client heartbeat messages).
    #[arg(long, env = "WSBEAT_LIVENESS", default_value = "any", value_name = "MODE")]
    liveness: LivenessMode,

    /// A second connection with an online id: replace (the older gets 4001)
    /// or reject (the newer gets 4002).
    #[arg(long, env = "WSBEAT_DUPLICATE_ID", default_value = "replace", value_name = "MODE")]
    duplicate_id: DuplicateMode,

    /// Drop a connection that has not completed its upgrade by then.
    #[arg(long, env = "WSBEAT_HANDSHAKE_TIMEOUT", default_value = "10s", value_name = "D", value_parser = positive_duration)]
    handshake_timeout: Duration,

    /// After sending a close frame, wait this long for the client's, then drop.
    #[arg(long, env = "WSBEAT_CLOSE_TIMEOUT", default_value = "5s", value_name = "D", value_parser = positive_duration)]
    close_timeout: Duration,

    /// More concurrent connections get 503 and are closed.
    #[arg(long, env = "WSBEAT_MAX_CONNECTIONS", default_value = "1000000", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_connections: u64,

    /// Larger messages (after reassembly) close the connection with 1009.
    #[arg(long, env = "WSBEAT_MAX_MESSAGE_SIZE", default_value = "1MiB", value_name = "S", value_parser = positive_size)]
    max_message_size: usize,

    /// Drop a connection whose unsent outbound bytes exceed this.
    #[arg(long, env = "WSBEAT_MAX_BACKPRESSURE", default_value = "1MiB", value_name = "S", value_parser = positive_size)]
    max_backpressure: usize,

    /// Echo every non-heartbeat text and binary message back.
    #[arg(long, env = "WSBEAT_ECHO", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    echo: bool,

    /// On SIGINT/SIGTERM: stop accepting, close every client with 1001, wait
    /// this long for their close frames, exit 0. A second signal exits at once.
    #[arg(long, env = "WSBEAT_SHUTDOWN_TIMEOUT", default_value = "5s", value_name = "D", value_parser = config::parse_duration)]
    shutdown_timeout: Duration,

    /// Event loops, one thread each, each owning its connections (1 to 256).
    /// Default: the number of CPUs the process may run on.
    #[arg(long, env = "WSBEAT_THREADS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,

    /// Log lines as text, or as one JSON object per line (ts, level, target,
    /// msg). The level comes from RUST_LOG (default info).
    #[arg(long, env = "WSBEAT_LOG_FORMAT", default_value = "text", value_name = "F")]
    log_format: LogMode,

    /// Share presence and route pushes with other nodes through Redis:
    /// redis://[[user]:password@]host[:port][/db]. Unset: a single node.
    #[arg(long, env = "WSBEAT_CLUSTER", value_name = "URL", value_parser = parse_cluster_url)]
    cluster: Option<String>,

    /// This node's name in the cluster: 1-64 bytes of A-Za-z0-9._-
    /// [default: <hostname>-<listen port>]
    #[arg(long, env = "WSBEAT_NODE_ID", value_name = "ID", value_parser = parse_node_id)]
    node_id: Option<String>,

    /// A node that has not renewed its lease for this long is dead; its
    /// clients go offline (node_lost). From 1s to 1h.
    #[arg(long, env = "WSBEAT_NODE_LEASE", default_value = "10s", value_name = "D", value_parser = parse_node_lease)]
    node_lease: Duration,

    /// Every connection must bring a JWT as ?token= signed with this secret
    /// (HS256/384/512); its sub is the client id, exp is required.
    #[arg(long, env = "WSBEAT_AUTH_JWT_SECRET", value_name = "S", hide_env_values = true, conflicts_with_all = ["auth_jwt_public_key", "auth_webhook"])]
    auth_jwt_secret: Option<String>,

    /// Like --auth-jwt-secret, with a PEM public key (RS256, ES256 or EdDSA).
    #[arg(
        long,
        env = "WSBEAT_AUTH_JWT_PUBLIC_KEY",
        value_name = "PATH",
        conflicts_with = "auth_webhook"
    )]
    auth_jwt_public_key: Option<std::path::PathBuf>,

    /// With JWT auth: iss must be this. Default: not checked.
    #[arg(long, env = "WSBEAT_AUTH_JWT_ISSUER", value_name = "ISS")]
    auth_jwt_issuer: Option<String>,

    /// With JWT auth: aud must hold this. Default: tokens with aud are refused.
    #[arg(long, env = "WSBEAT_AUTH_JWT_AUDIENCE", value_name = "AUD")]
    auth_jwt_audience: Option<String>,

    /// POST each upgrade to this URL; 200 {"id": ID} accepts with that id,
    /// 401/403 close 4401/4403, anything else closes 1011.
    #[arg(long, env = "WSBEAT_AUTH_WEBHOOK", value_name = "URL", value_parser = parse_url)]
    auth_webhook: Option<String>,

    /// An auth webhook call not answered by then closes the client 1011.
    #[arg(long, env = "WSBEAT_AUTH_WEBHOOK_TIMEOUT", default_value = "2s", value_name = "D", value_parser = positive_duration)]
    auth_webhook_timeout: Duration,

    /// Auth webhook calls in flight at once.
    #[arg(long, env = "WSBEAT_AUTH_WEBHOOK_CONCURRENCY", default_value = "16", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    auth_webhook_concurrency: u64,

    /// Upgrades waiting for an auth webhook call; past it they get 503.
    #[arg(long, env = "WSBEAT_AUTH_WEBHOOK_QUEUE", default_value = "1024", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    auth_webhook_queue: u64,

    /// POST client messages and presence events to this URL, in batches.
    #[arg(long, env = "WSBEAT_FORWARD", value_name = "URL", value_parser = parse_url)]
    forward: Option<String>,

    /// A header added to every forwarding request, "Name: value" (repeatable).
    #[arg(long, value_name = "H", value_parser = crate::http_client::parse_header)]
    forward_header: Vec<(String, String)>,

    /// Bytes of forwarded items waiting for the backend; past it the oldest
    /// are dropped (wsbeat_forward_dropped_total).
    #[arg(long, env = "WSBEAT_FORWARD_BUFFER", default_value = "16MiB", value_name = "S", value_parser = positive_size)]
    forward_buffer: usize,

    /// A forwarding request not answered by then is retried.
    #[arg(long, env = "WSBEAT_FORWARD_TIMEOUT", default_value = "30s", value_name = "D", value_parser = positive_duration)]
    forward_timeout: Duration,

    /// PEM certificate chain (leaf first): the WebSocket listener speaks
    /// TLS (wss://). Needs --tls-key. Reloaded on SIGHUP.
    #[arg(long, env = "WSBEAT_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WSBEAT_TLS_KEY", value_name = "PATH")]
    tls_key: Option<std::path::PathBuf>,

    /// Serve the admin API over TLS too, with the same certificate.
    #[arg(long, env = "WSBEAT_ADMIN_TLS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    admin_tls: bool,
}

/// The TLS flags as a setting, or the one line that says which is wrong
/// (the files are loaded and checked now, so a bad pair never starts).
fn tls_of(flags: &Flags) -> Result<Option<crate::tls::TlsFiles>, String> {
    let files = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (Some(_), None) => return Err("'--tls-cert' needs --tls-key".into()),
        (None, Some(_)) => return Err("'--tls-key' needs --tls-cert".into()),
        (None, None) => return Ok(None),
    };
    crate::tls::TlsCerts::load(files.clone()).map_err(|e| e.to_string())?;
    Ok(Some(files))
}

fn parse_url(s: &str) -> Result<String, String> {
    crate::http_client::check_url(s)?;
    Ok(s.to_string())
}

/// The auth flags as a setting, or the one line that says which is wrong.
fn auth_of(flags: &Flags) -> Result<config::Auth, String> {
    use crate::auth::jwt::{JwtKey, JwtSettings, JwtVerifier};
    let key = match (&flags.auth_jwt_secret, &flags.auth_jwt_public_key) {
        (Some(s), _) if s.is_empty() => {
            return Err("invalid value '' for '--auth-jwt-secret': must not be empty".into());
        }
        (Some(s), _) => Some(JwtKey::Secret(s.as_bytes().to_vec())),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(pem) => Some(JwtKey::PublicKeyPem(pem)),
            Err(e) => {
                return Err(format!(
                    "invalid value '{}' for '--auth-jwt-public-key': {e}",
                    path.display()
                ));
            }
        },
        (None, None) => None,
    };
    if let Some(key) = key {
        let settings = JwtSettings {
            key,
            issuer: flags.auth_jwt_issuer.clone(),
            audience: flags.auth_jwt_audience.clone(),
        };
        if let Err(e) = JwtVerifier::new(&settings) {
            let flag = match settings.key {
                JwtKey::Secret(_) => "--auth-jwt-secret".to_string(),
                JwtKey::PublicKeyPem(_) => format!(
                    "invalid value '{}' for '--auth-jwt-public-key'",
                    flags
                        .auth_jwt_public_key
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                ),
            };
            return Err(format!("{flag}: {e}"));
        }
        return Ok(config::Auth::Jwt(settings));
    }
    for (set, flag) in [
        (&flags.auth_jwt_issuer, "--auth-jwt-issuer"),
        (&flags.auth_jwt_audience, "--auth-jwt-audience"),
    ] {
        if set.is_some() {
            return Err(format!("'{flag}' needs --auth-jwt-secret or --auth-jwt-public-key"));
        }
    }
    Ok(match &flags.auth_webhook {
        Some(url) => config::Auth::Webhook(config::WebhookSettings {
            url: url.clone(),
            timeout: flags.auth_webhook_timeout,
            concurrency: flags.auth_webhook_concurrency as usize,
            queue: flags.auth_webhook_queue as usize,
        }),
        None => config::Auth::Open,
    })
}

fn parse_cluster_url(s: &str) -> Result<String, String> {
    crate::cluster::check_url(s)?;
    Ok(s.to_string())
}

fn parse_node_id(s: &str) -> Result<String, String> {
    if config::is_valid_node_id(s) {
        Ok(s.to_string())
    } else {
        Err("1 to 64 bytes of A-Z a-z 0-9 . _ -".into())
    }
}

fn parse_node_lease(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if config::NODE_LEASE_RANGE.contains(&d) {
        Ok(d)
    } else {
        Err("from 1s to 1h".into())
    }
}

#[derive(Clone, Debug)]
struct Origins(Vec<String>);

#[derive(Clone, Copy, Debug)]
struct AdminListen(Option<SocketAddr>);

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if s == "off" {
        return Ok(AdminListen(None));
    }
    s.parse()
        .map(|a| AdminListen(Some(a)))
        .map_err(|_| "expected an address such as 127.0.0.1:8182, or off".into())
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum HeartbeatMode {
    Ping,
    Text,
    Both,
    Off,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LivenessMode {
    Any,
    Heartbeat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogMode {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DuplicateMode {
    Replace,
    Reject,
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
        Ok(s.to_string())
    } else {
        Err("expected an absolute path such as /ws, without query".into())
    }
}

fn parse_origins(s: &str) -> Result<Origins, String> {
    let list: Vec<&str> = s.split(',').map(str::trim).collect();
    if list.iter().any(|o| o.is_empty()) {
        return Err("expected a comma list of origins such as https://a.example,https://b.example".into());
    }
    list.into_iter()
        .map(normalise_origin)
        .collect::<Result<_, _>>()
        .map(Origins)
}

/// An Origin header is `scheme://host[:port]` in lowercase (RFC 6454 §6.1),
/// so a configured value is compared in that form: its case is lowered, and
/// one with a path (even a lone trailing slash) could never match and is
/// refused with the value to use instead.
fn normalise_origin(o: &str) -> Result<String, String> {
    // Sandboxed documents send the opaque origin as the word null.
    if o == "null" {
        return Ok(o.into());
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(format!(
            "'{o}' is not an origin: expected scheme://host[:port] such as https://example.com"
        ));
    };
    let (host, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if scheme.is_empty() || host.is_empty() {
        return Err(format!(
            "'{o}' is not an origin: expected scheme://host[:port] such as https://example.com"
        ));
    }
    let origin = format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
    if !path.is_empty() {
        return Err(format!("an origin has no path: use {origin}"));
    }
    Ok(origin)
}

/// Clap's message without the usage block and the "--help" line (the
/// message already names the flag), and with a value that came from the
/// environment named by its variable.
fn clap_error_text(e: &clap::Error, args: &[OsString]) -> String {
    let mut text = e.render().to_string();
    if let Some((flag, var)) = from_environment(e, args) {
        // clap names the flag as '--flag <VALUE>'.
        if let Some(start) = text.find(&format!("'{flag}"))
            && let Some(len) = text[start + 1..].find('\'')
        {
            text.replace_range(start..start + len + 2, &format!("{var} ({flag})"));
        }
    }
    let mut lines = Vec::new();
    let mut in_usage = false;
    for line in text.lines() {
        if line.starts_with("Usage:") {
            in_usage = true;
        } else if line.trim().is_empty() {
            in_usage = false;
        } else if !in_usage && !line.starts_with("For more information") {
            lines.push(line.trim_end());
        }
    }
    lines.join("\n")
}

/// The flag and variable of an invalid value that came from a `WSBEAT_*`
/// variable (the flag itself is not on the command line).
fn from_environment(e: &clap::Error, args: &[OsString]) -> Option<(String, String)> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let cmd = Flags::command();
    let var = cmd.get_arguments().find(|a| a.get_long() == Some(long))?.get_env()?;
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.strip_prefix(flag.as_str()).is_some_and(|r| r.starts_with('=')))
    });
    if on_command_line || std::env::var_os(var).is_none() {
        return None;
    }
    Some((flag, var.to_string_lossy().into_owned()))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match config::parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

fn positive_size(s: &str) -> Result<usize, String> {
    match config::parse_size(s)? {
        0 => Err("must be greater than 0".into()),
        n => Ok(n),
    }
}

/// Parses flags and `WSBEAT_*` variables. On `--help`/`--version` prints and
/// returns exit code 0; on a bad value prints one line naming the flag (or
/// the variable it came from), the value and what is allowed, followed by
/// clap's hints when it has some (possible values, a similar flag), and
/// returns exit code 2.
pub fn parse_args<I, T>(args: I) -> Result<Config, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let flags = match Flags::try_parse_from(&args) {
        Ok(f) => f,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return Err(ExitCode::SUCCESS);
            }
            eprintln!("{}", clap_error_text(&e, &args));
            return Err(ExitCode::from(2));
        }
    };
    let auth = match auth_of(&flags) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let tls = match tls_of(&flags) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let forward = flags.forward.clone().map(|url| config::ForwardSettings {
        url,
        headers: flags.forward_header.clone(),
        buffer: flags.forward_buffer,
        timeout: flags.forward_timeout,
    });
    let cfg = Config {
        listen: flags.listen,
        admin_listen: flags.admin_listen.0,
        admin_token: flags.admin_token.filter(|t| !t.is_empty()),
        admin_idle_timeout: flags.admin_idle_timeout,
        path: flags.path,
        allowed_origins: flags.allowed_origins.map(|o| o.0),
        heartbeat_interval: flags.heartbeat_interval,
        heartbeat_timeout: flags.heartbeat_timeout,
        server_heartbeat: match flags.server_heartbeat {
            HeartbeatMode::Ping => ServerHeartbeat::Ping,
            HeartbeatMode::Text => ServerHeartbeat::Text,
            HeartbeatMode::Both => ServerHeartbeat::Both,
            HeartbeatMode::Off => ServerHeartbeat::Off,
        },
        liveness: match flags.liveness {
            LivenessMode::Any => Liveness::Any,
            LivenessMode::Heartbeat => Liveness::Heartbeat,
        },
        duplicate_id: match flags.duplicate_id {
            DuplicateMode::Replace => DuplicateId::Replace,
            DuplicateMode::Reject => DuplicateId::Reject,
        },
        handshake_timeout: flags.handshake_timeout,
        close_timeout: flags.close_timeout,
        max_connections: flags.max_connections as usize,
        max_message_size: flags.max_message_size,
        max_backpressure: flags.max_backpressure,
        echo: flags.echo,
        shutdown_timeout: flags.shutdown_timeout,
        handle_signals: true,
        threads: flags.threads.map_or_else(config::default_threads, |n| n as usize),
        log_format: match flags.log_format {
            LogMode::Text => LogFormat::Text,
            LogMode::Json => LogFormat::Json,
        },
        cluster: flags.cluster,
        node_id: flags.node_id,
        node_lease: flags.node_lease,
        auth,
        forward,
        tls,
        admin_tls: flags.admin_tls,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_config_default() {
        let cfg = parse_args(["wsbeat"]).unwrap();
        let d = Config::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.handshake_timeout, d.handshake_timeout);
        assert_eq!(cfg.heartbeat_interval, d.heartbeat_interval);
        assert_eq!(cfg.heartbeat_timeout, d.heartbeat_timeout);
        assert_eq!(cfg.server_heartbeat, d.server_heartbeat);
        assert_eq!(cfg.liveness, d.liveness);
        assert_eq!(cfg.duplicate_id, d.duplicate_id);
        assert_eq!(cfg.close_timeout, d.close_timeout);
        assert_eq!(cfg.max_connections, d.max_connections);
        assert_eq!(cfg.max_message_size, d.max_message_size);
        assert_eq!(cfg.max_backpressure, d.max_backpressure);
        assert_eq!(cfg.echo, d.echo);
        assert_eq!(cfg.admin_listen, d.admin_listen);
        assert_eq!(cfg.admin_token, d.admin_token);
        assert_eq!(cfg.admin_idle_timeout, d.admin_idle_timeout);
        assert_eq!(cfg.shutdown_timeout, d.shutdown_timeout);
        assert_eq!(cfg.handle_signals, d.handle_signals);
        assert_eq!(cfg.threads, d.threads);
        assert_eq!(cfg.log_format, d.log_format);
        assert!(cfg.threads >= 1);
        assert_eq!(cfg.path, d.path);
        assert!(cfg.allowed_origins.is_none());
    }

    #[test]
    fn flags_parse() {
        let cfg = parse_args([
            "wsbeat",
            "--listen",
            "127.0.0.1:9000",
            "--echo",
            "--max-message-size",
            "16MiB",
            "--path",
            "/ws",
            "--allowed-origins",
            "https://a.example, https://b.example",
            "--close-timeout",
            "500ms",
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-timeout",
            "1m",
            "--server-heartbeat",
            "both",
            "--liveness",
            "heartbeat",
            "--duplicate-id",
            "reject",
            "--admin-listen",
            "0.0.0.0:9000",
            "--admin-token",
            "s3cret",
            "--shutdown-timeout",
            "2s",
            "--threads",
            "3",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(cfg.echo);
        assert_eq!(cfg.max_message_size, 16 << 20);
        assert_eq!(cfg.path.as_deref(), Some("/ws"));
        assert_eq!(
            cfg.allowed_origins.unwrap(),
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(cfg.close_timeout, Duration::from_millis(500));
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(cfg.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(cfg.server_heartbeat, ServerHeartbeat::Both);
        assert_eq!(cfg.liveness, Liveness::Heartbeat);
        assert_eq!(cfg.duplicate_id, DuplicateId::Reject);
        assert_eq!(cfg.admin_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(cfg.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(cfg.threads, 3);
        assert_eq!(cfg.log_format, LogFormat::Json);
    }

    #[test]
    fn admin_listen_off_turns_the_admin_api_off() {
        let cfg = parse_args(["wsbeat", "--admin-listen", "off"]).unwrap();
        assert_eq!(cfg.admin_listen, None);
        // Without a listener, a token is not required.
        assert!(parse_args(["wsbeat", "--admin-listen", "off", "--listen", "0.0.0.0:9000"]).is_ok());
    }

    #[test]
    fn origins_are_lowercased_and_refused_with_a_path() {
        let cfg = parse_args(["wsbeat", "--allowed-origins", "HTTPS://Example.COM:8443,null"]).unwrap();
        assert_eq!(cfg.allowed_origins.unwrap(), vec!["https://example.com:8443", "null"]);
        for (bad, why) in [
            ("https://example.com/", "an origin has no path: use https://example.com"),
            (
                "https://Example.com/app",
                "an origin has no path: use https://example.com",
            ),
            (
                "https://example.com?x",
                "an origin has no path: use https://example.com",
            ),
            ("example.com", "is not an origin"),
            ("https://", "is not an origin"),
        ] {
            assert!(normalise_origin(bad).unwrap_err().contains(why), "{bad}");
            assert!(parse_args(["wsbeat", "--allowed-origins", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn clap_errors_keep_their_hints_without_the_usage() {
        let text = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(Into::into).collect();
            let e = Flags::try_parse_from(&args).unwrap_err();
            clap_error_text(&e, &args)
        };
        let t = text(&["wsbeat", "--server-heartbeat", "loud"]);
        assert!(
            t.starts_with("error: invalid value 'loud' for '--server-heartbeat"),
            "{t}"
        );
        assert!(t.contains("possible values: ping, text, both, off"), "{t}");
        let t = text(&["wsbeat", "--heartbeat-intervall", "1s"]);
        assert!(t.contains("--heartbeat-interval"), "{t}");
        for t in [t, text(&["wsbeat", "--close-timeout", "5"])] {
            assert!(
                !t.contains("Usage:") && !t.contains("--help") && !t.contains("\n\n"),
                "{t}"
            );
        }
        assert_eq!(text(&["wsbeat", "--close-timeout", "5"]).lines().count(), 1);
    }

    #[test]
    fn bad_values_exit_2() {
        for args in [
            &["wsbeat", "--close-timeout", "5"][..],
            &["wsbeat", "--close-timeout", "0s"],
            &["wsbeat", "--max-message-size", "1MB"],
            &["wsbeat", "--max-connections", "0"],
            &["wsbeat", "--listen", "nowhere"],
            &["wsbeat", "--path", "ws"],
            &["wsbeat", "--allowed-origins", "a,,b"],
            &["wsbeat", "--allowed-origins", "https://example.com/"],
            &["wsbeat", "--admin-listen", "of"],
            &["wsbeat", "--no-such-flag"],
            &["wsbeat", "--server-heartbeat", "loud"],
            &["wsbeat", "--liveness", "some"],
            &["wsbeat", "--heartbeat-timeout", "0ms"],
            &["wsbeat", "--threads", "0"],
            &["wsbeat", "--log-format", "xml"],
            &["wsbeat", "--threads", "two"],
            &["wsbeat", "--threads", "257"],
            &["wsbeat", "--threads", "-1"],
            &["wsbeat", "--admin-listen", "0.0.0.0:9999"],
            &["wsbeat", "--admin-listen", "10.1.2.3:9999", "--admin-token", ""],
        ] {
            assert_eq!(
                parse_args(args.iter().copied()).unwrap_err(),
                ExitCode::from(2),
                "{args:?}"
            );
        }
    }
}
