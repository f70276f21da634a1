//! Fair shares under load, through the wire: per-caller rate limits with a retry hint
//! (per key, or per client address without keys), the expensive lane that cannot take
//! cheap answers' connections, a caller's deadline that cancels its statement, and the
//! HTTP/2 bounds (request size, concurrent calls per connection, keepalive).

use std::time::{Duration, Instant};

use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{ExportHoldersRequest, GetHoldersRequest, GetTopHoldersRequest, ListTokensRequest};
use rig::pair::QueryService;
use tonic::{Code, Request};

use crate::access::{ALPHA_KEY, BETA_KEY, top, with_key};
use crate::{small, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_limit_is_refused_at_once_with_a_retry_hint() {
    use tonic_types::StatusExt;

    let w = world(small(84)).await;
    w.ingest_all().await;
    let (dir, keys) = crate::access::alpha_and_beta("limits");
    let settings = query_service::Settings {
        api_keys_file: Some(keys),
        rate_limit: Some("4/s,burst=5".parse().unwrap()),
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    // The burst of 5 passes; calls past it are refused (a slow machine may refill a token
    // or two meanwhile, so count until the first refusal).
    let mut passed = 0;
    let (e, took) = loop {
        let started = Instant::now();
        match client.get_top_holders(with_key(top(1), Some(ALPHA_KEY))).await {
            Ok(_) => passed += 1,
            Err(e) => break (e, started.elapsed()),
        }
        assert!(passed <= 20, "no refusal after {passed} calls at 4/s");
    };
    assert!(passed >= 5, "refused within the burst, after {passed}");
    assert!(took < Duration::from_secs(1), "refused at once, not queued: {took:?}");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("alpha") && e.message().contains("retry in"), "{e:?}");
    let hint = e.get_details_retry_info().and_then(|r| r.retry_delay).expect("a RetryInfo");
    assert!(hint > Duration::ZERO && hint <= Duration::from_millis(250), "{hint:?}");
    // Another caller has a bucket of its own.
    for _ in 0..5 {
        client.get_top_holders(with_key(top(1), Some(BETA_KEY))).await.unwrap();
    }
    // After the hint, alpha may call again.
    tokio::time::sleep(hint).await;
    client.get_top_holders(with_key(top(1), Some(ALPHA_KEY))).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Holds an exclusive lock on the kept rankings, which every first page at a past moment
/// reads and nothing at the checkpoint does: expensive calls hang in Postgres until it is
/// released.
async fn block_past_rankings(db: &rig::db::TestDb) -> tokio_postgres::Client {
    let locker = db.client().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE rankings IN ACCESS EXCLUSIVE MODE").await.unwrap();
    locker
}

/// The query-service's statements waiting on a lock now.
async fn waiting_statements(db: &rig::db::TestDb) -> i64 {
    let c = db.client().await.unwrap();
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'query-service' AND datname = current_database()
           AND state = 'active' AND wait_event_type = 'Lock'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_calls_wait_their_turn_and_never_take_cheap_answers() {
    let w = world(rig::history::Spec { days: 2, blocks_per_day: 10, ..small(85) }).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        expensive_connections: 2,
        expensive_wait: Duration::from_millis(300),
        answer_cache: 0,
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let client = qs.client().await.unwrap();
    let past = w.history.start_block + (w.history.end_block - w.history.start_block) / 2;
    let past_top = GetTopHoldersRequest { limit: 5, at_block: Some(past), ..Default::default() };
    let expected = client.clone().get_top_holders(past_top.clone()).await.unwrap().into_inner();

    let locker = block_past_rankings(&w.db).await;
    // Two expensive calls take the lane and hang in Postgres.
    let hung: Vec<_> = (0..2)
        .map(|_| {
            let (mut c, r) = (client.clone(), past_top.clone());
            tokio::spawn(async move { c.get_top_holders(r).await })
        })
        .collect();
    let started = Instant::now();
    while waiting_statements(&w.db).await < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "the past rankings did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third waits its bounded turn, then is refused; an export too.
    let started = Instant::now();
    let e = client.clone().get_top_holders(past_top.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("expensive"), "{e:?}");
    let hint = tonic_types::StatusExt::get_details_retry_info(&e).and_then(|r| r.retry_delay);
    assert_eq!(hint, Some(Duration::from_millis(300)), "the lane's wait as the retry hint");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "{waited:?}");
    let e = client.clone().export_holders(ExportHoldersRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Cheap answers do not wait for any of it: rankings at the checkpoint, lookups in the
    // past, the token list, many at once.
    let started = Instant::now();
    let cheap: Vec<_> = (0..40)
        .map(|i| {
            let mut c = client.clone();
            let address = w.history.addresses[i % w.history.addresses.len()].to_string();
            tokio::spawn(async move {
                c.get_top_holders(top(5)).await?;
                c.list_tokens(ListTokensRequest::default()).await?;
                let lookup = GetHoldersRequest {
                    addresses: vec![address],
                    at_block: Some(past),
                    ..Default::default()
                };
                c.get_holders(lookup).await
            })
        })
        .collect();
    for c in cheap {
        c.await.unwrap().expect("a cheap answer while the expensive lane is full");
    }
    // The lane stays full (the lock holds) for as long as this takes: any bound proves
    // the cheap answers never waited for it; 5 s leaves room for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Released, the hung calls answer as they would have.
    drop(locker);
    for h in hung {
        assert_eq!(h.await.unwrap().unwrap().into_inner(), expected);
    }
}

/// Asks `r` with a deadline of 1 s while its statement waits on a lock: the caller hears
/// at the deadline, and Postgres stops the statement too, well before the server's own
/// statement timeout.
async fn cut_off_at_a_deadline(
    client: &mut HolderServiceClient<tonic::transport::Channel>,
    db: &rig::db::TestDb,
    r: GetTopHoldersRequest,
) {
    let mut r = Request::new(r);
    r.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let e = client.get_top_holders(r).await.unwrap_err();
    // The server stops at nine tenths of the deadline and answers DEADLINE_EXCEEDED; on a
    // machine loaded by other tests that answer can still lose the race with the
    // client's own timer (CANCELLED). Either way the caller is not kept waiting.
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    while waiting_statements(db).await > 0 {
        assert!(started.elapsed() < Duration::from_secs(3), "the statement outlived its caller");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_cancels_its_statement() {
    let w = world(rig::history::Spec { days: 2, blocks_per_day: 10, ..small(86) }).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        statement_timeout: Duration::from_secs(30),
        answer_cache: 0,
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let past = w.history.start_block + 3;
    let locker = block_past_rankings(&w.db).await;
    let r = GetTopHoldersRequest { limit: 5, at_block: Some(past), ..Default::default() };
    cut_off_at_a_deadline(&mut client, &w.db, r).await;
    drop(locker);
    // The lane is free again.
    let r = GetTopHoldersRequest { limit: 5, at_block: Some(past), ..Default::default() };
    client.get_top_holders(r).await.unwrap();

    // A named token's ranking at the head: the deadline stops it as well ...
    let token = w.history.token.to_string();
    let top = || GetTopHoldersRequest { token: token.clone(), limit: 5, ..Default::default() };
    let locker = w.db.client().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE balances IN ACCESS EXCLUSIVE MODE").await.unwrap();
    cut_off_at_a_deadline(&mut client, &w.db, top()).await;
    // ... and leaves no connection with that deadline's timeout: questions without one on
    // every connection of the pool (eight) wait out a lock held longer than that deadline.
    let asked: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            let r = top();
            tokio::spawn(async move { client.get_top_holders(r).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(locker);
    for a in asked {
        let answer = a.await.unwrap().expect("no connection kept the deadline's timeout");
        assert_eq!(answer.into_inner().holders.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_bound_is_refused() {
    let w = world(small(87)).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        http: query_service::Http { max_request_bytes: 4096, ..Default::default() },
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let address = w.history.addresses[0].to_string();
    let big = GetHoldersRequest { addresses: vec![address.clone(); 200], ..Default::default() };
    let e = client.get_holders(big).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-request-bytes"), "{}", e.message());
    let small = GetHoldersRequest { addresses: vec![address; 2], ..Default::default() };
    client.get_holders(small).await.expect("a request under the bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_its_concurrent_calls() {
    use proto::pb::StreamTransfersRequest;

    let w = world(small(88)).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        http: query_service::Http { max_concurrent_streams: 2, ..Default::default() },
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    // One connection: two open streams take both of its places.
    let mut client = qs.client().await.unwrap();
    let a = client.stream_transfers(StreamTransfersRequest::default()).await.unwrap();
    let _b = client.stream_transfers(StreamTransfersRequest::default()).await.unwrap();
    let mut third = client.clone();
    let waiting =
        tokio::spawn(async move { third.list_tokens(ListTokensRequest::default()).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "a third call ran beside two open streams on one connection");
    // Another connection is not held back.
    let mut other = qs.client().await.unwrap();
    other.list_tokens(ListTokensRequest::default()).await.unwrap();
    // A stream ends: the waiting call runs.
    drop(a);
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    answered.expect("the call ran once a place was free").unwrap().unwrap();
}

/// Opens a raw HTTP/2 connection to `addr` that never answers anything (a peer gone
/// silent); how long until the server closes it, up to `within`.
async fn silent_peer_closed_within(
    addr: std::net::SocketAddr,
    within: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The client preface and an empty SETTINGS frame; then silence (no SETTINGS or PING
    // acknowledgement ever).
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_drops_a_peer_that_stopped_answering() {
    let w = world(small(89)).await;
    w.ingest_all().await;
    let quick = query_service::Settings {
        http: query_service::Http { keepalive: Duration::from_millis(500), ..Default::default() },
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, quick).await.unwrap();
    let closed = silent_peer_closed_within(qs.addr, Duration::from_secs(6)).await;
    assert!(closed.is_some_and(|d| d < Duration::from_secs(4)), "{closed:?}");
    // The default (30 s) leaves such a connection alone for that long.
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let closed = silent_peer_closed_within(qs.addr, Duration::from_secs(3)).await;
    assert_eq!(closed, None, "closed without keepalive pings failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_each_client_address_has_a_bucket_of_its_own() {
    use tonic::transport::Endpoint;

    let w = world(small(90)).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        // Nothing refills within the test: a burst of 3, then one a minute.
        rate_limit: Some("1/m,burst=3".parse().unwrap()),
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    // Two clients from two loopback addresses (any 127.x.y.z is this host).
    let from = |ip: &str| {
        let endpoint = Endpoint::from_shared(format!("http://{}", qs.addr)).unwrap();
        endpoint.local_address(Some(ip.parse().unwrap())).connect_lazy()
    };
    let mut a = HolderServiceClient::new(from("127.0.0.2"));
    let mut b = HolderServiceClient::new(from("127.0.0.3"));
    for _ in 0..3 {
        a.get_top_holders(top(1)).await.unwrap();
    }
    let e = a.get_top_holders(top(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // A second connection from the same address shares its bucket; another address not.
    let mut a2 = HolderServiceClient::new(from("127.0.0.2"));
    let e = a2.get_top_holders(top(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for _ in 0..3 {
        b.get_top_holders(top(1)).await.unwrap();
    }
}
