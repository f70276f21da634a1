//! Undoing a reorg: everything above the fork block is taken back in one transaction
//! (`roll_back.sql`), and the removals get sequence numbers of their own so that streams
//! can tell their clients.

use alloy_primitives::Address;

use super::error::{StoreError, StoreResult, What};
use super::{Store, TokenSet, lock_tokens, notify};
use crate::rpc::BlockRef;

const ROLL_BACK: &str = include_str!("roll_back.sql");

impl Store {
    /// Undoes everything above block `fork` of every token of `set` in one transaction:
    /// their transfers move to removed_transfers with new sequence numbers (newest
    /// first), their balance changes and supplies are reversed, their blocks and rejected
    /// logs are dropped, and each checkpoint above the fork moves back to it. Tokens
    /// indexed only up to the fork or below are left as they are. Returns how many
    /// transfers were removed.
    pub async fn roll_back(&self, set: &TokenSet, fork: &BlockRef) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.what("starting the rollback transaction")?;
        let locked = lock_tokens(&*tx, set).await?;
        let mut removed = 0;
        let mut moved = Vec::new();
        for t in locked.iter().filter(|t| t.indexed.max(t.newest) > fork.number as i64) {
            let row = tx
                .query_one(
                    ROLL_BACK,
                    &[
                        &t.key.id,
                        &Address::ZERO,
                        &(fork.number as i64),
                        &fork.hash,
                        &(fork.timestamp as i64),
                        &t.last_seq,
                        &t.key.chain_id,
                    ],
                )
                .await
                .what("rolling back")?;
            removed += row.get::<_, i64>("removed") as u64;
            moved.push(t.key.id);
        }
        if moved.is_empty() {
            return Err(StoreError::Refused(format!(
                "cannot roll back to block {}: no token of the set is indexed above it",
                fork.number
            )));
        }
        notify(&*tx, &moved).await?;
        tx.commit().await.what("committing the rollback")?;
        Ok(removed)
    }
}
