//! The ingestor's grpc.health.v1 server, for Kubernetes probes: "liveness" is SERVING while
//! the process runs; "" (readiness) is SERVING while this ingestor holds the writer lock,
//! is within a configured number of blocks of the head, and waits for no outage.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics::Metrics;

/// The health service.
#[derive(Debug)]
pub struct Health {
    reporter: HealthReporter,
    stop: CancellationToken,
}

impl Health {
    /// Serves health on `addr` (on `tasks`) until `stop`: liveness SERVING, readiness
    /// NOT_SERVING. A bad address is an error; one in use is served once it frees.
    pub async fn serve(
        addr: SocketAddr,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let bound = bootstrap::listen::try_bind("--health-listen", addr)
            .await
            .map_err(anyhow::Error::msg)?;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("liveness", ServingStatus::Serving).await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        let until = stop.clone();
        tasks.spawn(async move {
            let Some(listener) =
                bootstrap::listen::when_free(bound, "--health-listen", addr, &until).await
            else {
                return;
            };
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, until.cancelled())
                .await;
        });
        Ok(Self { reporter, stop })
    }

    /// From now on, readiness follows the lag in `metrics` and the writer lock (a task on
    /// `tasks` that ends with the lock or the server).
    pub fn follow(
        &self,
        metrics: Metrics,
        max_lag: u64,
        lock_lost: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let reporter = self.reporter.clone();
        let stop = self.stop.clone();
        tasks.spawn(async move {
            let mut last = None;
            loop {
                let indexed = metrics.indexed_block.get() > 0;
                let ready = indexed
                    && !lock_lost.is_cancelled()
                    && crate::retry::waiting() == 0
                    && metrics.lag_blocks.get() as u64 <= max_lag;
                if last != Some(ready) {
                    let status =
                        if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    reporter.set_service_status("", status).await;
                    last = Some(ready);
                }
                // The next lock gets a follower of its own.
                if lock_lost.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = lock_lost.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }
}
