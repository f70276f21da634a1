//! Turns request fields into checked values. Every refusal names the field and says what
//! to send instead; nothing unchecked reaches SQL.

use alloy_primitives::{Address, U256, hex};

use crate::error::QueryError;

/// Holders in GetTopHolders when `limit` is 0.
pub const DEFAULT_TOP: u32 = 100;
/// Holders per GetHolders page when `page_size` is 0.
pub const DEFAULT_PAGE: u32 = 1000;
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

impl PageToken {
    /// Opaque text for `next_page_token`.
    pub fn encode(&self) -> String {
        let mut rest = Vec::with_capacity(60);
        rest.extend_from_slice(&self.rank.to_be_bytes());
        rest.extend_from_slice(&self.balance.to_be_bytes::<32>());
        rest.extend_from_slice(self.address.as_slice());
        pack(1, self.token, &rest)
    }

    /// Reads a `page_token` issued for `token`.
    pub fn decode(value: &str, token: Address) -> Result<Self, QueryError> {
        let rest = unpack("page_token", value, 1, token, 60)?;
        let page = Self {
            token,
            rank: u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
            balance: U256::from_be_slice(&rest[8..40]),
            address: Address::from_slice(&rest[40..60]),
        };
        if page.balance.is_zero() {
            return Err(forged("page_token"));
        }
        Ok(page)
    }
}

/// A position in a token's stream of transfer events: resume after `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The token of the stream.
    pub token: Address,
    /// The sequence number of the last event received.
    pub seq: i64,
}

impl Cursor {
    /// Opaque text for `TransferEvent.cursor`.
    pub fn encode(&self) -> String {
        pack(2, self.token, &self.seq.to_be_bytes())
    }

    /// Reads a `cursor` issued for `token`.
    pub fn decode(value: &str, token: Address) -> Result<Self, QueryError> {
        let rest = unpack("cursor", value, 2, token, 8)?;
        let seq = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        if seq < 0 {
            return Err(forged("cursor"));
        }
        Ok(Self { token, seq })
    }
}

/// Where a ListTransfers page starts: before this position, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferPage {
    /// The token listed.
    pub token: Address,
    /// Block of the last transfer of the previous page.
    pub block: i64,
    /// Its log index.
    pub log_index: i32,
}

impl TransferPage {
    /// Opaque text for `next_page_token`.
    pub fn encode(&self) -> String {
        let mut rest = self.block.to_be_bytes().to_vec();
        rest.extend_from_slice(&self.log_index.to_be_bytes());
        pack(3, self.token, &rest)
    }

    /// Reads a ListTransfers `page_token` issued for `token`.
    pub fn decode(value: &str, token: Address) -> Result<Self, QueryError> {
        let rest = unpack("page_token", value, 3, token, 12)?;
        let block = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let log_index = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if block < 0 || log_index < 0 {
            return Err(forged("page_token"));
        }
        Ok(Self { token, block, log_index })
    }
}

/// The opaque tokens this service hands out: a kind byte, the token address, the rest;
/// as hex.
fn pack(kind: u8, token: Address, rest: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(21 + rest.len());
    bytes.push(kind);
    bytes.extend_from_slice(token.as_slice());
    bytes.extend_from_slice(rest);
    hex::encode(bytes)
}

/// Reads what [`pack`] wrote: refuses another kind, length, or token.
fn unpack(
    field: &str,
    value: &str,
    kind: u8,
    token: Address,
    rest_len: usize,
) -> Result<Vec<u8>, QueryError> {
    if value.len() != (21 + rest_len) * 2 {
        return Err(forged(field));
    }
    let bytes = hex::decode(value).map_err(|_| forged(field))?;
    if bytes[0] != kind {
        return Err(forged(field));
    }
    let issued_for = Address::from_slice(&bytes[1..21]);
    if issued_for != token {
        return Err(QueryError::invalid(
            field,
            format!("issued for token {issued_for}, not {token}"),
        ));
    }
    Ok(bytes[21..].to_vec())
}

fn forged(field: &str) -> QueryError {
    QueryError::invalid(
        field,
        format!(
            "not a {field} this service issued: pass it back unchanged, or leave it empty to start over"
        ),
    )
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
    fn cursors_and_transfer_pages_round_trip() {
        let c = Cursor { token: T, seq: 42 };
        assert_eq!(Cursor::decode(&c.encode(), T).unwrap(), c);
        let p = TransferPage { token: T, block: 7, log_index: 3 };
        assert_eq!(TransferPage::decode(&p.encode(), T).unwrap(), p);
        // One kind is not another, even at the same length.
        assert!(
            Cursor::decode(
                &PageToken { token: T, rank: 1, balance: U256::from(1), address: T }.encode(),
                T
            )
            .is_err()
        );
        assert!(
            TransferPage::decode(&c.encode(), T).unwrap_err().to_string().contains("page_token")
        );
        assert!(Cursor::decode("xyz", T).unwrap_err().to_string().contains("cursor"));
        let negative = pack(2, T, &(-5i64).to_be_bytes());
        assert!(Cursor::decode(&negative, T).is_err());
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
