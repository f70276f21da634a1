//! The token's row (metadata, checkpoint, finality, the chain's totalSupply()) and the
//! block hashes kept for finding forks. These writes run outside a batch transaction;
//! each is one statement that never moves the checkpoint (see ARCHITECTURE.md).

use alloy_primitives::{Address, B256, U256};
use tokio_postgres::Row;

use super::error::{StoreError, StoreResult, What};
use super::{Store, TokenKey, TokenSet};
use crate::rpc::TokenMetadata;

/// How far below a block the fork search looks: far beyond any chain's finality (blocks
/// below the finalized one never change), and a bound on what it reads.
const RECENT: i64 = 100_000;

/// A token's row: metadata and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its id and chain.
    pub key: TokenKey,
    /// Token address.
    pub address: Address,
    /// First block indexed.
    pub start_block: u64,
    /// Every block in `start_block..=indexed_block` is indexed; `start_block - 1` before
    /// the first commit.
    pub indexed_block: i64,
}

impl TokenRow {
    fn from_row(r: &Row) -> Self {
        Self {
            key: TokenKey { id: r.get("id"), chain_id: r.get("chain_id") },
            address: r.get("address"),
            start_block: r.get::<_, i64>("start_block") as u64,
            indexed_block: r.get("indexed_block"),
        }
    }
}

