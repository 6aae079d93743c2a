//! `zori-ingest` binary: parse and check the settings, start logging, serve until SIGTERM.

use std::process::ExitCode;

use clap::{error::ErrorKind, Parser};
use zori_ingest::{Config, LogFormat};

/// mimalloc: the hot paths allocate many small, short-lived buffers (JSON in and out); the
/// system allocator spent about a fifth of ingest's CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
            _ => {
                // One line, like every other settings error.
                let text = error.to_string();
                let first = text.lines().next().unwrap_or("error: invalid arguments");
                eprintln!("{first} (see zori-ingest --help)");
                return ExitCode::from(2);
            }
        },
    };
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // `telemetry::init` reads the format from ZORI_LOG_FORMAT; a --log-format flag is handed
    // over through it. Still single-threaded here: no runtime has started yet.
    if settings.log_format == LogFormat::Json {
        std::env::set_var("ZORI_LOG_FORMAT", LogFormat::Json.as_str());
    } else {
        std::env::remove_var("ZORI_LOG_FORMAT");
    }
    zori_service::telemetry::init("info");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(settings.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(listen = %settings.listen, %error, "failed to bind");
                eprintln!("error: failed to listen on {}: {error}", settings.listen);
                return ExitCode::FAILURE;
            }
        };
        match zori_ingest::run(settings, listener, zori_service::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "zori-ingest failed");
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
