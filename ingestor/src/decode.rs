//! Turns raw logs into ERC-20 transfers. A log with the Transfer topic but another shape
//! (an ERC-721 Transfer has 4 topics and no data) is rejected, never mis-decoded.

use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::Log;
use alloy_sol_types::SolEvent;

use crate::rpc::IERC20;

/// One ERC-20 Transfer, located on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Block that holds it.
    pub block_number: u64,
    /// Hash of that block.
    pub block_hash: B256,
    /// That block's timestamp (Unix seconds), when the node sent it with the log.
    pub block_time: Option<u64>,
    /// Transaction that emitted it.
    pub tx_hash: B256,
    /// Position of the log in its block.
    pub log_index: u64,
    /// Sender; the zero address for a mint.
    pub from: Address,
    /// Receiver; the zero address for a burn.
    pub to: Address,
    /// Amount in base units.
    pub value: U256,
}

/// Why a log was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not three topics and 32 bytes of data: not an ERC-20 Transfer.
    #[error("wrong shape: {topics} topics, {data_len} data bytes")]
    Shape {
        /// Topics the log had.
        topics: usize,
        /// Bytes of data the log had.
        data_len: usize,
    },
    /// The right shape, but the ABI decoder refused it (e.g. an address topic with high bits set).
    #[error("undecodable: {0}")]
    Abi(String),
    /// A pending or removed log, without a block or position.
    #[error("log without block number, hash, transaction or index")]
    Unplaced,
}

/// Decodes one log from `eth_getLogs` (already filtered by address and topic 0).
pub fn decode(log: &Log) -> Result<Transfer, Rejected> {
    let data = &log.inner.data;
    let topics = data.topics();
    if topics.len() != 3 || topics[0] != IERC20::Transfer::SIGNATURE_HASH || data.data.len() != 32 {
        return Err(Rejected::Shape { topics: topics.len(), data_len: data.data.len() });
    }
    let event = IERC20::Transfer::decode_log_data_validate(data)
        .map_err(|e| Rejected::Abi(e.to_string()))?;
    let (Some(block_number), Some(block_hash), Some(tx_hash), Some(log_index)) =
        (log.block_number, log.block_hash, log.transaction_hash, log.log_index)
    else {
        return Err(Rejected::Unplaced);
    };
    if log.removed {
        return Err(Rejected::Unplaced);
    }
    Ok(Transfer {
        block_number,
        block_hash,
        block_time: log.block_timestamp,
        tx_hash,
        log_index,
        from: event.from,
        to: event.to,
        value: event.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, LogData, address, b256};

    fn log(topics: Vec<B256>, data: Vec<u8>) -> Log {
        Log {
            inner: alloy_primitives::Log {
                address: address!("0xBAac2B4491727D78D2b78815144570b9f2Fe8899"),
                data: LogData::new_unchecked(topics, Bytes::from(data)),
            },
            block_hash: Some(B256::repeat_byte(1)),
            block_number: Some(7),
            block_timestamp: Some(1_700_000_000),
            transaction_hash: Some(B256::repeat_byte(2)),
            transaction_index: Some(0),
            log_index: Some(3),
            removed: false,
        }
    }

    fn topic(a: Address) -> B256 {
        a.into_word()
    }

    const A: Address = address!("0x00000000000000000000000000000000000000aa");
    const B: Address = address!("0x00000000000000000000000000000000000000bb");

    #[test]
    fn decodes_an_erc20_transfer() {
        let value = U256::MAX - U256::from(5);
        let t = decode(&log(
            vec![IERC20::Transfer::SIGNATURE_HASH, topic(A), topic(B)],
            value.to_be_bytes::<32>().to_vec(),
        ))
        .unwrap();
        assert_eq!((t.from, t.to, t.value, t.block_number, t.log_index), (A, B, value, 7, 3));
        assert_eq!(t.block_time, Some(1_700_000_000));
    }

    #[test]
    fn rejects_erc721_shape() {
        let id = b256!("0x0000000000000000000000000000000000000000000000000000000000000001");
        let got =
            decode(&log(vec![IERC20::Transfer::SIGNATURE_HASH, topic(A), topic(B), id], vec![]));
        assert_eq!(got, Err(Rejected::Shape { topics: 4, data_len: 0 }));
    }

    #[test]
    fn rejects_wrong_data_length() {
        let got =
            decode(&log(vec![IERC20::Transfer::SIGNATURE_HASH, topic(A), topic(B)], vec![0; 64]));
        assert_eq!(got, Err(Rejected::Shape { topics: 3, data_len: 64 }));
    }

    #[test]
    fn rejects_dirty_address_topic() {
        let dirty = B256::repeat_byte(0xff);
        let got =
            decode(&log(vec![IERC20::Transfer::SIGNATURE_HASH, dirty, topic(B)], vec![0; 32]));
        assert!(matches!(got, Err(Rejected::Abi(_))), "{got:?}");
    }
}
