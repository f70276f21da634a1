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
    if let Some(ingestor::config::Command::Verify { sample, json }) = config.command {
        return verify(&config, sample, json).await;
    }
    let shutdown = bootstrap::shutdown_on_signal(config.shutdown_grace);
    match ingestor::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingestor stopped");
            ExitCode::FAILURE
        }
    }
}

/// `ingestor verify`: the report on stdout; exit 0 when everything matches, 1 on a
/// mismatch, 2 when it could not check.
#[allow(clippy::print_stdout)]
async fn verify(config: &Config, sample: Option<u64>, json: bool) -> ExitCode {
    match ingestor::verify_store(config, sample).await {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                println!("{}", report.summary());
                for m in &report.mismatches {
                    println!("mismatch {} stored {} on chain {}", m.address, m.stored, m.on_chain);
                }
            }
            ExitCode::from(if report.matches() { 0 } else { 1 })
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": null, "error": format!("{e:#}") }));
            } else {
                println!("verify could not check: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
