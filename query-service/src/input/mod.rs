//! Turns request fields into checked values. Every refusal names the field and says what
//! to send instead; nothing unchecked reaches SQL, and no refusal echoes a control
//! character of the input. The positions the service hands out (page tokens, cursors)
//! are signed: [`sealed`].

use alloy_primitives::{Address, U256};

use crate::error::QueryError;

mod sealed;
pub use sealed::{
    Cursor, MIN_SECRET, PageToken, Seal, Sealer, SetCursor, TokensPage, TransferPage,
};

/// Holders in GetTopHolders when `limit` is 0.
pub const DEFAULT_TOP: u32 = 100;
/// Holders per GetHolders page when `page_size` is 0.
pub const DEFAULT_PAGE: u32 = 1000;
/// Tokens per ListTokens page when `page_size` is 0.
pub const DEFAULT_TOKENS: u32 = 100;
/// The most tokens one ListTokens page may hold.
pub const MAX_TOKENS: u32 = 1000;
/// Transfers per ListTransfers page when `page_size` is 0.
pub const DEFAULT_TRANSFERS: u32 = 100;
/// The most holders one answer may hold.
pub const MAX_HOLDERS: u32 = 10_000;
/// The most addresses one lookup may name.
pub const MAX_ADDRESSES: usize = 1000;

/// `limit` or `page_size`: 0 means `default`, above [`MAX_HOLDERS`] is refused.
pub fn count(field: &str, value: u32, default: u32) -> Result<i64, QueryError> {
    match value {
        0 => Ok(i64::from(default)),
        v if v > MAX_HOLDERS => {
            Err(QueryError::invalid(field, format!("{v} is above the maximum of {MAX_HOLDERS}")))
        }
        v => Ok(i64::from(v)),
    }
}

/// An optional token address: empty means "the only indexed token".
pub fn token(value: &str) -> Result<Option<Address>, QueryError> {
    if value.is_empty() { Ok(None) } else { address("token", value).map(Some) }
}

/// The token a request names by its `token` and `chain_id` fields (0: not given).
pub fn wanted(token: &str, chain_id: u64) -> Result<crate::store::tokens::Wanted, QueryError> {
    let chain_id = match chain_id {
        0 => None,
        c => Some(
            i64::try_from(c)
                .map_err(|_| QueryError::invalid("chain_id", format!("{c} is not a chain id")))?,
        ),
    };
    Ok(crate::store::tokens::Wanted { token: self::token(token)?, chain_id })
}

/// One address field.
pub fn address(field: &str, value: &str) -> Result<Address, QueryError> {
    bootstrap::parse_address(value)
        .map_err(|e| QueryError::invalid(field, format!("'{}' is {e}", shorten(value))))
}

/// The lookup list: at most [`MAX_ADDRESSES`], each checked, duplicates dropped.
pub fn addresses(values: &[String]) -> Result<Vec<Address>, QueryError> {
    address_list("addresses", values)
}

/// StreamTransfers' `tokens`: at most [`MAX_ADDRESSES`], each checked, duplicates
/// dropped.
pub fn tokens(values: &[String]) -> Result<Vec<Address>, QueryError> {
    address_list("tokens", values)
}

