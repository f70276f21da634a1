//! Callers that cost others: connections that never speak, requests waiting for a block
//! the store does not have, bytes that are not the method's message, deadlines shorter
//! than the work, one caller taking every stream; and the API key's small print (the
//! scheme's case, guessing keys, an emptied keys file).

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest, StreamTransfersRequest};
use rig::pair::QueryService;
use tokio::io::AsyncWriteExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Request, Status};

use crate::access::tempdir;
use crate::access::{ALPHA_KEY, key_line};
use crate::{metric, small, wait_metric, world};

/// Opens 100 connections to `addr`, half sending `opening` and then nothing, half
/// nothing at all; asserts that every one is closed by the server 2 s later.
async fn silent_connections_are_closed(addr: std::net::SocketAddr, opening: &[u8]) {
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(opening).await.unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &mut idle {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                s.readable().await.unwrap();
                match s.try_read(&mut buf) {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert_eq!(closed.ok(), Some(true), "a silent connection is still open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_the_preface_are_dropped() {
    let w = world(small(281)).await;
    w.ingest_all().await;
    let http =
        query_service::Http { handshake_timeout: Duration::from_millis(500), ..Default::default() };
    let settings = query_service::Settings { http: http.clone(), ..Default::default() };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    // Silent ones, and ones that send half of the preface then nothing.
    silent_connections_are_closed(qs.addr, b"PRI * HTTP/2.0\r\n").await;
    // Real clients are served meanwhile and after.
    let mut client = qs.client().await.unwrap();
    client.get_top_holders(GetTopHoldersRequest { limit: 1, ..Default::default() }).await.unwrap();

    // With TLS: the ClientHello is waited for the same way (here a record header that
    // announces 512 bytes and never sends them).
    let dir = tempdir("handshake-tls");
    let [_, cert, key] = crate::privilege::certificates(&dir).await;
    let tls = query_service::Tls {
        cert_pem: std::fs::read(cert).unwrap(),
        key_pem: std::fs::read(key).unwrap(),
        client_ca_pem: None,
    };
    let settings = query_service::Settings { http, tls: Some(tls), ..Default::default() };
    let over_tls = QueryService::start_with(&w.db.url, settings).await.unwrap();
    silent_connections_are_closed(over_tls.addr, &[22, 3, 1, 2, 0]).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_block_waiters_share_one_look_and_are_capped() {
    let w = world(small(282)).await;
    w.ingest_all().await;
    let metrics = crate::free_addr();
    let settings = query_service::Settings {
        metrics_listen: Some(metrics),
        min_block_wait: Duration::from_secs(3),
        min_block_waiters: 40,
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    client.get_top_holders(GetTopHoldersRequest { limit: 1, ..Default::default() }).await.unwrap();
    let leases = |m| async move {
        crate::metric(m, "query_database_leases_total{lane=\"cheap\"}").await.unwrap_or(0.0)
    };
    let before = leases(metrics).await;
    let far = GetTopHoldersRequest { limit: 1, min_block: Some(1 << 40), ..Default::default() };
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let mut c = client.clone();
            let r = far.clone();
            tokio::spawn(async move { c.get_top_holders(r).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The 41st is refused at once, with a retry hint.
    let e = client.get_top_holders(far.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // A cheap lookup is not queued behind them.
    let lookup = GetHoldersRequest {
        addresses: vec![w.history.addresses[0].to_string()],
        ..Default::default()
    };
    client.get_holders(lookup).await.unwrap();
    for waiter in waiters {
        let e = waiter.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(!e.message().contains("database unavailable"), "{}", e.message());
        assert!(e.message().contains("min_block"), "{}", e.message());
    }
    // 40 waiters for 3 s used to lease a connection every 250 ms each: ~480 leases.
    let used = leases(metrics).await - before;
    assert!(used <= 5.0, "{used} cheap leases while 40 requests waited");
}

/// Bytes as they are: the wire's view of a message.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining()).to_vec();
        Ok(Some(bytes))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_short_deadlines_get_their_own_codes() {
    let w = world(small(283)).await;
    w.ingest_all().await;
    let metrics = crate::free_addr();
    let settings = query_service::Settings { metrics_listen: Some(metrics), ..Default::default() };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", qs.addr)).unwrap();
    let mut raw = tonic::client::Grpc::new(channel.connect().await.unwrap());
    let bad: [(&str, Vec<u8>); 3] = [
        // Field 1 (limit, a varint) sent with wire type 2 and a length past the end.
        ("wrong wire type", vec![0x0a, 0x05, 0x01]),
        // Field 2 (token, a string) holding invalid UTF-8.
        ("invalid UTF-8", vec![0x12, 0x02, 0xff, 0xfe]),
        // A varint cut short.
        ("truncated", vec![0x08, 0x80]),
    ];
    for (what, body) in bad {
        raw.ready().await.unwrap();
        let path = "/holders.v1.HolderService/GetTopHolders".parse().unwrap();
        let e = raw.unary(Request::new(body), path, Raw).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().starts_with("request: "), "{what}: {}", e.message());
    }
    wait_metric(
        metrics,
        "query_requests_total{caller=\"-\",code=\"InvalidArgument\",method=\"GetTopHolders\"}",
        |n| n >= 3.0,
    )
    .await;

    // A deadline shorter than the wait the request asks for: DEADLINE_EXCEEDED.
    let mut client = qs.client().await.unwrap();
    let mut r = Request::new(GetTopHoldersRequest {
        limit: 1,
        min_block: Some(1 << 40),
        ..Default::default()
    });
    r.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = client.get_top_holders(r).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        metric(
            metrics,
            "query_requests_total{caller=\"-\",code=\"DeadlineExceeded\",method=\"GetTopHolders\"}"
        )
        .await
        .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_take_every_stream_and_keys_are_read_with_care() {
    let w = world(small(284)).await;
    w.ingest_all().await;
    let dir = tempdir("abuse-keys");
    let keys = dir.join("api-keys");
    std::fs::write(&keys, key_line("alpha", ALPHA_KEY)).unwrap();
    let settings = query_service::Settings {
        max_streams: 50,
        max_streams_per_caller: 3,
        api_keys_file: Some(keys.clone()),
        rate_limit: Some("5/s,burst=5".parse().unwrap()),
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let with = |scheme: &str, key: &str| {
        let mut r = Request::new(StreamTransfersRequest::default());
        r.metadata_mut().insert("authorization", format!("{scheme} {key}").parse().unwrap());
        r
    };
    // Bearer in any case (RFC 7235); the fourth stream of one caller is refused.
    let mut open = Vec::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        open.push(client.stream_transfers(with(scheme, ALPHA_KEY)).await.unwrap());
    }
    let e = client.stream_transfers(with("Bearer", ALPHA_KEY)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = client.stream_transfers(with("bEaReR", ALPHA_KEY)).await.unwrap();

    // An emptied file (an editor mid-write) keeps the last keys.
    std::fs::write(&keys, "").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = {
        let mut r = Request::new(GetTopHoldersRequest { limit: 1, ..Default::default() });
        r.metadata_mut().insert("authorization", format!("Bearer {ALPHA_KEY}").parse().unwrap());
        r
    };
    client.get_top_holders(r).await.expect("the last good keys are kept");

    // Guessing keys costs the guesser's address its rate: after the burst, refusals
    // are RESOURCE_EXHAUSTED, not more guesses.
    let mut codes = Vec::new();
    for i in 0..12 {
        let mut r = Request::new(GetTopHoldersRequest::default());
        r.metadata_mut().insert("authorization", format!("Bearer guess-{i}").parse().unwrap());
        codes.push(client.get_top_holders(r).await.unwrap_err().code());
    }
    assert_eq!(codes[0], Code::Unauthenticated);
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
