//! A populated store of the previous schema (V10: transfers, balances, blocks, kept
//! rankings, partitions) upgrades in place to the current one, and every answer is what
//! it was.

use rig::pair::QueryService;

use crate::{all_holders, dump, indexed_past};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_v10_store_upgrades_and_answers_as_before() {
    let w = indexed_past(291, false).await;
    let before_rows = dump(&w.db).await;
    let before = {
        let qs = QueryService::start(&w.db.url).await.unwrap();
        all_holders(&qs, 3).await
    };
    // Back to V10 as a store of the previous release held it.
    let c = w.db.client().await.unwrap();
    c.batch_execute("DROP TABLE token_mac_key; DELETE FROM schema_migrations WHERE version = 11")
        .await
        .unwrap();
    let newest: i32 =
        c.query_one("SELECT max(version) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(newest, 10);
    let rankings: i64 = c.query_one("SELECT count(*) FROM rankings", &[]).await.unwrap().get(0);
    assert!(rankings > 0, "the store keeps rankings");

    let mut admin = rig::db::connect(&w.db.url).await.unwrap();
    let applied = ingestor::store::migrate::run(&mut admin).await.unwrap();
    assert_eq!(applied, 1, "V11 alone");
    let key: Vec<u8> = c.query_one("SELECT key FROM token_mac_key", &[]).await.unwrap().get(0);
    assert_eq!(key.len(), 32);
    assert_eq!(dump(&w.db).await, before_rows, "no row of the store changed");
    let qs = QueryService::start(&w.db.url).await.unwrap();
    assert_eq!(all_holders(&qs, 3).await, before, "every page answers as before");

    // Each store draws its own key.
    c.batch_execute("DROP TABLE token_mac_key; DELETE FROM schema_migrations WHERE version = 11")
        .await
        .unwrap();
    ingestor::store::migrate::run(&mut admin).await.unwrap();
    let again: Vec<u8> = c.query_one("SELECT key FROM token_mac_key", &[]).await.unwrap().get(0);
    assert_ne!(again, key);
}
