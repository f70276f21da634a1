//! The write path on a real Postgres: uint256 values round-trip exactly (2^256-1 included),
//! a repeated commit changes nothing, and a batch that would leave a gap is refused.

use alloy_primitives::{Address, B256, U256};
use ingestor::decode::Transfer;
use ingestor::rpc::{BlockRef, TokenMetadata};
use ingestor::store::{self, Batch, Store};
use rig::db::TestDb;

const TOKEN: Address = Address::repeat_byte(0x70);
const A: Address = Address::repeat_byte(0xa1);
const B: Address = Address::repeat_byte(0xb2);

fn transfer(block: u64, log_index: u64, from: Address, to: Address, value: U256) -> Transfer {
    Transfer {
        token: TOKEN,
        block_number: block,
        block_hash: B256::repeat_byte(block as u8),
        block_time: Some(1_700_000_000 + block),
        tx_hash: B256::repeat_byte(0xee),
        log_index,
        from,
        to,
        value,
    }
}

fn batch(from: u64, to: u64, transfers: Vec<Transfer>) -> Batch {
    let end = BlockRef {
        number: to,
        hash: B256::repeat_byte(to as u8),
        timestamp: 1_700_000_000 + to,
        parent_hash: B256::ZERO,
    };
    Batch { span: from..=to, end, transfers, rejected: vec![], verified: vec![] }
}

