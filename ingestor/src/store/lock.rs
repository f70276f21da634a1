//! One writer per token: a Postgres advisory lock per token (its chain and address), all
//! of an ingestor's held by one connection of its own. An ingestor takes the locks of
//! its set that are free and indexes those tokens; the others it tries again, taking a
//! token over once its holder lets it go or dies (the standby, per token). If the
//! connection ends, every lock is gone and [`WriterLocks::lost`] tells the holder to stop.

use std::collections::HashSet;

use alloy_primitives::Address;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::error::{StoreResult, What};

/// The advisory locks of an ingestor's tokens, held for as long as this value lives.
#[derive(Debug)]
pub struct WriterLocks {
    client: tokio_postgres::Client,
    chain_id: u64,
    lost: CancellationToken,
    held: HashSet<Address>,
}

/// The lock key of a token: 8 bytes of the hash of its chain and address, tagged.
fn key(chain_id: u64, token: &Address) -> i64 {
    let mut named = chain_id.to_be_bytes().to_vec();
    named.extend_from_slice(token.as_slice());
    let hash = alloy_primitives::keccak256(&named);
    i64::from_be_bytes(hash[..8].try_into().expect("8 bytes")) ^ 0x4552_4332_3057_5254
}

impl WriterLocks {
    /// A connection for the locks of tokens of chain `chain_id`; none is taken yet.
    pub async fn connect(database_url: &str, chain_id: u64) -> StoreResult<Self> {
        let (client, connection) = tokio_postgres::connect(database_url, NoTls)
            .await
            .what("connecting for the writer locks")?;
        let lost = CancellationToken::new();
        let fire = lost.clone();
        // Drives the locks' connection; ends with it (the locks are then gone).
        tokio::spawn(async move {
            let _ = connection.await;
            fire.cancel();
        });
        Ok(Self { client, chain_id, lost, held: HashSet::new() })
    }

    /// Fires when the locks' connection ends.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether this ingestor holds `token`'s lock.
    pub fn holds(&self, token: &Address) -> bool {
        self.held.contains(token)
    }

    /// Takes the locks of those of `tokens` that are free (without waiting); returns the
    /// tokens newly taken. Those held already are kept.
    pub async fn take(&mut self, tokens: &[Address]) -> StoreResult<Vec<Address>> {
        let wanted: Vec<Address> =
            tokens.iter().filter(|t| !self.held.contains(*t)).copied().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<i64> = wanted.iter().map(|t| key(self.chain_id, t)).collect();
        let rows = self
            .client
            .query(
                "SELECT k.i, pg_try_advisory_lock(k.key)
                 FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, i) ORDER BY k.i",
                &[&keys],
            )
            .await
            .what("taking writer locks")?;
        let mut taken = Vec::new();
        for r in rows {
            if r.get::<_, bool>(1) {
                let t = wanted[(r.get::<_, i64>(0) - 1) as usize];
                self.held.insert(t);
                taken.push(t);
            }
        }
        Ok(taken)
    }

    /// Lets `tokens` go: another ingestor may take them.
    pub async fn release(&mut self, tokens: &[Address]) -> StoreResult<()> {
        let keys: Vec<i64> =
            tokens.iter().filter(|t| self.held.remove(*t)).map(|t| key(self.chain_id, t)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.client
            .execute("SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k", &[&keys])
            .await
            .what("releasing writer locks")?;
        Ok(())
    }
}
