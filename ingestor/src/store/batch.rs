//! What a commit takes and what it tells: a batch of transfers over a block span, and
//! what writing it changed.

use std::ops::RangeInclusive;

use crate::decode::Transfer;
use crate::rpc::BlockRef;

/// Transfers of a contiguous block span, decoded and timestamped, ready to commit.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The blocks this batch covers, whether or not they hold transfers.
    pub span: RangeInclusive<u64>,
    /// The last block of the span: it becomes the checkpoint.
    pub end: BlockRef,
    /// Transfers in the span, every `block_time` filled.
    pub transfers: Vec<Transfer>,
    /// Logs with the Transfer topic but not an ERC-20 Transfer's shape: (token, block,
    /// log index).
    pub rejected: Vec<(alloy_primitives::Address, u64, u64)>,
    /// Headers of the span's blocks when they were checked against each other (near the
    /// head): their hashes are kept so that a later reorg can be traced to its fork.
    pub verified: Vec<BlockRef>,
}

/// What a commit changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transfers newly stored (the rest were stored before).
    pub inserted: u64,
    /// Addresses whose balance row changed.
    pub balances_touched: u64,
}
