//! The opaque positions this service hands out and takes back: GetHolders page tokens,
//! ListTransfers page tokens and StreamTransfers cursors. Each is a kind byte, the token
//! address, its fields and an HMAC-SHA256 tag (the first 16 bytes) under a key the
//! service holds ([`Seal`]), in hex. A client can keep and return one but not make or
//! edit one: any change fails the tag and is INVALID_ARGUMENT naming the field, before a
//! field is read. The fields are still range-checked after the tag (a key can leak).
//!
//! The key is the store's (migration V11, one per database, so every replica and every
//! restart accepts what any of them issued) unless `--token-secret` gives one.

use alloy_primitives::{Address, U256, hex};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::OnceCell;

use crate::error::QueryError;

/// Bytes of the tag kept: 128 bits, far beyond guessing at any request rate.
const TAG: usize = 16;
/// The shortest `--token-secret` accepted, in bytes.
pub const MIN_SECRET: usize = 32;

/// The key tags are made with.
#[derive(Clone)]
pub struct Seal(Hmac<Sha256>);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

impl Seal {
    /// A seal keyed by `key` (any length; HMAC hashes a long one).
    pub fn new(key: &[u8]) -> Self {
        Self(Hmac::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG] {
        let mut mac = self.0.clone();
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        full[..TAG].try_into().expect("16 of 32 bytes")
    }

    /// Whether `tag` is `bytes`' tag, in constant time.
    fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(bytes);
        mac.verify_truncated_left(tag).is_ok()
    }
}

/// Where the seal comes from: `--token-secret`, or the store's key read once.
#[derive(Debug, Default)]
pub struct Sealer {
    given: Option<Seal>,
    stored: OnceCell<Seal>,
}

impl Sealer {
    /// A sealer with the secret of `--token-secret`, or (None) the store's key.
    pub fn new(secret: Option<&[u8]>) -> Self {
        Self { given: secret.map(Seal::new), stored: OnceCell::new() }
    }

    /// The seal, reading the store's key through `db` the first time it is needed.
    pub async fn get<C: tokio_postgres::GenericClient + Sync>(
        &self,
        db: &C,
    ) -> Result<&Seal, QueryError> {
        if let Some(seal) = &self.given {
            return Ok(seal);
        }
        self.stored
            .get_or_try_init(|| async {
                let row = db.query_opt("SELECT key FROM token_mac_key WHERE id = 1", &[]).await?;
                let key: Vec<u8> = row.map(|r| r.get(0)).ok_or_else(|| {
                    QueryError::NotReady(
                        "the store has no token key yet: start the ingestor once to migrate it"
                            .into(),
                    )
                })?;
                Ok(Seal::new(&key))
            })
            .await
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
    pub fn encode(&self, seal: &Seal) -> String {
        let mut rest = Vec::with_capacity(60);
        rest.extend_from_slice(&self.rank.to_be_bytes());
        rest.extend_from_slice(&self.balance.to_be_bytes::<32>());
        rest.extend_from_slice(self.address.as_slice());
        pack(seal, 1, self.token, &rest)
    }

    /// Reads a `page_token` issued for `token`.
    pub fn decode(value: &str, token: Address, seal: &Seal) -> Result<Self, QueryError> {
        let rest = unpack(seal, "page_token", value, 1, token, 60)?;
        let page = Self {
            token,
            rank: u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
            balance: U256::from_be_slice(&rest[8..40]),
            address: Address::from_slice(&rest[40..60]),
        };
        // A rank is a count of holders: far below 2^63 on any chain.
        if page.balance.is_zero() || page.rank == 0 || page.rank > i64::MAX as u64 {
            return Err(forged("page_token"));
        }
        Ok(page)
    }
}

/// A position in a token's stream of transfer events: resume after `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The chain of the stream's token.
    pub chain_id: i64,
    /// The token of the stream.
    pub token: Address,
    /// The sequence number of the last event received.
    pub seq: i64,
}

