//! The `ingestor` binary: settings, logging and signals; the work is in the library.

use std::process::ExitCode;

use ingestor::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match bootstrap::parse_or_exit::<Config>("ingestor", Config::validate) {
        Ok(c) => c,
        Err(code) => return code,
    };
    bootstrap::init_logging(&config.log_format);
    let shutdown = bootstrap::shutdown_on_signal(config.shutdown_grace);
    match ingestor::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingestor stopped");
            ExitCode::FAILURE
        }
    }
}