impl Store {
    /// The row of token `address` on chain `chain_id`, if it was ever indexed.
    pub async fn token(&self, chain_id: u64, address: Address) -> StoreResult<Option<TokenRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, address, chain_id, start_block, indexed_block FROM tokens
                 WHERE chain_id = $1 AND address = $2",
                &[&(chain_id as i64), &address],
            )
            .await
            .what("reading the token row")?;
        Ok(row.as_ref().map(TokenRow::from_row))
    }

    /// The rows of the tokens of `set`.
    pub async fn token_rows(&self, set: &TokenSet) -> StoreResult<Vec<TokenRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, address, chain_id, start_block, indexed_block FROM tokens
                 WHERE id = ANY($1) ORDER BY id",
                &[&set.ids()],
            )
            .await
            .what("reading the token rows")?;
        Ok(rows.iter().map(TokenRow::from_row).collect())
    }

    /// Marks the tokens `ids` as followed (in an ingestor's set) or not (removed from
    /// it: their data is served as of their last block).
    pub async fn set_following(&self, ids: &[i32], following: bool) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE tokens SET following = $2, updated_at = now() WHERE id = ANY($1)",
                &[&ids, &following],
            )
            .await
            .what("marking tokens followed")?;
        Ok(())
    }

    /// The lowest checkpoint of the tokens of `set` (where a run of the whole set
    /// resumes, less one); `None` if one of them has no row.
    pub async fn lowest_checkpoint(&self, set: &TokenSet) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(indexed_block), count(*) FROM tokens WHERE id = ANY($1)",
                &[&set.ids()],
            )
            .await
            .what("reading the checkpoints")?;
        Ok((row.get::<_, i64>(1) == set.len() as i64).then(|| row.get(0)))
    }

    /// Creates the token's row starting at `start_block`, or refreshes its metadata when it
    /// exists, marked as followed; metadata the node could not read (`None`) leaves the stored value. The
    /// start of a row with nothing indexed yet moves to `start_block` (a wrong `--from`
    /// is corrected by running again with the right one); once a batch is committed the
    /// start and checkpoint never change here.
    pub async fn upsert_token(
        &self,
        address: Address,
        chain_id: u64,
        meta: &TokenMetadata,
        start_block: u64,
    ) -> StoreResult<TokenRow> {
        let rows = self.upsert_tokens(chain_id, &[(address, meta.clone(), start_block)]).await?;
        rows.into_iter().next().ok_or_else(|| StoreError::Refused("no token row written".into()))
    }

    /// [`Store::upsert_token`] for many tokens of one chain in one statement (one commit,
    /// not one per token); rows in no particular order.
    pub async fn upsert_tokens(
        &self,
        chain_id: u64,
        tokens: &[(Address, TokenMetadata, u64)],
    ) -> StoreResult<Vec<TokenRow>> {
        let addresses: Vec<Address> = tokens.iter().map(|t| t.0).collect();
        let names: Vec<Option<String>> = tokens.iter().map(|t| t.1.name.clone()).collect();
        let symbols: Vec<Option<String>> = tokens.iter().map(|t| t.1.symbol.clone()).collect();
        let decimals: Vec<Option<i16>> =
            tokens.iter().map(|t| t.1.decimals.map(i16::from)).collect();
        let starts: Vec<i64> = tokens.iter().map(|t| t.2.min(i64::MAX as u64) as i64).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH u AS (SELECT * FROM unnest($1::bytea[], $3::text[], $4::text[], $5::smallint[], $6::bigint[])
                            AS u(a, n, s, d, b))
                 INSERT INTO tokens (address, chain_id, name, symbol, decimals, start_block, indexed_block)
                 SELECT a, $2, coalesce(n, ''), coalesce(s, ''), coalesce(d, 0::smallint), b, b - 1 FROM u
                 ON CONFLICT (chain_id, address) DO UPDATE
                    SET name = coalesce((SELECT u.n FROM u WHERE u.a = excluded.address), tokens.name),
                        symbol = coalesce((SELECT u.s FROM u WHERE u.a = excluded.address), tokens.symbol),
                        decimals = coalesce((SELECT u.d FROM u WHERE u.a = excluded.address), tokens.decimals),
                        following = true,
                        start_block = CASE WHEN tokens.indexed_block < tokens.start_block
                                            AND tokens.transfer_count = 0
                                           THEN excluded.start_block ELSE tokens.start_block END,
                        indexed_block = CASE WHEN tokens.indexed_block < tokens.start_block
                                              AND tokens.transfer_count = 0
                                             THEN excluded.indexed_block ELSE tokens.indexed_block END,
                        updated_at = now()
                 RETURNING id, address, chain_id, start_block, indexed_block",
                &[&addresses, &(chain_id as i64), &names, &symbols, &decimals, &starts],
            )
            .await
            .what("writing the token rows")?;
        Ok(rows.iter().map(TokenRow::from_row).collect())
    }

    /// Records the chain's totalSupply() read at `block` for each token of `read`, and
    /// returns those whose supply derived from transfers (minted minus burned) differs
    /// from it while indexed to that very block: (token id, derived, chain).
    pub async fn record_chain_supplies(
        &self,
        block: u64,
        read: &[(TokenKey, U256)],
    ) -> StoreResult<Vec<(i32, String, String)>> {
        let ids: Vec<i32> = read.iter().map(|(k, _)| k.id).collect();
        let supplies: Vec<U256> = read.iter().map(|(_, s)| *s).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH s AS (SELECT * FROM unnest($1::integer[], $2::numeric[]) AS s(id, supply)),
                 u AS (UPDATE tokens k SET chain_supply = s.supply, chain_supply_block = $3
                       FROM s WHERE k.id = s.id
                       RETURNING k.id, k.total_supply, k.chain_supply, k.indexed_block)
                 SELECT id, total_supply::text, chain_supply::text FROM u
                 WHERE indexed_block = $3 AND total_supply <> chain_supply",
                &[&ids, &supplies, &(block as i64)],
            )
            .await
            .what("recording totalSupply()")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// The supply derived from transfers (minted minus burned) and the chain's totalSupply()
    /// when they were read at the same block: (derived, chain).
    pub async fn supplies(&self, token: TokenKey) -> StoreResult<(String, Option<String>)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT total_supply::text,
                        CASE WHEN chain_supply_block = indexed_block THEN chain_supply::text END
                 FROM tokens WHERE id = $1",
                &[&token.id],
            )
            .await
            .what("reading supplies")?;
        Ok((row.get(0), row.get(1)))
    }

    /// Records the chain's safe and finalized blocks for every token of `set`, never
    /// lowering them, and announces it (streams of final transfers wait for it). Returns
    /// the highest now stored (no reorg may reach below any token's).
    pub async fn record_finality(
        &self,
        set: &TokenSet,
        safe: u64,
        finalized: u64,
    ) -> StoreResult<(u64, u64)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH t AS (
                     UPDATE tokens SET safe_block = greatest(safe_block, $2),
                                       finalized_block = greatest(finalized_block, $3)
                     WHERE id = ANY($1)
                     RETURNING chain_id, address, safe_block, finalized_block, last_seq),
                 n AS (SELECT pg_notify($4, chain_id || ':' || encode(address, 'hex') || ':' || last_seq) FROM t)
                 SELECT coalesce(max(safe_block), $2) AS safe_block,
                        coalesce(max(finalized_block), $3) AS finalized_block,
                        (SELECT count(*) FROM n) AS announced
                 FROM t",
                &[&set.ids(), &(safe as i64), &(finalized as i64), &bootstrap::NOTIFY_CHANNEL],
            )
            .await
            .what("recording the finalized block")?;
        Ok((
            row.get::<_, i64>("safe_block").max(0) as u64,
            row.get::<_, i64>("finalized_block").max(0) as u64,
        ))
    }

    /// The hash stored for `block`, if the store kept one: a block row of a token of `set`
    /// first, else of any token of its chain (blocks with transfers, and each batch's
    /// verified blocks and checkpoint, kept once per batch).
    pub async fn block_hash(&self, set: &TokenSet, block: u64) -> StoreResult<Option<B256>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT hash FROM blocks
                 WHERE token IN (SELECT id FROM tokens WHERE chain_id = $3) AND number = $2
                 ORDER BY token <> ALL($1) LIMIT 1",
                &[&set.ids(), &(block as i64), &set.chain_id()],
            )
            .await
            .what("reading a block hash")?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Block hashes stored at or below `below` (and within [`RECENT`] blocks of it) by the
    /// tokens of `set`'s chain, newest first, at most `limit` rows: where a fork is looked
    /// for. A block may come twice (a row of another ingestor's not yet rolled back): the
    /// fork is the newest that matches.
    pub async fn recent_blocks(
        &self,
        set: &TokenSet,
        below: u64,
        limit: i64,
    ) -> StoreResult<Vec<(u64, B256)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT number, hash FROM blocks
                 WHERE token IN (SELECT id FROM tokens WHERE chain_id = $3)
                   AND number <= $1 AND number > $1 - $4
                 ORDER BY number DESC LIMIT $2",
                &[&(below as i64), &limit, &set.chain_id(), &RECENT],
            )
            .await
            .what("reading stored block hashes")?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1))).collect())
    }
}
