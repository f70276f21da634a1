//! What a careless or hostile caller tried, through the wire (issue 25's trial): page
//! tokens and cursors edited byte by byte, made up, or from another store; a cursor
//! ahead of the store; a stream whose API key is revoked while it runs.

use std::time::Duration;

use alloy_primitives::hex;
use futures::StreamExt;
use proto::pb::{GetHoldersRequest, ListTransfersRequest, StreamTransfersRequest};
use rig::pair::QueryService;
use tonic::Code;

use crate::access::{ALPHA_KEY, BETA_KEY, alpha_and_beta, key_line, with_key};
use crate::{send, small, wait_indexed, world};

/// Every edit of a token the service issued: one byte changed at each position.
fn edits(token: &str) -> Vec<String> {
    let bytes = hex::decode(token).unwrap();
    (0..bytes.len())
        .map(|i| {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            hex::encode(b)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_or_foreign_page_tokens_and_cursors_are_refused() {
    let w = world(small(251)).await;
    w.ingest_all().await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let page =
        |page_token: String| GetHoldersRequest { page_size: 2, page_token, ..Default::default() };
    let first = client.get_holders(page(String::new())).await.unwrap().into_inner();
    let next = first.next_page_token.clone();
    assert!(!next.is_empty());
    let second = client.get_holders(page(next.clone())).await.unwrap().into_inner();
    assert_eq!(second.holders[0].rank, 3, "the issued token still works");

    // The trial's edits (the rank's bytes: rank 2^63, or the top holder as rank 2) and
    // every other one-byte edit: INVALID_ARGUMENT naming the field, never a made-up rank.
    for edited in edits(&next) {
        let e = client.get_holders(page(edited.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{edited}: {e:?}");
        assert!(e.message().starts_with("page_token: "), "{}", e.message());
    }
    // A token in the old, unsigned shape (kind, token, rank u64::MAX, balance, address).
    let unsigned = format!(
        "01{}{}{}{}",
        hex::encode(w.history.token),
        "ff".repeat(8),
        "00".repeat(31) + "01",
        "11".repeat(20)
    );
    let e = client.get_holders(page(unsigned)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // ListTransfers' tokens too.
    let transfers = |page_token: String| ListTransfersRequest {
        page_size: 2,
        page_token,
        ..Default::default()
    };
    let listed = client.list_transfers(transfers(String::new())).await.unwrap().into_inner();
    for edited in edits(&listed.next_page_token).into_iter().step_by(7) {
        let e = client.list_transfers(transfers(edited)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("page_token: "), "{}", e.message());
    }

    // A cursor edited, a cursor and a from_block at once, and a cursor of another store
    // that is ahead of this one (same key: a secret shared by two deployments).
    let mut stream = client
        .stream_transfers(StreamTransfersRequest { from_block: Some(0), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let cursor = stream.next().await.unwrap().unwrap().cursor;
    drop(stream);
    for edited in edits(&cursor).into_iter().step_by(5) {
        let e = client
            .stream_transfers(StreamTransfersRequest { cursor: edited, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("cursor: "), "{}", e.message());
    }
    let both = StreamTransfersRequest {
        cursor: cursor.clone(),
        from_block: Some(1),
        ..Default::default()
    };
    let e = client.stream_transfers(both).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("cursor: ") && e.message().contains("from_block"),
        "{}",
        e.message()
    );

    let secret = b"a secret two deployments share, 32+ bytes".to_vec();
    let settings =
        || query_service::Settings { token_secret: Some(secret.clone()), ..Default::default() };
    let here = QueryService::start_with(&w.db.url, settings()).await.unwrap();
    let c = w.db.client().await.unwrap();
    let newest: i64 = c.query_one("SELECT last_seq FROM tokens", &[]).await.unwrap().get(0);
    // Another store holding the same token further along issues a cursor past `newest`.
    let ahead = query_service::input::Cursor {
        chain_id: c.query_one("SELECT chain_id FROM tokens", &[]).await.unwrap().get(0),
        token: w.history.token,
        seq: newest + 1000,
    }
    .encode(&query_service::input::Seal::new(&secret));
    let mut here_client = here.client().await.unwrap();
    let e = here_client
        .stream_transfers(StreamTransfersRequest { cursor: ahead, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains(&format!("is {newest}")),
        "names the newest event: {}",
        e.message()
    );
    // The store's own key is not the secret's: tokens of one are refused by the other.
    let e = here_client.get_holders(page(next)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // And two services on the store's key accept each other's (replicas, restarts).
    let other = QueryService::start(&w.db.url).await.unwrap();
    let mut other_client = other.client().await.unwrap();
    let resumed = other_client
        .get_holders(page(first.next_page_token))
        .await
        .expect("a token of one service works on another over the same store")
        .into_inner();
    assert_eq!(resumed.holders, second.holders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_key_is_revoked() {
    let mut w = world(small(252)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = w.follow(&["--poll-interval", "100ms"], stop.clone());
    wait_indexed(&w.db, w.history.end_block).await;
    let (dir, keys) = alpha_and_beta("revoke");
    let settings = query_service::Settings {
        api_keys_file: Some(keys.clone()),
        health_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let open = |key| with_key(StreamTransfersRequest::default(), Some(key));
    let mut alpha = client.stream_transfers(open(ALPHA_KEY)).await.unwrap().into_inner();
    let mut beta = client.stream_transfers(open(BETA_KEY)).await.unwrap().into_inner();
    send(&mut w.chain, &w.history, 0, 1, 5).await;
    w.chain.mine(1).await.unwrap();
    let within = Duration::from_secs(10);
    let got = tokio::time::timeout(within, alpha.next()).await.unwrap().unwrap();
    assert!(got.is_ok(), "alpha's stream delivers while its key is valid");
    tokio::time::timeout(within, beta.next()).await.unwrap().unwrap().unwrap();

    // alpha's key leaves the file: its stream ends UNAUTHENTICATED, beta's goes on.
    std::fs::write(&keys, key_line("beta", BETA_KEY)).unwrap();
    let ended = tokio::time::timeout(within, alpha.next())
        .await
        .expect("the revoked stream ends within seconds")
        .expect("with a status");
    let e = ended.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{}", e.message());
    send(&mut w.chain, &w.history, 2, 3, 5).await;
    w.chain.mine(1).await.unwrap();
    let later = tokio::time::timeout(within, beta.next()).await.unwrap().unwrap();
    assert!(later.is_ok(), "beta's stream goes on");
    stop.cancel();
    follower.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
