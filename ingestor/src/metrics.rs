//! The ingestor's Prometheus metrics, registered once and handed down (no globals).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the ingestor exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// The node's newest block, as last read.
    pub head_block: IntGauge,
    /// The checkpoint: every block up to it is indexed.
    pub indexed_block: IntGauge,
    /// head_block - indexed_block.
    pub lag_blocks: IntGauge,
    /// The chain's finalized block, as last read (tag or depth).
    pub finalized_block: IntGauge,
    /// The chain's safe block, as last read (tag or depth).
    pub safe_block: IntGauge,
    /// Seconds between now and the checkpoint block's timestamp.
    pub lag_seconds: prometheus::Gauge,
    /// Transfers newly stored.
    pub transfers: IntCounter,
    /// JSON-RPC calls by method and outcome (ok, too_large, rate_limited, transient, fatal).
    pub rpc_requests: IntCounterVec,
    /// JSON-RPC call latency by method.
    pub rpc_seconds: HistogramVec,
    /// Moves from one --rpc-url to the next after a failure.
    pub rpc_failovers: IntCounter,
    /// Time to commit one batch.
    pub commit_seconds: Histogram,
    /// Reorgs rolled back.
    pub reorgs: IntCounter,
    /// Depth of each reorg rolled back, in blocks.
    pub reorg_depth: Histogram,
    /// Holders whose balance the last periodic verification compared with the chain.
    pub verify_checked: IntGauge,
    /// Of those, how many differed (plus one if Σ balances differed from the supply).
    pub verify_mismatched: IntGauge,
    /// Unix time of the last periodic verification that could check.
    pub verify_last_run: IntGauge,
    /// Periodic verifications that could not check (node or database unavailable).
    pub verify_errors: IntCounter,
    /// Calls waiting for the database or the node to come back (an outage), now.
    pub outage_waits: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric in it.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            head_block: IntGauge::new(
                "ingestor_head_block",
                "The node's newest block, as last read",
            )
            .expect("metric"),
            indexed_block: IntGauge::new(
                "ingestor_indexed_block",
                "Every block up to this one is indexed",
            )
            .expect("metric"),
            lag_blocks: IntGauge::new(
                "ingestor_lag_blocks",
                "Blocks between the head and the checkpoint",
            )
            .expect("metric"),
            finalized_block: IntGauge::new(
                "ingestor_finalized_block",
                "The chain's finalized block, as last read",
            )
            .expect("metric"),
            safe_block: IntGauge::new(
                "ingestor_safe_block",
                "The chain's safe block, as last read",
            )
            .expect("metric"),
            lag_seconds: prometheus::Gauge::new(
                "ingestor_lag_seconds",
                "Age of the checkpoint block",
            )
            .expect("metric"),
            transfers: IntCounter::new("ingestor_transfers_total", "Transfers newly stored")
                .expect("metric"),
            rpc_requests: IntCounterVec::new(
                Opts::new("ingestor_rpc_requests_total", "JSON-RPC calls by method and outcome"),
                &["method", "outcome"],
            )
            .expect("metric"),
            rpc_seconds: HistogramVec::new(
                HistogramOpts::new("ingestor_rpc_seconds", "JSON-RPC call latency").buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["method"],
            )
            .expect("metric"),
            rpc_failovers: IntCounter::new(
                "ingestor_rpc_failovers_total",
                "Moves from one --rpc-url to the next after a failure",
            )
            .expect("metric"),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new("ingestor_commit_seconds", "Time to commit one batch")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            )
            .expect("metric"),
            reorgs: IntCounter::new("ingestor_reorgs_total", "Reorgs rolled back").expect("metric"),
            reorg_depth: Histogram::with_opts(
                HistogramOpts::new(
                    "ingestor_reorg_depth_blocks",
                    "Depth of each reorg rolled back",
                )
                .buckets(vec![1.0, 2.0, 3.0, 5.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )
            .expect("metric"),
            verify_checked: IntGauge::new(
                "ingestor_verify_checked",
                "Holders the last periodic verification compared with balanceOf",
            )
            .expect("metric"),
            verify_mismatched: IntGauge::new(
                "ingestor_verify_mismatched",
                "Mismatches the last periodic verification found (a supply mismatch counts one)",
            )
            .expect("metric"),
            verify_last_run: IntGauge::new(
                "ingestor_verify_last_run_timestamp_seconds",
                "Unix time of the last periodic verification that could check",
            )
            .expect("metric"),
            verify_errors: IntCounter::new(
                "ingestor_verify_errors_total",
                "Periodic verifications that could not check",
            )
            .expect("metric"),
            outage_waits: IntGauge::new(
                "ingestor_outage_waits",
                "Calls waiting for the database or the node to come back (0: none away)",
            )
            .expect("metric"),
            registry,
        };
        for c in [
            Box::new(m.head_block.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.indexed_block.clone()),
            Box::new(m.lag_blocks.clone()),
            Box::new(m.lag_seconds.clone()),
            Box::new(m.finalized_block.clone()),
            Box::new(m.safe_block.clone()),
            Box::new(m.transfers.clone()),
            Box::new(m.rpc_requests.clone()),
            Box::new(m.rpc_seconds.clone()),
            Box::new(m.rpc_failovers.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.reorgs.clone()),
            Box::new(m.reorg_depth.clone()),
            Box::new(m.verify_checked.clone()),
            Box::new(m.verify_mismatched.clone()),
            Box::new(m.verify_last_run.clone()),
            Box::new(m.verify_errors.clone()),
            Box::new(m.outage_waits.clone()),
        ] {
            m.registry.register(c).expect("each metric once");
        }
        m
    }

    /// Records the head just read, and the lag behind it.
    pub fn head(&self, head: u64) {
        self.head_block.set(head as i64);
        self.lag_blocks.set((head as i64 - self.indexed_block.get()).max(0));
    }

    /// Records the chain's safe and finalized blocks.
    pub fn finality(&self, safe: u64, finalized: u64) {
        self.safe_block.set(safe as i64);
        self.finalized_block.set(finalized as i64);
    }

    /// Records the checkpoint and its block time against the last head read.
    pub fn checkpoint(&self, block: u64, block_time: u64) {
        self.indexed_block.set(block as i64);
        self.lag_blocks.set((self.head_block.get() - block as i64).max(0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.lag_seconds.set(now.saturating_sub(block_time) as f64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
