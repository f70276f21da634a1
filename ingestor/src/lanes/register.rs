//! Registering a set's tokens: each checked to be a contract, its start resolved and its
//! metadata read (a few at a time), then their rows written in one statement.

use anyhow::Context;
use tracing::info;

use super::{Lanes, Parts};
use crate::config;
use crate::retry::retrying;
use crate::store::TokenRow;
use crate::tokens::Wanted;
use crate::{Misconfigured, creation_block};

/// Tokens registered at once (each a few calls to the node and the database).
const REGISTERING: usize = 16;

/// Token rows written by one statement at most.
const REGISTERED_PER_STATEMENT: usize = 1000;

impl Lanes<'_> {
    /// Registers `wanted` (locked by this ingestor): checks each is a contract, resolves
    /// its start, reads its metadata and writes its row (followed). A token that cannot
    /// be indexed as asked is [`Misconfigured`], named.
    pub(super) async fn register_all(&self, wanted: &[Wanted]) -> anyhow::Result<Vec<TokenRow>> {
        use futures::{StreamExt, TryStreamExt};
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let head = self.parts.rpc.head().await.context("reading the chain head")?;
        self.parts.metrics.head(head);
        // A few tokens at a time: a set of a thousand behind a distant node registers in
        // seconds, not in a thousand round trips one after another; their rows are then
        // written in one statement (one commit, not one per token).
        let read: Vec<(alloy_primitives::Address, crate::rpc::TokenMetadata, u64)> =
            futures::stream::iter(wanted.iter().copied())
                .map(|w| self.register(w, head))
                .buffered(REGISTERING)
                .try_collect()
                .await?;
        let Parts { rpc, store, chain_id, .. } = &self.parts;
        let mut rows = Vec::with_capacity(read.len());
        for chunk in read.chunks(REGISTERED_PER_STATEMENT) {
            rows.extend(
                retrying(&rpc.retry_policy(), "writing the token rows", || {
                    store.upsert_tokens(*chain_id, chunk)
                })
                .await?,
            );
        }
        Ok(rows)
    }

    /// What registers one token (see [`Lanes::register_all`]): its code checked, its start
    /// resolved and its metadata read.
    async fn register(
        &self,
        w: Wanted,
        head: u64,
    ) -> anyhow::Result<(alloy_primitives::Address, crate::rpc::TokenMetadata, u64)> {
        let Parts { config, rpc, store, chain_id, .. } = &self.parts;
        let chain_id = *chain_id;
        let retry = rpc.retry_policy();
        let token = w.address;
        // An address without code is not a token (a typo, an EOA, another chain's
        // contract): refused before anything is written for it. Its metadata is read at
        // the same time (one round trip a token, not two; for an address without code it
        // is read for nothing).
        let (code, existing, meta) = tokio::join!(
            rpc.code(token, head),
            retrying(&retry, "reading the token row", || store.token(chain_id, token)),
            rpc.token_metadata(token)
        );
        let (code, existing) = (code.context("reading the token's code")?, existing?);
        if code.is_empty() {
            return Err(Misconfigured(format!(
                "token {} has no code on chain {chain_id} at block {head}: it is not a contract there; check --token, --tokens-file and --rpc-url",
                token.to_checksum(None)
            ))
            .into());
        }
        let from = match w.start.map(config::From::Block).or(config.from) {
            Some(config::From::Block(b)) => Some(b),
            Some(config::From::Head) => {
                info!(%token, head, "--from head: balances count only transfers from here on");
                Some(head)
            }
            None if existing.is_some() => None,
            // Balances are sums over the whole history: from the creation block.
            None => Some(creation_block(rpc, token, chain_id, head).await?),
        };
        let start = crate::sync::start_block(existing.as_ref(), from)
            .map_err(|e| Misconfigured(format!("token {}: {e:#}", token.to_checksum(None))))?;
        let meta = meta.context("reading the token's metadata")?;
        info!(%token, name = ?meta.name, symbol = ?meta.symbol, decimals = ?meta.decimals, chain_id, head, start, "indexing");
        Ok((token, meta, start))
    }
}
