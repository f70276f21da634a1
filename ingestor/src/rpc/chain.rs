//! What the ingestor reads of the chain itself: the chain id and head, the Transfer logs
//! of a block span, block headers in batches, and the `safe`/`finalized` tags.

use std::ops::RangeInclusive;

use alloy_primitives::{Address, B256};
use alloy_rpc_types_eth::{Block, Log};
use serde_json::json;

use super::Rpc;
use super::error::{RpcError, classify};
use crate::abi::TRANSFER_TOPIC;

/// One block's identity and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    /// The parent block's hash.
    pub parent_hash: B256,
}

impl From<Block> for BlockRef {
    fn from(b: Block) -> Self {
        Self {
            number: b.header.number,
            hash: b.header.hash,
            timestamp: b.header.timestamp,
            parent_hash: b.header.parent_hash,
        }
    }
}

impl Rpc {
    /// `eth_chainId`, retried.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        self.number("eth_chainId").await
    }

    /// `eth_blockNumber`, retried.
    pub async fn head(&self) -> Result<u64, RpcError> {
        self.number("eth_blockNumber").await
    }

    /// A method without parameters that answers a number, retried.
    async fn number(&self, method: &'static str) -> Result<u64, RpcError> {
        self.retrying(method, || async {
            let (node, client) = self.node();
            let n: alloy_primitives::U64 =
                self.timed(method, node, 1, client.request_noparams(method)).await?;
            Ok(n.to())
        })
        .await
    }

    /// One attempt of `eth_getLogs` for the Transfer events of `tokens` in `span`. Not retried
    /// here: on refusal the caller changes the span.
    pub async fn transfer_logs(
        &self,
        tokens: &[Address],
        span: RangeInclusive<u64>,
    ) -> Result<Vec<Log>, RpcError> {
        let filter = transfer_filter(tokens, &span);
        // A span of one block cannot be narrowed: it is read whatever its size.
        let (node, client) =
            if span.start() < span.end() { self.capped_node() } else { self.node() };
        self.timed("eth_getLogs", node, 1, client.request("eth_getLogs", (filter,))).await
    }

    /// `eth_getLogs` of the token's Transfer events in `span` on node `node` (its place in
    /// the list) and no other, retried while it fails transiently; for comparing nodes.
    pub async fn transfer_logs_on(
        &self,
        node: usize,
        token: Address,
        span: RangeInclusive<u64>,
    ) -> Result<Vec<Log>, RpcError> {
        let client = self.node_at(node);
        self.retrying("eth_getLogs", || {
            let filter = transfer_filter(&[token], &span);
            self.observed("eth_getLogs", 1, client.request("eth_getLogs", (filter,)))
        })
        .await
    }

    /// Headers of the given blocks, in JSON-RPC batches of up to 100, retried; a block
    /// the node does not have (yet, or any more) is an error.
    pub async fn blocks(&self, numbers: &[u64]) -> Result<Vec<BlockRef>, RpcError> {
        let found = self.blocks_if_known(numbers).await?;
        numbers
            .iter()
            .zip(found)
            .map(|(n, b)| {
                b.ok_or_else(|| RpcError::transient(format!("the node does not know block {n}")))
            })
            .collect()
    }

    /// One block's header, retried.
    pub async fn block(&self, number: u64) -> Result<BlockRef, RpcError> {
        Ok(self.blocks(&[number]).await?.remove(0))
    }

    /// Headers of the given blocks, `None` for a block the node does not have (a chain that
    /// just got shorter), in JSON-RPC batches of up to 100, retried.
    pub async fn blocks_if_known(
        &self,
        numbers: &[u64],
    ) -> Result<Vec<Option<BlockRef>>, RpcError> {
        let mut out = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(self.batch_size()) {
            let params: Vec<(String, bool)> =
                chunk.iter().map(|n| (format!("{n:#x}"), false)).collect();
            let refs = self
                .retrying("eth_getBlockByNumber", || async {
                    let answers =
                        self.batch::<_, Option<Block>>("eth_getBlockByNumber", &params).await?;
                    answers
                        .into_iter()
                        .map(|a| a.map(|b| b.map(BlockRef::from)).map_err(classify))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
            out.extend(refs);
        }
        Ok(out)
    }

    /// The node's `safe` and `finalized` block numbers (eth_getBlockByNumber with those
    /// tags, one batch), retried; `None` when the node does not know the tags (an error
    /// answer or no block: older nodes, chains without finality).
    pub async fn finality_tags(&self) -> Result<Option<(u64, u64)>, RpcError> {
        self.retrying("eth_getBlockByNumber", || async {
            let params = [("safe", false), ("finalized", false)];
            let answers = self.batch::<_, Option<Block>>("eth_getBlockByNumber", &params).await?;
            let mut numbers = Vec::with_capacity(2);
            for answer in answers {
                match answer {
                    Ok(Some(b)) => numbers.push(b.header.number),
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        // An error answer that is not a rate limit: the node does not
                        // know the tag (geth before the Merge: "invalid argument 0").
                        let answered = e.as_error_resp().is_some();
                        match classify(e) {
                            e @ RpcError::RateLimited { .. } => return Err(e),
                            _ if answered => return Ok(None),
                            e => return Err(e),
                        }
                    }
                }
            }
            Ok(Some((numbers[0], numbers[1])))
        })
        .await
    }
}

/// The `eth_getLogs` filter for `token`'s Transfer events in `span`.
/// The filter of Transfer events of `tokens` (an address list: one request for a whole
/// token set) in `span`.
fn transfer_filter(tokens: &[Address], span: &RangeInclusive<u64>) -> serde_json::Value {
    json!({
        "address": tokens,
        "topics": [TRANSFER_TOPIC],
        "fromBlock": format!("{:#x}", span.start()),
        "toBlock": format!("{:#x}", span.end()),
    })
}
