//! The gRPC surface: bad input gets INVALID_ARGUMENT naming the field; health follows the
//! database.

use proto::pb::{
    GetHoldersRequest, GetTopHoldersRequest, ListTransfersRequest, StreamTransfersRequest,
};
use rig::pair::QueryService;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{small, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let w = world(small(3)).await;
    w.ingest_all().await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut c = qs.client().await.unwrap();

    let top = |limit, token: &str| GetTopHoldersRequest {
        limit,
        token: token.into(),
        ..Default::default()
    };
    let cases_top = [
        (top(10_001, ""), "limit"),
        (top(5, "0x1234"), "token"),
        (top(5, "0xBAAc2B4491727D78D2b78815144570b9f2Fe8899"), "checksum"),
        (top(5, "not an address"), "token"),
    ];
    for (req, needle) in cases_top {
        let e = c.get_top_holders(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(e.message().contains(needle), "{req:?}: '{}' lacks '{needle}'", e.message());
    }

    let good = w.history.addresses[0].to_string();
    let page = |f: &dyn Fn(&mut GetHoldersRequest)| {
        let mut r = GetHoldersRequest::default();
        f(&mut r);
        r
    };
    let cases = [
        (page(&|r| r.page_size = 10_001), "page_size"),
        (page(&|r| r.page_token = "garbage".into()), "page_token"),
        (page(&|r| r.page_token = "01".repeat(81)), "page_token"),
        (page(&|r| r.addresses = vec![good.clone(), "0xzz".into()]), "addresses[1]"),
        (
            page(&|r| {
                r.addresses = vec![
                    good.to_uppercase().replace("0X", "0x"),
                    "0xBAAc2B4491727D78D2b78815144570b9f2Fe8899".into(),
                ]
            }),
            "addresses[1]",
        ),
        (page(&|r| r.addresses = vec![good.clone(); 1001]), "addresses"),
        (
            page(&|r| {
                r.addresses = vec![good.clone()];
                r.page_token = "00".into();
            }),
            "page_token",
        ),
    ];
    for (req, needle) in cases {
        let e = c.get_holders(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{needle}: {e:?}");
        assert!(e.message().contains(needle), "'{}' lacks '{needle}'", e.message());
    }

    // A page token of another token is refused; an unknown token is NOT_FOUND.
    let first = c
        .get_holders(GetHoldersRequest { page_size: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let unknown = "0x000000000000000000000000000000000000dEaD";
    let e = c.get_top_holders(top(5, unknown)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains(&w.history.token.to_checksum(None)),
        "names the indexed token: {}",
        e.message()
    );

    // Streams and transfer pages check their fields the same way.
    let forged = StreamTransfersRequest { cursor: "00".repeat(29), ..Default::default() };
    let e = c.stream_transfers(forged).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("cursor"), "{}", e.message());
    let bad = StreamTransfersRequest { addresses: vec!["0x12".into()], ..Default::default() };
    assert!(c.stream_transfers(bad).await.unwrap_err().message().contains("addresses[0]"));
    for (req, needle) in [
        (ListTransfersRequest { page_size: 10_001, ..Default::default() }, "page_size"),
        (ListTransfersRequest { address: "0xnope".into(), ..Default::default() }, "address"),
        (
            ListTransfersRequest { from_block: Some(9), to_block: Some(3), ..Default::default() },
            "from_block",
        ),
        (
            ListTransfersRequest {
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let e = c.list_transfers(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{needle}: {e:?}");
        assert!(e.message().contains(needle), "'{}' lacks '{needle}'", e.message());
    }
}

/// Health is SERVING over a reachable database and NOT_SERVING over an unreachable one,
/// where holder queries answer UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unavailable_follow_the_database() {
    rig::init_test_logging();
    let db = rig::db::TestDb::create().await.unwrap();
    // Migrated but empty: SERVING, and holder queries say nothing is indexed yet.
    let mut client = db.client().await.unwrap();
    ingestor::store::migrate::run(&mut client).await.unwrap();
    let up = QueryService::start(&db.url).await.unwrap();
    let mut health = HealthClient::new(channel(up.addr).await);
    let status = wait_health(&mut health, 1).await;
    assert_eq!(status, 1, "SERVING");
    let e = top_holders_error(&up).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Nothing listens on port 1.
    let down = QueryService::start("postgres://postgres@127.0.0.1:1/postgres").await.unwrap();
    let mut health = HealthClient::new(channel(down.addr).await);
    assert_eq!(wait_health(&mut health, 2).await, 2, "NOT_SERVING");
    let e = top_holders_error(&down).await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("cannot be reached"), "the cause's class: {}", e.message());

    // A database that does not exist, and credentials refused: named as such.
    let admin = rig::db::admin_url();
    let missing = rig::db::url_with_db(&admin, "no_such_database_here");
    let nowhere = QueryService::start(&missing).await.unwrap();
    let e = top_holders_error(&nowhere).await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("does not exist"), "{}", e.message());
    let stranger = rig::db::url_with_user(&db.url, "no_such_role_here");
    let refused = QueryService::start(&stranger).await.unwrap();
    let e = top_holders_error(&refused).await;
    assert!(e.message().contains("credentials"), "{}", e.message());
}

/// The status a GetTopHolders call fails with.
async fn top_holders_error(qs: &QueryService) -> tonic::Status {
    qs.client().await.unwrap().get_top_holders(GetTopHoldersRequest::default()).await.unwrap_err()
}

/// Polls the overall health until it is `want` (1 SERVING, 2 NOT_SERVING) or 10 s pass.
async fn wait_health(health: &mut HealthClient<tonic::transport::Channel>, want: i32) -> i32 {
    let mut last = -1;
    for _ in 0..100 {
        if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await {
            last = r.into_inner().status;
            if last == want {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    last
}

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Strings a hostile or careless client sends where an address, page token or cursor
/// belongs.
fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let valid = "0x[0-9a-f]{40}";
    prop_oneof![
        Just(String::new()),
        "0x[0-9a-fA-F]{0,80}",
        "[0-9a-fA-F]{40}",
        valid.prop_map(|a| a.to_uppercase().replacen("0X", "0x", 1)),
        // Mixed case that is almost never the EIP-55 checksum.
        (valid, any::<u64>()).prop_map(|(a, flips)| {
            a.char_indices()
                .map(
                    |(i, c)| {
                        if i > 1 && flips >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }
                    },
                )
                .collect()
        }),
        "-?[0-9]{1,40}",
        "[A-Za-z0-9+/=_-]{0,120}",
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| b.iter().map(|x| format!("{x:02x}")).collect()),
    ]
}

/// Property: whatever a client sends, every method answers OK, INVALID_ARGUMENT,
/// NOT_FOUND or FAILED_PRECONDITION; never a panic, an internal error or a dropped connection.
#[allow(clippy::print_stdout)] // figures scripts/reliability.sh prints for docs/reliability.md
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_answer() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let w = world(small(4)).await;
    w.ingest_all().await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let client = qs.client().await.unwrap();
    // FAILED_PRECONDITION: SAFE or FINALIZED before any indexed block is (this chain's
    // finality trails its head by 64 blocks, more than its whole history).
    let allowed = [Code::Ok, Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition];
    let handle = tokio::runtime::Handle::current();
    let tried = std::sync::atomic::AtomicU64::new(0);
    let check = |what: &str, result: Result<(), tonic::Status>| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let code = result.err().map_or(Code::Ok, |s| s.code());
        prop_assert!(allowed.contains(&code), "{what}: {code:?}");
        Ok(())
    };
    let requests = (
        hostile(),
        hostile(),
        proptest::collection::vec(hostile(), 0..4),
        prop_oneof![Just(0u32), 1u32..20_000, Just(u32::MAX)],
        proptest::option::of(any::<u64>()),
        (
            prop_oneof![Just(0i32), Just(1), Just(2), any::<i32>()],
            proptest::option::of(any::<i64>()),
            any::<bool>(),
        ),
    );
    let mut runner = TestRunner::new(Config { cases: 400, ..Config::default() });
    tokio::task::block_in_place(|| {
        runner
            .run(&requests, |(a, b, addresses, n, block, (finality, time, at))| {
                let at_time = time.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
                // Half the requests name a moment (a block, a time, a finality, or several).
                let at_block = if at { block } else { None };
                // A filter in decimal half the time, hostile text the other half.
                let min_balance = if at { n.to_string() } else { b.clone() };
                let mut c = client.clone();
                handle.block_on(async {
                    let r = c
                        .get_top_holders(GetTopHoldersRequest {
                            limit: n,
                            token: a.clone(),
                            finality,
                            at_block,
                            at_time,
                            min_balance: min_balance.clone(),
                            // Only numbers past i64 (refused at once): one the store has
                            // not reached would wait --min-block-wait.
                            min_block: block.filter(|b| *b > i64::MAX as u64),
                            // Any chain id: another chain's is NOT_FOUND, past i64 refused.
                            chain_id: block.unwrap_or(0),
                        })
                        .await;
                    check("GetTopHolders", r.map(drop))?;
                    let r = c
                        .get_holders(GetHoldersRequest {
                            page_size: n,
                            page_token: b.clone(),
                            addresses: addresses.clone(),
                            token: a.clone(),
                            finality,
                            at_block,
                            at_time,
                            min_balance: min_balance.clone(),
                            min_block: block.filter(|b| *b > i64::MAX as u64),
                            chain_id: u64::from(n),
                        })
                        .await;
                    check("GetHolders", r.map(drop))?;
                    let r = c
                        .list_transfers(ListTransfersRequest {
                            address: a.clone(),
                            from_block: block,
                            to_block: block.map(|x| x / 2),
                            page_size: n,
                            page_token: b.clone(),
                            ..Default::default()
                        })
                        .await;
                    check("ListTransfers", r.map(drop))?;
                    let r = c
                        .stream_transfers(StreamTransfersRequest {
                            cursor: b.clone(),
                            from_block: block,
                            addresses: addresses.clone(),
                            token: a.clone(),
                            finalized_only: at,
                            chain_id: block.map_or(0, |b| b / 3),
                            tokens: addresses.clone(),
                        })
                        .await;
                    check("StreamTransfers", r.map(drop))
                })
            })
            .map_err(|e| e.to_string())
    })
    .unwrap();

    // Ten thousand addresses in one lookup: refused before any query.
    let many = vec![w.history.addresses[0].to_string(); 10_000];
    let mut c = client.clone();
    let e = c
        .get_holders(GetHoldersRequest { addresses: many, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("addresses"), "{}", e.message());
    println!(
        "figures: hostile requests {} (+1 lookup of 10,000 addresses), panics 0, internal errors 0",
        tried.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// ListTokens pages in (chain id, address) order and filters by chain and by symbol
/// (any case); a page size above 1,000 and an edited page token are INVALID_ARGUMENT.
/// Requests name a token's chain with `chain_id`; answers and transfers say it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tokens_pages_and_filters_and_chain_ids_name_the_chain() {
    use proto::pb::ListTokensRequest;
    let w = crate::world(crate::small(311)).await;
    w.ingest_all().await;
    // The history's second token, in the same store.
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let other = w.history.other_token.to_string();
    let flags = ["--token", other.as_str(), "--from", from.as_str(), "--to", to.as_str()];
    rig::pair::ingest(&w.chain.url, &w.db.url, &flags).await.unwrap();
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let client = qs.client().await.unwrap();
    let list = |r: ListTokensRequest| {
        let mut c = client.clone();
        async move { c.list_tokens(r).await }
    };
    let all = list(ListTokensRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.tokens.len(), 2);
    assert!(all.next_page_token.is_empty());
    assert!(all.tokens.iter().all(|t| t.chain_id == 31337));
    let mut addresses: Vec<String> = all.tokens.iter().map(|t| t.address.to_lowercase()).collect();
    addresses.sort();
    assert_eq!(addresses, all.tokens.iter().map(|t| t.address.to_lowercase()).collect::<Vec<_>>());

    let first = list(ListTokensRequest { page_size: 1, ..Default::default() }).await.unwrap();
    let first = first.into_inner();
    assert_eq!(first.tokens, all.tokens[..1]);
    assert!(!first.next_page_token.is_empty());
    let second = ListTokensRequest {
        page_size: 1,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    let second = list(second).await.unwrap().into_inner();
    assert_eq!(second.tokens, all.tokens[1..]);
    let third = ListTokensRequest {
        page_size: 1,
        page_token: second.next_page_token.clone(),
        ..Default::default()
    };
    let third = list(third).await.unwrap().into_inner();
    assert!(third.tokens.is_empty() && third.next_page_token.is_empty());

    let by_symbol = ListTokensRequest { symbol: "tdog".into(), ..Default::default() };
    let by_symbol = list(by_symbol).await.unwrap().into_inner().tokens;
    assert_eq!(by_symbol.len(), 1);
    assert_eq!(by_symbol[0].symbol, "TDOG");
    let elsewhere = ListTokensRequest { chain_id: 1, ..Default::default() };
    assert!(list(elsewhere).await.unwrap().into_inner().tokens.is_empty());
    let here = ListTokensRequest { chain_id: 31337, ..Default::default() };
    assert_eq!(list(here).await.unwrap().into_inner().tokens.len(), 2);

    // chain_id beside token: the token on that chain, or NOT_FOUND naming where it is;
    // chain_id alone with two tokens there: INVALID_ARGUMENT naming token.
    let mut c = client.clone();
    let tdog = w.history.token.to_string();
    let top = |token: &str, chain_id: u64| GetTopHoldersRequest {
        limit: 2,
        token: token.to_string(),
        chain_id,
        ..Default::default()
    };
    let answer = c.get_top_holders(top(&tdog, 31337)).await.unwrap().into_inner();
    assert_eq!(answer.chain_id, 31337);
    let e = c.get_top_holders(top(&tdog, 8453)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("chain 8453") && e.message().contains("31337"), "{}", e.message());
    let e = c.get_top_holders(top("", 31337)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("token: "), "{}", e.message());
    let e = c.get_top_holders(top(&tdog, u64::MAX)).await.unwrap_err();
    assert!(e.message().starts_with("chain_id: "), "{}", e.message());
    let listed = c
        .list_transfers(proto::pb::ListTransfersRequest {
            token: tdog.clone(),
            chain_id: 31337,
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!listed.transfers.is_empty());
    for t in &listed.transfers {
        assert_eq!((t.token.to_lowercase(), t.chain_id), (tdog.to_lowercase(), 31337));
    }

    let e = list(ListTokensRequest { page_size: 1001, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_size: "), "{}", e.message());
    let mut edited = first.next_page_token.into_bytes();
    edited[50] = if edited[50] == b'0' { b'1' } else { b'0' };
    let edited = String::from_utf8(edited).unwrap();
    let e = list(ListTokensRequest { page_token: edited, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_token: "), "{}", e.message());
}
