//! Talks JSON-RPC to Ethereum nodes: Transfer logs of a block span, block headers in
//! batches, finality tags, and contract calls. Every failure is sorted into what the
//! caller can do about it ([`RpcError`]); calls without a span are retried here.
//!
//! - [`client`]: the nodes, failover, the rate limit, timeouts and metrics of each call;
//! - [`error`]: [`RpcError`] and the sorting of failures; [`refusal`] reads providers'
//!   "range too large" and "slow down" in their own words;
//! - [`chain`]: chain id, head, logs, headers, `safe`/`finalized`;
//! - [`contract`]: metadata, `totalSupply()`, `balanceOf` (Multicall3 or batches).
//!
//! This module knows no SQL.

mod capped;
pub mod chain;
pub mod client;
pub mod contract;
pub mod error;
pub mod refusal;

pub use chain::BlockRef;
pub use client::Rpc;
pub use contract::{CallPath, TokenMetadata};
pub use error::RpcError;
