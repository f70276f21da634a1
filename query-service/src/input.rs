//! Turns request fields into checked values. Every refusal names the field and says what
//! to send instead; nothing unchecked reaches SQL.

use alloy_primitives::{Address, U256, hex};

use crate::error::QueryError;

/// Holders in GetTopHolders when `limit` is 0.
pub const DEFAULT_TOP: u32 = 100;
/// Holders per GetHolders page when `page_size` is 0.
pub const DEFAULT_PAGE: u32 = 1000;
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

/// One address field.
pub fn address(field: &str, value: &str) -> Result<Address, QueryError> {
    bootstrap::parse_address(value)
        .map_err(|e| QueryError::invalid(field, format!("'{}' is a {e}", shorten(value))))
}

/// The lookup list: at most [`MAX_ADDRESSES`], each checked, duplicates dropped.
pub fn addresses(values: &[String]) -> Result<Vec<Address>, QueryError> {
    if values.len() > MAX_ADDRESSES {
        return Err(QueryError::invalid(
            "addresses",
            format!("{} addresses; at most {MAX_ADDRESSES} per request", values.len()),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let a = address(&format!("addresses[{i}]"), v)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Where a GetHolders page starts: after this holder in the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The token the pages are of.
    pub token: Address,
    /// Rank of the last holder of the previous page.
    pub rank: u64,
    /// That holder's balance.
    pub balance: U256,
    /// That holder's address.
    pub address: Address,
}

const PAGE_TOKEN_VERSION: u8 = 1;
const PAGE_TOKEN_LEN: usize = 1 + 20 + 8 + 32 + 20;

impl PageToken {
    /// Opaque text for `next_page_token`.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(PAGE_TOKEN_LEN);
        bytes.push(PAGE_TOKEN_VERSION);
        bytes.extend_from_slice(self.token.as_slice());
        bytes.extend_from_slice(&self.rank.to_be_bytes());
        bytes.extend_from_slice(&self.balance.to_be_bytes::<32>());
        bytes.extend_from_slice(self.address.as_slice());
        hex::encode(bytes)
    }

    /// Reads a `page_token` issued for `token`.
    pub fn decode(value: &str, token: Address) -> Result<Self, QueryError> {
        let forged = || {
            QueryError::invalid(
                "page_token",
                "not a token this service issued: pass next_page_token unchanged, or leave it empty for the first page",
            )
        };
        if value.len() != PAGE_TOKEN_LEN * 2 {
            return Err(forged());
        }
        let bytes = hex::decode(value).map_err(|_| forged())?;
        if bytes[0] != PAGE_TOKEN_VERSION {
            return Err(forged());
        }
        let page = Self {
            token: Address::from_slice(&bytes[1..21]),
            rank: u64::from_be_bytes(bytes[21..29].try_into().expect("8 bytes")),
            balance: U256::from_be_slice(&bytes[29..61]),
            address: Address::from_slice(&bytes[61..81]),
        };
        if page.token != token {
            return Err(QueryError::invalid(
                "page_token",
                format!("issued for token {}, not {token}", page.token),
            ));
        }
        if page.balance.is_zero() {
            return Err(forged());
        }
        Ok(page)
    }
}

/// At most 60 characters of a bad value, for error messages.
fn shorten(value: &str) -> String {
    if value.chars().count() <= 60 {
        value.to_string()
    } else {
        format!("{}…", value.chars().take(60).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    const T: Address = address!("0xBAac2B4491727D78D2b78815144570b9f2Fe8899");

    #[test]
    fn page_tokens_round_trip_and_refuse_forgeries() {
        let p = PageToken {
            token: T,
            rank: 1000,
            balance: U256::MAX,
            address: Address::repeat_byte(7),
        };
        assert_eq!(PageToken::decode(&p.encode(), T).unwrap(), p);
        for bad in ["", "zz", "00", &p.encode()[2..], &format!("02{}", &p.encode()[2..])] {
            assert!(
                PageToken::decode(bad, T).unwrap_err().to_string().contains("page_token"),
                "{bad}"
            );
        }
        let other = PageToken::decode(&p.encode(), Address::ZERO).unwrap_err().to_string();
        assert!(other.contains("issued for token"), "{other}");
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