/// A list of addresses in `field`: at most [`MAX_ADDRESSES`], each checked, duplicates
/// dropped, in the order given.
fn address_list(field: &str, values: &[String]) -> Result<Vec<Address>, QueryError> {
    if values.len() > MAX_ADDRESSES {
        return Err(QueryError::invalid(
            field,
            format!("{} addresses; at most {MAX_ADDRESSES} per request", values.len()),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let a = address(&format!("{field}[{i}]"), v)?;
        if seen.insert(a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// `min_balance`: empty (or 0) is no filter; otherwise a decimal uint256.
pub fn min_balance(value: &str) -> Result<Option<U256>, QueryError> {
    if value.is_empty() {
        return Ok(None);
    }
    let why = if value.starts_with('-') {
        "is negative; send a balance in base units, 0 or more"
    } else if !value.bytes().all(|b| b.is_ascii_digit()) {
        "is not a decimal number of base units (digits only, e.g. 1000000000000000000)"
    } else {
        match U256::from_str_radix(value, 10) {
            Ok(v) => return Ok((!v.is_zero()).then_some(v)),
            Err(_) => "is above 2^256-1, more than any balance",
        }
    };
    Err(QueryError::invalid("min_balance", format!("'{}' {why}", shorten(value))))
}

/// The moment a holders request asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest indexed block.
    Latest,
    /// The chain's safe block.
    Safe,
    /// The chain's finalized block.
    Finalized,
    /// This block.
    Block(i64),
    /// The last block at or before this Unix time.
    Time(i64),
}

/// `finality`, `at_block` and `at_time`: at most one of them.
pub fn at(
    finality: i32,
    at_block: Option<u64>,
    at_time: Option<&prost_types::Timestamp>,
) -> Result<At, QueryError> {
    let finality = match proto::pb::Finality::try_from(finality) {
        Ok(proto::pb::Finality::Latest) => None,
        Ok(proto::pb::Finality::Safe) => Some(At::Safe),
        Ok(proto::pb::Finality::Finalized) => Some(At::Finalized),
        Err(_) => {
            return Err(QueryError::invalid(
                "finality",
                format!("{finality} is none of LATEST (0), SAFE (1), FINALIZED (2)"),
            ));
        }
    };
    let block = at_block
        .map(|b| {
            i64::try_from(b)
                .map(At::Block)
                .map_err(|_| QueryError::invalid("at_block", format!("{b} is not a block number")))
        })
        .transpose()?;
    let time = at_time
        .map(|t| {
            if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
                Err(QueryError::invalid("at_time", "must be a time after 1970-01-01T00:00:00Z"))
            } else {
                Ok(At::Time(t.seconds))
            }
        })
        .transpose()?;
    match (finality, block, time) {
        (None, None, None) => Ok(At::Latest),
        (Some(a), None, None) | (None, Some(a), None) | (None, None, Some(a)) => Ok(a),
        _ => Err(QueryError::invalid(
            "at_block",
            "set at most one of at_block, at_time and a finality other than LATEST",
        )),
    }
}

/// At most 60 characters of a bad value, for error messages, with control characters
/// (newlines, NUL, terminal escapes) written as escapes: a message never carries them.
pub fn shorten(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(60)
        .flat_map(|c| {
            let escaped: Vec<char> =
                if c.is_control() { c.escape_debug().collect() } else { vec![c] };
            escaped
        })
        .collect();
    if value.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_balance_is_a_decimal_uint256() {
        assert_eq!(min_balance("").unwrap(), None);
        assert_eq!(min_balance("0").unwrap(), None, "0 filters nothing");
        assert_eq!(min_balance("1500").unwrap(), Some(U256::from(1500)));
        let max = U256::MAX.to_string();
        assert_eq!(min_balance(&max).unwrap(), Some(U256::MAX));
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        for (bad, why) in [
            ("-1", "negative"),
            ("1e18", "decimal"),
            ("0x10", "decimal"),
            (" 1", "decimal"),
            (over, "2^256-1"),
        ] {
            let e = min_balance(bad).unwrap_err().to_string();
            assert!(e.contains("min_balance") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn messages_escape_control_characters() {
        let e = address("token", "0x\n\u{1b}[31mred\0").unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(
            e.contains("\\n") && e.contains("\\u{1b}") && e.contains("is not an address"),
            "{e}"
        );
        let long = "x".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 61);
    }

    #[test]
    fn counts_default_and_cap() {
        assert_eq!(count("limit", 0, 100).unwrap(), 100);
        assert_eq!(count("limit", 10_000, 100).unwrap(), 10_000);
        assert!(count("limit", 10_001, 100).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn address_lists_are_checked_and_deduplicated() {
        let a = "0x00000000000000000000000000000000000000aa".to_string();
        assert_eq!(addresses(&[a.clone(), a.clone()]).unwrap().len(), 1);
        let e = addresses(&[a, "0x12".into()]).unwrap_err().to_string();
        assert!(e.contains("addresses[1]"), "{e}");
        assert!(
            addresses(&vec!["0x00".to_string(); 1001])
                .unwrap_err()
                .to_string()
                .contains("at most 1000")
        );
    }
}
