//! The `ingestor` binary: settings, logging and signals; the work is in the library.

use std::process::ExitCode;

use clap::Parser;
use ingestor::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail_config(&e.to_string()),
    };
    if let Err(e) = config.validate() {
        return fail_config(&e);
    }
    init_logging(&config.log_format);

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match ingestor::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingestor stopped");
            ExitCode::FAILURE
        }
    }
}

/// One line naming the bad setting, then exit code 2.
#[allow(clippy::print_stderr)]
fn fail_config(message: &str) -> ExitCode {
    let first =
        message.lines().filter(|l| !l.trim().is_empty()).take_while(|l| !l.starts_with("Usage:"));
    let line = first.map(str::trim).collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("ingestor: error: {line}");
    ExitCode::from(2)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// SIGINT or SIGTERM stops the run between batches.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing the current batch");
    shutdown.cancel();
}
