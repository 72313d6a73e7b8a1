//! The `wsbeat` binary: flags to `Config`, logger, run.

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = match wsbeat::cli::parse_args(std::env::args_os()) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Err(e) = wsbeat::raise_fd_limit(cfg.max_connections) {
        log::warn!("cannot read or raise the open-file limit: {e}");
    }
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
