//! grpc.health.v1 for Kubernetes probes: "liveness" is SERVING while the process runs;
//! "" and `holders.v1.HolderService` (readiness) follow the database.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::store;

/// Keeps the health status in step with the database: SERVING while it answers and holds
/// the schema, NOT_SERVING otherwise.
pub async fn watch_database(
    pool: Pool,
    reporter: HealthReporter,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<bool> = None;
    loop {
        let ok = match store::ping(&pool).await {
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
            () = tokio::time::sleep(every) => {}
        }
    }
}
