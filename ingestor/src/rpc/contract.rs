//! Calls into contracts by `eth_call`: the token's metadata and `totalSupply()` while
//! indexing, and `balanceOf` of many holders for verify, through Multicall3 where the
//! chain has it.

use alloy_json_rpc::RpcError as JsonRpcError;
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use alloy_transport::TransportErrorKind;
use serde_json::json;
use tracing::{debug, warn};

use super::Rpc;
use super::error::{RpcError, classify, classify_payload};
use crate::abi::{IERC20, IMulticall3, MULTICALL3};

/// balanceOf calls per Multicall3 eth_call: ~3k gas each, far below any node's call cap.
const MULTICALL_CHUNK: usize = 500;

/// What the token says about itself. Fields a contract lacks are empty.
#[derive(Debug, Clone, Default)]
pub struct TokenMetadata {
    /// `name()`; `None` when unreadable (the stored value, if any, is kept).
    pub name: Option<String>,
    /// `symbol()`; `None` when unreadable.
    pub symbol: Option<String>,
    /// `decimals()`; `None` when unreadable (a new token then gets 0).
    pub decimals: Option<u8>,
}

/// How a batch of balanceOf calls reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPath {
    /// Multicall3's aggregate3, many calls per eth_call.
    Multicall3,
    /// JSON-RPC batches of single eth_calls.
    Batches,
}

impl CallPath {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Multicall3 => "multicall3",
            Self::Batches => "json-rpc batches",
        }
    }
}