impl Cursor {
    /// Opaque text for `TransferEvent.cursor`.
    pub fn encode(&self, seal: &Seal) -> String {
        let mut rest = self.chain_id.to_be_bytes().to_vec();
        rest.extend_from_slice(&self.seq.to_be_bytes());
        pack(seal, 5, self.token, &rest)
    }

    /// Reads a `cursor` issued for `token` on `chain_id`. One issued before the store
    /// knew chains (kind 2, no chain) is taken as of the chain the request resolved:
    /// then an address was one token.
    pub fn decode(
        value: &str,
        chain_id: i64,
        token: Address,
        seal: &Seal,
    ) -> Result<Self, QueryError> {
        let seq = match unpack(seal, "cursor", value, 5, token, 16) {
            Ok(rest) => {
                let issued_on = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
                if issued_on != chain_id {
                    return Err(QueryError::invalid(
                        "cursor",
                        format!("issued for chain {issued_on}, not {chain_id}"),
                    ));
                }
                i64::from_be_bytes(rest[8..16].try_into().expect("8 bytes"))
            }
            Err(e) => match unpack(seal, "cursor", value, 2, token, 8) {
                Ok(rest) => i64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
                Err(_) => return Err(e),
            },
        };
        if seq < 0 {
            return Err(forged("cursor"));
        }
        Ok(Self { chain_id, token, seq })
    }
}

/// A position in a stream of several tokens of one chain: after `seqs[i]` of the i-th
/// token of the stream's list (its addresses in ascending order), which `digest` binds
/// the cursor to. About 16 hex characters per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCursor {
    /// The tokens' chain.
    pub chain_id: i64,
    /// Which list of tokens ([`SetCursor::digest_of`]).
    pub digest: [u8; 8],
    /// The last sequence number received of each token, in the list's order.
    pub seqs: Vec<i64>,
}

impl SetCursor {
    /// What binds a cursor to a stream's tokens: 8 bytes of SHA-256 of the chain and the
    /// addresses, ascending.
    pub fn digest_of(chain_id: i64, sorted: &[Address]) -> [u8; 8] {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(chain_id.to_be_bytes());
        for a in sorted {
            h.update(a.as_slice());
        }
        h.finalize()[..8].try_into().expect("8 of 32 bytes")
    }

    /// Opaque text for `TransferEvent.cursor`.
    pub fn encode(&self, seal: &Seal) -> String {
        let mut rest = Vec::with_capacity(16 + 8 * self.seqs.len());
        rest.extend_from_slice(&self.chain_id.to_be_bytes());
        rest.extend_from_slice(&self.digest);
        for s in &self.seqs {
            rest.extend_from_slice(&s.to_be_bytes());
        }
        pack(seal, 6, Address::ZERO, &rest)
    }

    /// Reads a `cursor` issued for the stream of `sorted` (ascending addresses) on
    /// `chain_id`.
    pub fn decode(
        value: &str,
        chain_id: i64,
        sorted: &[Address],
        seal: &Seal,
    ) -> Result<Self, QueryError> {
        let n = sorted.len();
        let rest = unpack(seal, "cursor", value, 6, Address::ZERO, 16 + 8 * n)
            .map_err(|_| QueryError::invalid("cursor", format!("not a cursor this service issued for a stream of these {n} tokens: pass back the last cursor of the same request unchanged, or leave it empty to start over")))?;
        let issued_on = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let digest: [u8; 8] = rest[8..16].try_into().expect("8 bytes");
        if issued_on != chain_id || digest != Self::digest_of(chain_id, sorted) {
            return Err(QueryError::invalid(
                "cursor",
                "issued for another list of tokens or chain: resume with the same tokens and chain_id",
            ));
        }
        let seqs: Vec<i64> = rest[16..]
            .chunks_exact(8)
            .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if seqs.iter().any(|s| *s < 0) {
            return Err(forged("cursor"));
        }
        Ok(Self { chain_id, digest, seqs })
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
    pub fn encode(&self, seal: &Seal) -> String {
        let mut rest = self.block.to_be_bytes().to_vec();
        rest.extend_from_slice(&self.log_index.to_be_bytes());
        pack(seal, 3, self.token, &rest)
    }

    /// Reads a ListTransfers `page_token` issued for `token`.
    pub fn decode(value: &str, token: Address, seal: &Seal) -> Result<Self, QueryError> {
        let rest = unpack(seal, "page_token", value, 3, token, 12)?;
        let block = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let log_index = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if block < 0 || log_index < 0 {
            return Err(forged("page_token"));
        }
        Ok(Self { token, block, log_index })
    }
}

/// Where a ListTokens page starts: after this token, in (chain id, address) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokensPage {
    /// The chain of the last token of the previous page.
    pub chain_id: i64,
    /// Its address.
    pub address: Address,
}

