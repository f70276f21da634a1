//! The refusals of a span too wide, in the words (and HTTP statuses) that Infura, Alchemy,
//! QuickNode, Geth, Erigon, Nethermind, Ankr and Cloudflare really send
//! (shared/reference/getlogs-errors.md), one after the other.

use hyper::StatusCode;
use serde_json::{Value, json};

/// The `n`th refusal: a provider's status, code and words for a span `from..=to` over the
/// `max` blocks allowed.
pub(super) fn refusal(n: u64, from: u64, to: u64, max: u64) -> (StatusCode, Value) {
    let hint_to = from + max - 1;
    let span = to - from + 1;
    match n % 10 {
        0 => (
            StatusCode::OK,
            json!({"code": -32005,
            "message": format!("query returned more than 10000 results. Try with this block range [{from:#x}, {hint_to:#x}]."),
            "data": {"from": format!("{from:#x}"), "limit": 10000, "to": format!("{hint_to:#x}")}}),
        ),
        1 => (
            StatusCode::BAD_REQUEST,
            json!({"code": -32600,
            "message": format!("You can make eth_getLogs requests with up to a {max} block range. Based on your parameters, this block range should work: [{from:#x}, {hint_to:#x}]")}),
        ),
        2 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"code": -32614,
            "message": format!("eth_getLogs is limited to a {} range", crate::thousands(max))}),
        ),
        3 => (
            StatusCode::OK,
            json!({"code": -32602, "message": format!("exceed maximum block range {max}")}),
        ),
        4 => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("query block range exceeds server limit, narrow your filter: {max}")}),
        ),
        5 => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("Block range {span} exceeds the maximum of {max} blocks per logs request. Use a narrower fromBlock/toBlock range or increase Receipt.MaxBlockDepth.")}),
        ),
        6 => (StatusCode::OK, json!({"code": -32600, "message": "block range is too wide"})),
        7 => (StatusCode::OK, json!({"code": -32005, "message": "query timeout exceeded"})),
        8 => (
            StatusCode::OK,
            json!({"code": -32047,
            "message": format!("Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: {max}")}),
        ),
        _ => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response. Based on your parameters and the response size limit, this block range should work: [{from:#x}, {hint_to:#x}]")}),
        ),
    }
}
