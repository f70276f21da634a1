//! The query-service's Prometheus metrics, registered once and handed down (no globals).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the query-service exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Requests by method, gRPC code and caller (API key name, or "anonymous").
    pub requests: IntCounterVec,
    /// Calls refused before any work, by reason (unauthenticated, rate_limited) and
    /// caller.
    pub refused: IntCounterVec,
    /// Expensive calls waiting for their lane now.
    pub expensive_waiting: IntGauge,
    /// Expensive calls refused because the lane stayed full for the whole wait.
    pub expensive_refused: IntCounter,
    /// Request latency by method (for streams: until the stream is set up).
    pub seconds: HistogramVec,
    /// StreamTransfers streams open now.
    pub active_streams: IntGauge,
    /// Times a stream read the store to catch up (it fell behind the live buffer, or
    /// started behind the feed).
    pub stream_catchups: IntCounter,
    /// Events committed but not yet read by the live feed, at its last look.
    pub feed_lag_events: IntGauge,
    /// How long the read side has lacked a commit the feed heard of (a replica's lag).
    pub replica_lag_seconds: prometheus::Gauge,
    /// 1 while the live feed listens on its server (`--feed-database-url`), 0 while it
    /// reconnects: streams then get no live events, answers go on.
    pub feed_connected: IntGauge,
    /// Database connections leased by requests, by lane (cheap, stream, expensive).
    pub leases: IntCounterVec,
    /// Warm answers at the head ([`crate::warm`]): served from memory, recomputed after
    /// a commit, or dropped when a recomputation failed.
    pub warm: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every metric in it.
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new("query_requests_total", "gRPC requests by method, code and caller"),
                &["method", "code", "caller"],
            )
            .expect("metric"),
            refused: IntCounterVec::new(
                Opts::new("query_refused_total", "Calls refused before any work, by reason"),
                &["reason", "caller"],
            )
            .expect("metric"),
            expensive_waiting: IntGauge::new(
                "query_expensive_waiting",
                "Expensive calls waiting for their lane",
            )
            .expect("metric"),
            expensive_refused: IntCounter::new(
                "query_expensive_refused_total",
                "Expensive calls refused: the lane stayed full for the whole wait",
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
            replica_lag_seconds: prometheus::Gauge::new(
                "query_replica_lag_seconds",
                "How long the read side has lacked a commit the feed heard of",
            )
            .expect("metric"),
            feed_connected: IntGauge::new(
                "query_feed_connected",
                "1 while the live feed listens for commits, 0 while it reconnects",
            )
            .expect("metric"),
            leases: IntCounterVec::new(
                Opts::new("query_database_leases_total", "Connections leased by requests, by lane"),
                &["lane"],
            )
            .expect("metric"),
            warm: IntCounterVec::new(
                Opts::new(
                    "query_warm_answers_total",
                    "Answers at the head kept warm: served, recomputed, failed",
                ),
                &["outcome"],
            )
            .expect("metric"),
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.seconds.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.expensive_waiting.clone()),
            Box::new(m.expensive_refused.clone()),
            Box::new(m.active_streams.clone()),
            Box::new(m.stream_catchups.clone()),
            Box::new(m.feed_lag_events.clone()),
            Box::new(m.replica_lag_seconds.clone()),
            Box::new(m.feed_connected.clone()),
            Box::new(m.leases.clone()),
            Box::new(m.warm.clone()),
        ] {
            m.registry.register(c).expect("each metric once");
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
