//! grpc.health.v1 for Kubernetes probes: "liveness" is SERVING while the process runs;
//! "" and `holders.v1.HolderService` (readiness) follow the database, and turn
//! NOT_SERVING while a replica read side lags the feed past `--max-replica-lag`.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::feed::ReplicaLag;
use crate::store;

/// Keeps the health status in step with the database: SERVING while it answers, holds
/// the schema and lags the feed by at most `max_lag`; NOT_SERVING otherwise.
pub async fn watch_database(
    pool: Pool,
    reporter: HealthReporter,
    every: Duration,
    lag: ReplicaLag,
    max_lag: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<bool> = None;
    let mut answered: Option<Result<(), String>> = None;
    let mut pinged = std::time::Instant::now();
    loop {
        // The database every `every`; the lag (in memory) twice a second, so a replica
        // leaves the rotation soon after its lag passes the bound.
        if answered.is_none() || pinged.elapsed() >= every {
            answered = Some(store::ping(&pool).await.map_err(|e| e.to_string()));
            pinged = std::time::Instant::now();
        }
        let ok = match answered.clone().expect("pinged") {
            Ok(()) if lag.now() > max_lag => {
                if last != Some(false) {
                    warn!(
                        lag_ms = lag.now().as_millis() as u64,
                        "the read side lags the feed past --max-replica-lag; NOT_SERVING"
                    );
                }
                false
            }
            Ok(()) => true,
            Err(e) => {
                if last != Some(false) {
                    warn!(error = %e, "database check failed; NOT_SERVING");
                }
                false
            }
        };
        if last != Some(ok) {
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            reporter.set_service_status("holders.v1.HolderService", status).await;
            if ok {
                info!("database answers; SERVING");
            }
            last = Some(ok);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every.min(Duration::from_millis(500))) => {}
        }
    }
}