async fn balance(db: &tokio_postgres::Client, who: Address) -> U256 {
    db.query_one(
        "SELECT balance FROM balances
         WHERE token = (SELECT id FROM tokens WHERE address = $1) AND address = $2",
        &[&TOKEN, &who],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uint256_round_trips_and_commits_are_idempotent() {
    rig::init_test_logging();
    let db = TestDb::create().await.unwrap();
    let store = Store::new(store::pool(&db.url, 2).unwrap());
    store.migrate().await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0, "migrations apply once");
    let meta =
        TokenMetadata { name: Some("T".into()), symbol: Some("T".into()), decimals: Some(18) };
    let key = store.upsert_token(TOKEN, 1, &meta, 1).await.unwrap().key;
    let set = ingestor::store::TokenSet::one(TOKEN, key);
    let c = db.client().await.unwrap();

    // Mint the largest uint256 there is.
    let first = batch(1, 1, vec![transfer(1, 0, Address::ZERO, A, U256::MAX)]);
    assert_eq!(store.commit(&set, &first).await.unwrap().inserted, 1);
    assert_eq!(balance(&c, A).await, U256::MAX);
    let stored: U256 = c.query_one("SELECT value FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(stored, U256::MAX);
    let text: String =
        c.query_one("SELECT total_supply::text FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(text, U256::MAX.to_string());

    // Move almost all of it, a self-transfer, and a burn past 2^128.
    let burn = (U256::from(1) << 128) + U256::from(1);
    let second = batch(
        2,
        5,
        vec![
            transfer(3, 0, A, B, U256::MAX - U256::from(1)),
            transfer(3, 1, A, A, U256::from(1)),
            transfer(4, 0, B, Address::ZERO, burn),
        ],
    );
    store.commit(&set, &second).await.unwrap();
    let after = (balance(&c, A).await, balance(&c, B).await);
    assert_eq!(after, (U256::from(1), U256::MAX - U256::from(1) - burn));
    let (supply, _) = store.supplies(key).await.unwrap();
    assert_eq!(supply, (U256::MAX - burn).to_string());

    // The same batch again: nothing inserted, nothing moved.
    assert_eq!(store.commit(&set, &second).await.unwrap().inserted, 0);
    assert_eq!((balance(&c, A).await, balance(&c, B).await), after);
    let holders: i64 = c.query_one("SELECT holder_count FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(holders, 2);

    // A gap after the checkpoint (block 5) is refused, and changes nothing.
    let gap = batch(7, 8, vec![transfer(7, 0, Address::ZERO, A, U256::from(5))]);
    let err = store.commit(&set, &gap).await.unwrap_err().to_string();
    assert!(err.contains("6..=6"), "{err}");
    assert_eq!(balance(&c, A).await, U256::from(1));
    let checkpoint: i64 =
        c.query_one("SELECT indexed_block FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(checkpoint, 5);
}

/// Property: any uint256 goes into NUMERIC(78,0) and comes back the same, through the
/// one conversion the store uses (alloy's ToSql/FromSql), and Postgres reads it as the same
/// decimal number. 0, 2^256-1 and powers of two and ten come first, then random values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_uint256_round_trips_through_numeric() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let db = TestDb::create().await.unwrap();
    let c = db.client().await.unwrap();
    let statement = c.prepare("SELECT $1::numeric(78,0), ($1::numeric(78,0))::text").await.unwrap();
    let mut edges = vec![U256::ZERO, U256::from(1), U256::MAX, U256::MAX - U256::from(1)];
    edges.extend((0..256).step_by(7).map(|k| U256::from(1) << k));
    edges.extend((0..78).map(|k| U256::from(10).pow(U256::from(k)) - U256::from(1)));
    let values = prop_oneof![
        proptest::sample::select(edges),
        any::<[u8; 32]>().prop_map(U256::from_be_bytes),
        (any::<[u8; 32]>(), 0usize..256).prop_map(|(b, shift)| U256::from_be_bytes(b) >> shift),
    ];
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config { cases: 1000, ..Config::default() });
    tokio::task::block_in_place(|| {
        runner.run(&values, |v| {
            let row = handle.block_on(c.query_one(&statement, &[&v])).unwrap();
            prop_assert_eq!(row.get::<_, U256>(0), v);
            prop_assert_eq!(row.get::<_, String>(1), v.to_string());
            Ok(())
        })
    })
    .unwrap();
}

/// totalSupply() read for a set: recorded in one statement, and a token named only when
/// it differs from minted minus burned at the token's own checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_supplies_are_recorded_and_only_differences_at_the_checkpoint_named() {
    let db = TestDb::create().await.unwrap();
    let store = Store::new(store::pool(&db.url, 2).unwrap());
    store.migrate().await.unwrap();
    let meta = TokenMetadata { name: None, symbol: None, decimals: Some(18) };
    let key = store.upsert_token(TOKEN, 1, &meta, 1).await.unwrap().key;
    let other = store.upsert_token(Address::repeat_byte(0x71), 1, &meta, 1).await.unwrap().key;
    let set = ingestor::store::TokenSet::one(TOKEN, key);
    store
        .commit(&set, &batch(1, 5, vec![transfer(2, 0, Address::ZERO, A, U256::from(9))]))
        .await
        .unwrap();

    let differing = store
        .record_chain_supplies(5, &[(key, U256::from(9)), (other, U256::from(7))])
        .await
        .unwrap();
    assert!(differing.is_empty(), "the first matches; the other is not indexed to block 5");
    assert_eq!(store.supplies(key).await.unwrap(), ("9".to_string(), Some("9".to_string())));
    let differing = store.record_chain_supplies(5, &[(key, U256::from(1))]).await.unwrap();
    assert_eq!(differing, vec![(key.id, "9".to_string(), "1".to_string())]);
    let differing = store.record_chain_supplies(4, &[(key, U256::from(1))]).await.unwrap();
    assert!(differing.is_empty(), "read at another block than the checkpoint");
    assert_eq!(store.supplies(key).await.unwrap().1, None, "and so not compared");
}

/// Filled partitions get their four indexes either way: two builds at once (a backfill
/// alone), or one after another on one connection (a lane catching up beside the head,
/// which leaves the other core to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filled_partitions_are_indexed_on_one_core_or_two() {
    rig::init_test_logging();
    let db = TestDb::create().await.unwrap();
    let store = Store::new(store::pool(&db.url, 2).unwrap());
    store.migrate().await.unwrap();
    let c = db.client().await.unwrap();
    for (chain, one_core) in [(7i64, true), (8, false)] {
        c.execute("SELECT ensure_transfer_partitions($1, 0, 100, false, NULL)", &[&chain])
            .await
            .unwrap();
        let lacking = crate::upgrade::lacking(&c, &["key", "seq", "from", "to"]).await;
        assert!(!lacking.is_empty(), "a partition a backfill fills starts without indexes");
        store.index_partitions(chain, 100, true, one_core).await.unwrap();
    }
    let lacking = crate::upgrade::lacking(&c, &["key", "seq", "from", "to"]).await;
    assert!(lacking.is_empty(), "partitions without their four indexes: {lacking:?}");
}
