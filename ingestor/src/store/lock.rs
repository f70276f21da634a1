//! One writer per token: a Postgres advisory lock, held by a connection of its own. A
//! second ingestor of the same token waits here; if the holder's connection ends, the
//! lock is free and [`WriterLock::lost`] tells the holder to stop.

use alloy_primitives::Address;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::error::{StoreResult, What};

/// The single-writer lock of one token, held for as long as this value lives.
#[derive(Debug)]
pub struct WriterLock {
    _client: tokio_postgres::Client,
    lost: CancellationToken,
}

impl WriterLock {
    /// Fires when the lock's connection ends.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

/// Takes the writer lock of `token`, waiting while another ingestor holds it; `None` if
/// `shutdown` comes first.
pub async fn writer_lock(
    database_url: &str,
    chain_id: u64,
    token: Address,
    shutdown: &CancellationToken,
) -> StoreResult<Option<WriterLock>> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .what("connecting for the writer lock")?;
    let lost = CancellationToken::new();
    let fire = lost.clone();
    // Drives the lock's connection; ends with it (the lock is then gone).
    tokio::spawn(async move {
        let _ = connection.await;
        fire.cancel();
    });
    // A key of our own per token (chain and address): 8 bytes of their hash, tagged.
    let mut named = chain_id.to_be_bytes().to_vec();
    named.extend_from_slice(token.as_slice());
    let hash = alloy_primitives::keccak256(&named);
    let key = i64::from_be_bytes(hash[..8].try_into().expect("8 bytes")) ^ 0x4552_4332_3057_5254;
    let mut waiting_logged = false;
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .what("taking the writer lock")?
            .get(0);
        if got {
            return Ok(Some(WriterLock { _client: client, lost }));
        }
        if !waiting_logged {
            tracing::info!(%token, "another ingestor holds this token's writer lock; waiting");
            waiting_logged = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
