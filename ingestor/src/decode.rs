//! Turns raw logs into ERC-20 transfers. A log with the Transfer topic but another shape
//! (an ERC-721 Transfer has 4 topics and no data) is rejected, never mis-decoded.

use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::Log;
use alloy_sol_types::SolEvent;

use crate::abi::IERC20;

/// One ERC-20 Transfer, located on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The token contract that emitted it.
    pub token: Address,
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
        token: log.inner.address,
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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn address() -> impl Strategy<Value = Address> {
            any::<[u8; 20]>().prop_map(Address::from)
        }

        fn uint256() -> impl Strategy<Value = U256> {
            prop_oneof![
                Just(U256::ZERO),
                Just(U256::MAX),
                any::<[u8; 32]>().prop_map(U256::from_be_bytes),
                any::<u64>().prop_map(U256::from),
            ]
        }

        proptest! {
            /// Any ERC-20 Transfer decodes to exactly its sender, receiver and value.
            #[test]
            fn every_transfer_round_trips(from in address(), to in address(), value in uint256()) {
                let t = decode(&log(
                    vec![IERC20::Transfer::SIGNATURE_HASH, topic(from), topic(to)],
                    value.to_be_bytes::<32>().to_vec(),
                ))
                .unwrap();
                prop_assert_eq!((t.from, t.to, t.value), (from, to, value));
            }

            /// Any other count of topics or length of data is rejected as a wrong shape.
            #[test]
            fn other_shapes_are_rejected(
                topics in proptest::collection::vec(any::<[u8; 32]>().prop_map(B256::from), 0..6),
                data in proptest::collection::vec(any::<u8>(), 0..130),
            ) {
                prop_assume!(topics.len() != 3 || data.len() != 32);
                let mut with_signature = topics;
                if let Some(first) = with_signature.first_mut() {
                    *first = IERC20::Transfer::SIGNATURE_HASH;
                }
                let (n, len) = (with_signature.len(), data.len());
                prop_assert_eq!(
                    decode(&log(with_signature, data)),
                    Err(Rejected::Shape { topics: n, data_len: len })
                );
            }

            /// An address topic with any of its 12 high bytes set is refused, never cut
            /// down to its low 20 bytes.
            #[test]
            fn dirty_address_topics_are_refused(
                clean in address(),
                high in proptest::collection::vec(any::<u8>(), 12).prop_filter("dirty", |h| h.iter().any(|b| *b != 0)),
                sender in any::<bool>(),
            ) {
                let mut dirty = topic(clean);
                dirty.0[..12].copy_from_slice(&high);
                let topics = if sender {
                    vec![IERC20::Transfer::SIGNATURE_HASH, dirty, topic(B)]
                } else {
                    vec![IERC20::Transfer::SIGNATURE_HASH, topic(A), dirty]
                };
                prop_assert!(matches!(decode(&log(topics, vec![0; 32])), Err(Rejected::Abi(_))));
            }
        }
    }
}
