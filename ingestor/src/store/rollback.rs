//! Undoing a reorg: everything above the fork block is taken back in one transaction
//! (`roll_back.sql`), and the removals get sequence numbers of their own so that streams
//! can tell their clients.

use alloy_primitives::Address;

use super::error::{StoreError, StoreResult, What};
use super::{Store, TokenKey, lock_token, notify};
use crate::rpc::BlockRef;

const ROLL_BACK: &str = include_str!("roll_back.sql");

impl Store {
    /// Undoes everything above block `fork` in one transaction: its transfers move to
    /// removed_transfers with new sequence numbers (newest first), their balance changes
    /// and supply are reversed, their blocks and rejected logs are dropped, and the
    /// checkpoint moves back to `fork`. Returns how many transfers were removed.
    pub async fn roll_back(&self, token: TokenKey, fork: &BlockRef) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.what("starting the rollback transaction")?;
        let (indexed, last_seq) = lock_token(&*tx, token).await?;
        if fork.number as i64 > indexed {
            return Err(StoreError::Refused(format!(
                "cannot roll back to block {} above the checkpoint {indexed}",
                fork.number
            )));
        }
        let row = tx
            .query_one(
                ROLL_BACK,
                &[
                    &token.id,
                    &Address::ZERO,
                    &(fork.number as i64),
                    &fork.hash,
                    &(fork.timestamp as i64),
                    &last_seq,
                    &token.chain_id,
                ],
            )
            .await
            .what("rolling back")?;
        let removed = row.get::<_, i64>("removed") as u64;
        notify(&*tx, token).await?;
        tx.commit().await.what("committing the rollback")?;
        Ok(removed)
    }
}
