//! The contract surfaces the ingestor speaks to: the ERC-20 functions and the Transfer
//! event it decodes, and Multicall3's `aggregate3`, which batches `balanceOf` for verify.

use alloy_primitives::{Address, B256};
use alloy_sol_types::{SolEvent, sol};

sol! {
    /// The ERC-20 surface the ingestor reads.
    interface IERC20 {
        event Transfer(address indexed from, address indexed to, uint256 value);
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function totalSupply() external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
    }
}

sol! {
    /// Multicall3's batch call (github.com/mds1/multicall): many calls in one eth_call.
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
    }
}

/// Where Multicall3 lives on every chain that has it (deployed by a keyless transaction).
pub const MULTICALL3: Address =
    alloy_primitives::address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// The Transfer event's topic 0.
pub const TRANSFER_TOPIC: B256 = IERC20::Transfer::SIGNATURE_HASH;
