//! The query-service's Prometheus metrics, registered once and handed down (no globals).

use std::time::Instant;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tonic::Status;

/// Every metric the query-service exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Requests by method and gRPC code.
    pub requests: IntCounterVec,
    /// Request latency by method (for streams: until the stream is set up).
    pub seconds: HistogramVec,
    /// StreamTransfers streams open now.
    pub active_streams: IntGauge,
    /// Times a stream read the store to catch up (it fell behind the live buffer, or
    /// started behind the feed).
    pub stream_catchups: IntCounter,
    /// Events committed but not yet read by the live feed, at its last look.
    pub feed_lag_events: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric in it.
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new("query_requests_total", "gRPC requests by method and code"),
                &["method", "code"],
            )
            .expect("metric"),
            seconds: HistogramVec::new(
                HistogramOpts::new("query_request_seconds", "gRPC request latency").buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["method"],
            )
            .expect("metric"),
            active_streams: IntGauge::new("query_active_streams", "StreamTransfers streams open")
                .expect("metric"),
            stream_catchups: IntCounter::new(
                "query_stream_catchups_total",
                "Stream catch-ups from the store",
            )
            .expect("metric"),
            feed_lag_events: IntGauge::new(
                "query_feed_lag_events",
                "Committed events the live feed has not read",
            )
            .expect("metric"),
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.seconds.clone()),
            Box::new(m.active_streams.clone()),
            Box::new(m.stream_catchups.clone()),
            Box::new(m.feed_lag_events.clone()),
        ] {
            m.registry.register(c).expect("each metric once");
        }
        m
    }

    /// Runs one request, counting it by `method` and outcome code and timing it.
    pub async fn observe<T>(
        &self,
        method: &str,
        request: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = request.await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.seconds.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
        self.requests.with_label_values(&[method, &format!("{code:?}")]).inc();
        result
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
