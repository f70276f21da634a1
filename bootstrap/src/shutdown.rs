//! Graceful shutdown: the first SIGTERM or SIGINT cancels one token, handed down by value;
//! the program then has `--shutdown-grace` to finish, after which `main` returns with
//! status 1 and whatever still runs is dropped with the runtime (Postgres rolls back a
//! batch in flight). No `process::exit`: destructors run, logs are flushed.

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `main` on a multi-threaded runtime. Tasks still running when it returns are
/// dropped; blocking work gets at most a second more.
pub fn block_on(main: impl Future<Output = ExitCode>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "no logging without a runtime")]
            {
                eprintln!("cannot start the async runtime: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(main);
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// A token cancelled at the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    // Ends at the first signal.
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Runs `work` to its end, or, once `shutdown` is cancelled, for at most `grace` more.
/// `None` when the grace ran out first (logged): the caller exits with status 1;
/// Kubernetes would kill it a little later anyway, without a word.
pub async fn within_grace<T>(
    work: impl Future<Output = T>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<T> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        out = work => Some(out),
        () = deadline => {
            tracing::error!(
                grace_ms = grace.as_millis() as u64,
                "not stopped within --shutdown-grace (SHUTDOWN_GRACE); exiting now"
            );
            None
        }
    }
}
