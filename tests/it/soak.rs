//! The soak, short: 45 s of cheap calls, expensive calls past what the lane serves and
//! 200 streams, while the ingestor follows a moving chain, with a kill -9 of the ingestor
//! and a Postgres restart. The 10-minute run is `cargo run --release -p rig --bin soak`.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_holds_under_load_through_a_kill_and_a_postgres_restart() {
    rig::init_test_logging();
    let report = rig::soak::run(rig::soak::SoakSpec {
        duration: Duration::from_secs(45),
        streams: 200,
        cheap_per_sec: 20.0,
        expensive_per_sec: 10.0,
        transfers_per_sec: 2.0,
        // Other tests share the machine here: recovered means back under 100 ms.
        p99_floor: Duration::from_millis(100),
    })
    .await
    .unwrap();
    let summary = report.summary();
    assert!(report.failures.is_empty(), "{summary}");
    assert_eq!(report.faults.len(), 2, "{summary}");
    assert!(report.transfers >= 30, "{summary}");
    assert!(report.load.streams.iter().all(|s| s.len() as u64 == report.transfers), "{summary}");
    assert!(report.load.cheap.len() >= 800, "{summary}");
}
