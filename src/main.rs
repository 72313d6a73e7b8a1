//! The `wsbeat` binary: flags to `Config`, logger, run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = match wsbeat::cli::parse_args(std::env::args_os()) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    init_logger(cfg.log_format);
    let server = match wsbeat::Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `RUST_LOG` (default `info`) to stderr, as text or as one JSON object per
/// line with the same fields (`--log-format`).
fn init_logger(format: wsbeat::config::LogFormat) {
    use std::io::Write;
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == wsbeat::config::LogFormat::Json {
        b.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    b.init();
}
