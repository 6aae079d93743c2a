//! `zori-api`: parse the settings, set up logging, run until SIGTERM / Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use zori_api::{Config, Settings};

/// mimalloc: the hot paths allocate many small, short-lived buffers (JSON in and out); the
/// system allocator spent about a fifth of ingest's CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match Config::parse().validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // Still single-threaded here: the logging setup reads the format from the environment.
    std::env::set_var("ZORI_LOG_FORMAT", settings.log_format.as_str());
    zori_service::telemetry::init("info,sqlx::postgres::notice=warn");
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
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "zori-api failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            format!(
                "failed to listen on {} (--listen, ZORI_API_LISTEN): {e}",
                settings.listen
            )
        })?;
    zori_api::run(settings, listener, zori_service::shutdown::signal())
        .await
        .map_err(|e| e.to_string())
}
