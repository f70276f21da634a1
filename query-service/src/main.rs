//! The `query-service` binary: settings, logging and signals; the work is in the library.

use std::process::ExitCode;

use anyhow::Context;
use query_service::Config;

fn main() -> ExitCode {
    let config = match bootstrap::parse_or_exit::<Config>(
        "query-service",
        &query_service::config::SECRETS,
        Config::validate,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A port in use is a setting that cannot work: one line, exit 2, before anything
    // says SERVING.
    let listener = match std::net::TcpListener::bind(config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("query-service: error: --listen (LISTEN_ADDR) {}: {e}", config.listen);
            }
            return ExitCode::from(2);
        }
    };
    bootstrap::shutdown::block_on(async {
        let otlp = config.otlp_endpoint.as_deref();
        let telemetry =
            match bootstrap::telemetry::init_or_exit(config.log_format, "query-service", otlp) {
                Ok(t) => t,
                Err(code) => return code,
            };
        let shutdown = bootstrap::shutdown::on_signal();
        let grace = config.shutdown_grace;
        let ended = bootstrap::shutdown::within_grace(
            run(config, listener, shutdown.clone()),
            &shutdown,
            grace,
        )
        .await;
        telemetry.shutdown().await;
        match ended {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "query-service stopped");
                ExitCode::FAILURE
            }
            None => ExitCode::FAILURE,
        }
    })
}

async fn run(
    config: Config,
    listener: std::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let pool = query_service::store::pool(
        &config.database_url,
        usize::from(config.database_pool_size),
        config.statement_timeout,
    )?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .with_context(|| format!("listening on --listen {}", config.listen))?;
    let settings = config.settings()?;
    query_service::serve(listener, config.database_url, pool, settings, shutdown).await
}