impl TokensPage {
    /// Opaque text for ListTokens' `next_page_token`.
    pub fn encode(&self, seal: &Seal) -> String {
        let mut rest = self.chain_id.to_be_bytes().to_vec();
        rest.extend_from_slice(self.address.as_slice());
        // Not issued for one token: the token slot is zero.
        pack(seal, 4, Address::ZERO, &rest)
    }

    /// Reads a ListTokens `page_token`.
    pub fn decode(value: &str, seal: &Seal) -> Result<Self, QueryError> {
        let rest = unpack(seal, "page_token", value, 4, Address::ZERO, 28)?;
        let chain_id = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        if chain_id < 0 {
            return Err(forged("page_token"));
        }
        Ok(Self { chain_id, address: Address::from_slice(&rest[8..28]) })
    }
}

/// Kind, token, the rest and the tag of all three, as hex.
fn pack(seal: &Seal, kind: u8, token: Address, rest: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(21 + rest.len() + TAG);
    bytes.push(kind);
    bytes.extend_from_slice(token.as_slice());
    bytes.extend_from_slice(rest);
    let tag = seal.tag(&bytes);
    bytes.extend_from_slice(&tag);
    hex::encode(bytes)
}

/// Reads what [`pack`] wrote: refuses another length, a tag that does not match, another
/// kind, or another token, in that order, so that nothing unchecked is looked at.
fn unpack(
    seal: &Seal,
    field: &str,
    value: &str,
    kind: u8,
    token: Address,
    rest_len: usize,
) -> Result<Vec<u8>, QueryError> {
    if value.len() != (21 + rest_len + TAG) * 2 {
        return Err(forged(field));
    }
    let bytes = hex::decode(value).map_err(|_| forged(field))?;
    let (body, tag) = bytes.split_at(bytes.len() - TAG);
    if !seal.verify(body, tag) || body[0] != kind {
        return Err(forged(field));
    }
    let issued_for = Address::from_slice(&body[1..21]);
    if issued_for != token {
        return Err(QueryError::invalid(
            field,
            format!("issued for token {issued_for}, not {token}"),
        ));
    }
    Ok(body[21..].to_vec())
}