impl Rpc {
    /// `name()`, `symbol()` and `decimals()` at the latest block. A function the contract
    /// lacks (or answers in another shape, like MKR's bytes32 name) is `None`: unread,
    /// never "empty", so that a stored value is not replaced by it.
    pub async fn token_metadata(&self, token: Address) -> Result<TokenMetadata, RpcError> {
        /// The value, or `None` (with a warning) when the contract cannot answer.
        fn optional<T>(
            token: Address,
            what: &str,
            r: Result<T, RpcError>,
        ) -> Result<Option<T>, RpcError> {
            match r {
                Ok(v) => Ok(Some(v)),
                Err(e @ RpcError::Fatal { .. }) => {
                    warn!(%token, error = %e, "{what} unreadable; keeping what is stored");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        let (name, symbol, decimals) = tokio::join!(
            self.call_decoded(token, "latest", IERC20::nameCall {}),
            self.call_decoded(token, "latest", IERC20::symbolCall {}),
            self.call_decoded(token, "latest", IERC20::decimalsCall {}),
        );
        Ok(TokenMetadata {
            name: optional(token, "name()", name)?,
            symbol: optional(token, "symbol()", symbol)?,
            decimals: optional(token, "decimals()", decimals)?,
        })
    }

    /// `totalSupply()` at `block`, retried; `None` when the node cannot answer for that
    /// block (state pruned) or the contract has no such function.
    pub async fn total_supply(&self, token: Address, block: u64) -> Result<Option<U256>, RpcError> {
        match self.call_decoded(token, &format!("{block:#x}"), IERC20::totalSupplyCall {}).await {
            Ok(v) => Ok(Some(v)),
            Err(e @ RpcError::Fatal { .. }) => {
                debug!(%token, block, error = %e, "totalSupply() unavailable at this block");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `balanceOf(holder)` of `token` at `block` for each holder, retried: through
    /// Multicall3 where the chain has it at its canonical address at that block, else (or
    /// if it fails) in JSON-RPC batches sized to the rate limit. Returns the path taken.
    pub async fn balances_at(
        &self,
        token: Address,
        holders: &[Address],
        block: u64,
    ) -> Result<(Vec<U256>, CallPath), RpcError> {
        let tag = format!("{block:#x}");
        if self.has_multicall3(block).await? {
            let via_multicall =
                in_chunks(holders, MULTICALL_CHUNK, |c| self.multicall_chunk(token, c, &tag));
            match via_multicall.await {
                Ok(values) => return Ok((values, CallPath::Multicall3)),
                Err(RpcError::Fatal { message, .. }) => {
                    warn!(error = %message, "Multicall3 failed; falling back to JSON-RPC batches");
                }
                Err(e) => return Err(e),
            }
        }
        let in_batches =
            in_chunks(holders, self.batch_size(), |c| self.batch_chunk(token, c, &tag));
        Ok((in_batches.await?, CallPath::Batches))
    }

    /// Whether Multicall3 has code at its canonical address at `block`.
    pub async fn has_multicall3(&self, block: u64) -> Result<bool, RpcError> {
        Ok(!self.code(MULTICALL3, block).await?.is_empty())
    }

    /// The first block at which `address` has code (its creation block), found by
    /// bisection on `eth_getCode` between genesis and `head`, where it must have code:
    /// about log2(head) calls. An error when the node cannot answer for old state (a
    /// pruned node): the caller names the setting to give instead.
    pub async fn creation_block(&self, address: Address, head: u64) -> Result<u64, RpcError> {
        // Invariant: code at `hi`, none below `lo`.
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.code(address, mid).await?.is_empty() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// The code at `address` at `block` (empty: no contract there), retried.
    pub async fn code(&self, address: Address, block: u64) -> Result<Bytes, RpcError> {
        let tag = format!("{block:#x}");
        self.retrying("eth_getCode", || async {
            let (node, client) = self.node();
            self.timed("eth_getCode", node, 1, client.request("eth_getCode", (address, &tag))).await
        })
        .await
    }

    /// balanceOf of one chunk through Multicall3's aggregate3: one eth_call.
    async fn multicall_chunk(
        &self,
        token: Address,
        chunk: &[Address],
        tag: &str,
    ) -> Result<Vec<U256>, RpcError> {
        let calls = chunk
            .iter()
            .map(|h| IMulticall3::Call3 {
                target: token,
                allowFailure: true,
                callData: IERC20::balanceOfCall { account: *h }.abi_encode().into(),
            })
            .collect();
        let results =
            self.call_decoded(MULTICALL3, tag, IMulticall3::aggregate3Call { calls }).await?;
        if results.len() != chunk.len() {
            return Err(RpcError::fatal(format!(
                "Multicall3 answered {} results for {} calls",
                results.len(),
                chunk.len()
            )));
        }
        chunk
            .iter()
            .zip(results)
            .map(|(holder, r)| {
                r.success
                    .then(|| IERC20::balanceOfCall::abi_decode_returns(&r.returnData).ok())
                    .flatten()
                    .ok_or_else(|| {
                        RpcError::fatal(format!("balanceOf({holder}) failed inside Multicall3"))
                    })
            })
            .collect()
    }

    /// balanceOf of one chunk in one JSON-RPC batch, retried.
    async fn batch_chunk(
        &self,
        token: Address,
        chunk: &[Address],
        tag: &str,
    ) -> Result<Vec<U256>, RpcError> {
        let params: Vec<(serde_json::Value, &str)> = chunk
            .iter()
            .map(|holder| {
                let data = Bytes::from(IERC20::balanceOfCall { account: *holder }.abi_encode());
                (json!({ "to": token, "data": data }), tag)
            })
            .collect();
        self.retrying("eth_call", || async {
            let answers = self.batch::<_, Bytes>("eth_call", &params).await?;
            answers
                .into_iter()
                .map(|answer| {
                    let out = answer.map_err(classify)?;
                    IERC20::balanceOfCall::abi_decode_returns(&out).map_err(|e| {
                        RpcError::fatal(format!("balanceOf returned an undecodable answer: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// `eth_call` of `C` on `token` at `block`, decoded; a revert or an undecodable answer
    /// is `Fatal`.
    async fn call_decoded<C: SolCall>(
        &self,
        token: Address,
        block: &str,
        call: C,
    ) -> Result<C::Return, RpcError> {
        let data = Bytes::from(call.abi_encode());
        let out: Bytes = self
            .retrying("eth_call", || async {
                let tx = json!({ "to": token, "data": data });
                let started = std::time::Instant::now();
                let (node, client) = self.node();
                let call = client.request("eth_call", (tx, block));
                match self.send(1, call).await.unwrap_or_else(|| {
                    Err(TransportErrorKind::custom_str(
                        "eth_call: no answer within the request timeout",
                    ))
                }) {
                    Ok(out) => {
                        self.record("eth_call", started, "ok");
                        Ok(out)
                    }
                    // A revert (or missing state) is the contract's or node's answer, not a fault.
                    Err(JsonRpcError::ErrorResp(p)) if classify_payload(&p).is_none() => {
                        self.record("eth_call", started, "reverted");
                        Err(RpcError::fatal(format!("eth_call {}: {}", C::SIGNATURE, p.message)))
                    }
                    Err(e) => {
                        self.record("eth_call", started, "transient");
                        let e = classify(e);
                        self.fail_over(node, &e);
                        Err(e)
                    }
                }
            })
            .await?;
        C::abi_decode_returns(&out).map_err(|e| {
            RpcError::fatal(format!("{} returned an undecodable answer: {e}", C::SIGNATURE))
        })
    }
}

/// `holders` in chunks of `size`, each read by `read`, the values in order.
async fn in_chunks<'a, F, Fut>(
    holders: &'a [Address],
    size: usize,
    mut read: F,
) -> Result<Vec<U256>, RpcError>
where
    F: FnMut(&'a [Address]) -> Fut,
    Fut: Future<Output = Result<Vec<U256>, RpcError>>,
{
    let mut out = Vec::with_capacity(holders.len());
    for chunk in holders.chunks(size.max(1)) {
        out.extend(read(chunk).await?);
    }
    Ok(out)
}