fn forged(field: &str) -> QueryError {
    QueryError::invalid(
        field,
        format!(
            "not a {field} this service issued: pass it back unchanged, or leave it empty to start over"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;
    use proptest::prelude::*;

    const T: Address = address!("0xBAac2B4491727D78D2b78815144570b9f2Fe8899");

    fn seal() -> Seal {
        Seal::new(b"a test key of thirty-two bytes..")
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_forgeries() {
        let s = seal();
        let p = PageToken {
            token: T,
            rank: 1000,
            balance: U256::MAX,
            address: Address::repeat_byte(7),
        };
        assert_eq!(PageToken::decode(&p.encode(&s), T, &s).unwrap(), p);
        let good = p.encode(&s);
        for bad in ["", "zz", "00", &good[2..], &format!("02{}", &good[2..])] {
            let e = PageToken::decode(bad, T, &s).unwrap_err().to_string();
            assert!(e.starts_with("page_token: not a page_token"), "{bad}: {e}");
        }
        let other = PageToken::decode(&good, Address::ZERO, &s).unwrap_err().to_string();
        assert!(other.contains("issued for token"), "{other}");
        // Another key's token is a forgery.
        let e = PageToken::decode(&good, T, &Seal::new(b"another key")).unwrap_err().to_string();
        assert!(e.contains("not a page_token"), "{e}");
    }

    #[test]
    fn one_kind_is_not_another() {
        let s = seal();
        let c = Cursor { chain_id: 8453, token: T, seq: 42 };
        assert_eq!(Cursor::decode(&c.encode(&s), 8453, T, &s).unwrap(), c);
        let e = Cursor::decode(&c.encode(&s), 1, T, &s).unwrap_err().to_string();
        assert!(e.contains("issued for chain 8453, not 1"), "{e}");
        // One issued before chains were in the store's keys still resumes.
        let legacy = pack(&s, 2, T, &42i64.to_be_bytes());
        assert_eq!(Cursor::decode(&legacy, 1, T, &s).unwrap().seq, 42);
        let p = TransferPage { token: T, block: 7, log_index: 3 };
        assert_eq!(TransferPage::decode(&p.encode(&s), T, &s).unwrap(), p);
        let t = TokensPage { chain_id: 8453, address: T };
        assert_eq!(TokensPage::decode(&t.encode(&s), &s).unwrap(), t);
        assert!(TokensPage::decode(&p.encode(&s), &s).is_err());
        assert!(
            TransferPage::decode(&c.encode(&s), T, &s)
                .unwrap_err()
                .to_string()
                .contains("page_token")
        );
        assert!(Cursor::decode("xyz", 1, T, &s).unwrap_err().to_string().contains("cursor"));
        let list = [Address::ZERO, T];
        let set = SetCursor {
            chain_id: 8453,
            digest: SetCursor::digest_of(8453, &list),
            seqs: vec![4, 9],
        };
        assert_eq!(SetCursor::decode(&set.encode(&s), 8453, &list, &s).unwrap(), set);
        for (chain, tokens) in [(1, &list[..]), (8453, &list[1..]), (8453, &[T, T][..])] {
            let e = SetCursor::decode(&set.encode(&s), chain, tokens, &s).unwrap_err().to_string();
            assert!(e.starts_with("cursor: "), "{e}");
        }
        assert!(Cursor::decode(&set.encode(&s), 8453, T, &s).is_err(), "not a one-token cursor");
        let negative = pack(&s, 2, T, &(-5i64).to_be_bytes());
        assert!(Cursor::decode(&negative, 1, T, &s).is_err(), "signed, and still out of range");
    }

    proptest! {
        /// Whatever bytes a client sends, as a page token, a transfer page or a cursor:
        /// an INVALID_ARGUMENT naming the field, never a panic, never a value.
        #[test]
        fn arbitrary_text_is_refused(text in ".{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..120)) {
            let s = seal();
            for value in [text, hex::encode(&raw)] {
                let e = PageToken::decode(&value, T, &s).unwrap_err().to_string();
                prop_assert!(e.starts_with("page_token: "), "{}", e);
                let e = TransferPage::decode(&value, T, &s).unwrap_err().to_string();
                prop_assert!(e.starts_with("page_token: "), "{}", e);
                let e = Cursor::decode(&value, 1, T, &s).unwrap_err().to_string();
                prop_assert!(e.starts_with("cursor: "), "{}", e);
                let e = TokensPage::decode(&value, &s).unwrap_err().to_string();
                prop_assert!(e.starts_with("page_token: "), "{}", e);
                let e = SetCursor::decode(&value, 1, &[T, Address::ZERO], &s).unwrap_err().to_string();
                prop_assert!(e.starts_with("cursor: "), "{}", e);
            }
        }

        /// Any edit of an issued token, one byte anywhere, is refused.
        #[test]
        fn every_edit_is_refused(rank in 1u64..u64::MAX / 2, at in 0usize..97, to in any::<u8>()) {
            let s = seal();
            let good = PageToken { token: T, rank, balance: U256::from(rank), address: T }.encode(&s);
            let mut bytes = hex::decode(&good).unwrap();
            let at = at % bytes.len();
            prop_assume!(bytes[at] != to);
            bytes[at] = to;
            prop_assert!(PageToken::decode(&hex::encode(bytes), T, &s).is_err());
        }
    }
}
