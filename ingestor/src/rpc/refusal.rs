//! Reads a provider's "no" to `eth_getLogs`: is it a block span or result count too large
//! (and does it say what to ask for instead), a rate limit, or something else?
//!
//! Providers word this differently (see `shared/reference/getlogs-errors.md`); the code is
//! shared between meanings (-32005 is Infura's result cap and its rate limit), so the text
//! decides. Hints can sit in `message` or in `data`, so both are searched.

use std::ops::RangeInclusive;

/// What a refused `eth_getLogs` asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The span or its result is too large. Retry smaller.
    TooLarge {
        /// A span the provider says will work (Infura, Alchemy, thirdweb, zkSync).
        suggested: Option<RangeInclusive<u64>>,
        /// The most blocks one request may span, when the provider names it.
        max_blocks: Option<u64>,
    },
    /// Too many requests: wait, then retry the same span.
    RateLimited,
}

/// Classifies an error text (message and data joined) from an `eth_getLogs` call.
/// `None` means the text is neither a size refusal nor a rate limit.
pub fn classify(text: &str) -> Option<Refusal> {
    let lower = text.to_ascii_lowercase();
    // A rate limit first: "limit exceeded" also appears in size refusals, but these
    // phrases do not.
    const RATE: &[&str] = &[
        "rate limit",
        "too many requests",
        "rate exceeded",
        "credits limited",
        "request limit reached",
        "daily request count",
        "over capacity",
        "exceeded its compute units",
        "error code: 1015",
        "throughput",
    ];
    if RATE.iter().any(|p| lower.contains(p)) {
        return Some(Refusal::RateLimited);
    }
    const SIZE: &[&str] = &[
        "more than",
        "too many",
        "too large",
        "too wide",
        "block range",
        "blocks range",
        "range limit",
        "range too",
        "range is too",
        "exceeds limit",
        "exceed max",
        "exceeds max",
        "exceeds the max",
        "exceeds the range",
        "limited to",
        "max is",
        "max range",
        "maximum block",
        "maximum [from, to]",
        "maximum allowed",
        "maximum of",
        "max results",
        "response size",
        "response too large",
        "narrow your",
        "reduce your",
        "timeout",
        "timed out",
        "canceled due to",
        "at most",
        "requested blocks",
        "this block range should work",
        "ranges over",
        "try with this block range",
    ];
    if !SIZE.iter().any(|p| lower.contains(p)) {
        return None;
    }
    let suggested = suggested_range(&lower);
    // A result cap says nothing about how many blocks are allowed.
    let about_results =
        ["result", "logs matched", "too many logs", "logs per response", "response size"]
            .iter()
            .any(|p| lower.contains(p));
    let max_blocks = if about_results { None } else { last_number(&lower) };
    Some(Refusal::TooLarge { suggested, max_blocks })
}

/// Finds a `[0x.., 0x..]` pair (Infura, Alchemy) or `"from":"0x..","to":"0x.."` (Infura's data).
fn suggested_range(text: &str) -> Option<RangeInclusive<u64>> {
    let bracket = text.find('[').and_then(|open| {
        let close = open + text[open..].find(']')?;
        let mut parts = text[open + 1..close].split(',').map(str::trim);
        let from = parse_hex(parts.next()?)?;
        let to = parse_hex(parts.next()?)?;
        Some(from..=to)
    });
    bracket
        .or_else(|| {
            let from = hex_after(text, "\"from\":")?;
            let to = hex_after(text, "\"to\":")?;
            Some(from..=to)
        })
        .filter(|r| r.start() <= r.end())
}

fn hex_after(text: &str, key: &str) -> Option<u64> {
    let rest = text[text.find(key)? + key.len()..].trim_start().trim_start_matches('"');
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    parse_hex(&rest[..end])
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_matches('"').strip_prefix("0x")?, 16).ok()
}

/// The last decimal number in the text, reading `10,000` as 10000 and `10k` as 10000.
/// Providers put the allowed maximum last ("range 15000 exceeds limit of 10000"); hex
/// numbers and numbers glued to letters (ids, hosts) are skipped.
fn last_number(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < bytes.len() {
        let glued = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !bytes[i].is_ascii_digit() || glued {
            i += 1;
            continue;
        }
        let mut value: u64 = 0;
        let mut j = i;
        while j < bytes.len()
            && (bytes[j].is_ascii_digit()
                || (bytes[j] == b','
                    && j + 3 < bytes.len() + 1
                    && bytes.get(j + 1..j + 4).is_some_and(|d| d.iter().all(u8::is_ascii_digit))))
        {
            if bytes[j].is_ascii_digit() {
                value = value.saturating_mul(10).saturating_add(u64::from(bytes[j] - b'0'));
            }
            j += 1;
        }
        let suffix = bytes.get(j).copied();
        let after_suffix = bytes.get(j + 1).copied();
        let ends_word = |b: Option<u8>| b.is_none_or(|b| !b.is_ascii_alphanumeric());
        match suffix {
            Some(b'k') if ends_word(after_suffix) => {
                found = Some(value.saturating_mul(1000));
                j += 1;
            }
            Some(b'x') if value == 0 && j == i + 1 => {
                // 0x...: skip the hex number.
                j += 1;
                while j < bytes.len() && bytes[j].is_ascii_hexdigit() {
                    j += 1;
                }
            }
            s if ends_word(s) => found = Some(value),
            _ => {}
        }
        i = j;
    }
    found.filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_large(
        suggested: Option<RangeInclusive<u64>>,
        max_blocks: Option<u64>,
    ) -> Option<Refusal> {
        Some(Refusal::TooLarge { suggested, max_blocks })
    }

    #[test]
    fn infura_result_cap_with_range_hint() {
        let text = r#"query returned more than 10000 results. Try with this block range [0x10, 0x1F]. {"from":"0x10","limit":10000,"to":"0x1f"}"#;
        assert_eq!(classify(text), too_large(Some(16..=31), None));
        assert_eq!(classify("query returned more than 10000 results"), too_large(None, None));
    }

    #[test]
    fn infura_hint_only_in_data() {
        let text = r#"some new wording {"from":"0xa","limit":10000,"to":"0x14"}"#;
        // No size phrase: not recognised as a refusal by text alone.
        assert_eq!(classify(text), None);
        let text =
            r#"query returned more than 10000 results {"from":"0xa","limit":10000,"to":"0x14"}"#;
        assert_eq!(classify(text), too_large(Some(10..=20), None));
    }

    #[test]
    fn alchemy_suggestions() {
        let text = "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response. Based on your parameters and the response size limit, this block range should work: [0x5f5e100, 0x5f5e2f3]";
        assert_eq!(classify(text), too_large(Some(0x5f5e100..=0x5f5e2f3), None));
        let text = "Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block range. Based on your parameters, this block range should work: [0x1, 0xa]. Upgrade to PAYG for expanded block range.";
        assert!(
            matches!(classify(text), Some(Refusal::TooLarge { suggested: Some(r), .. }) if r == (1..=10))
        );
    }

    #[test]
    fn block_caps_name_their_maximum() {
        let cases: &[(&str, u64)] = &[
            ("eth_getLogs is limited to a 10,000 range", 10_000),
            ("eth_getLogs and eth_newFilter are limited to a 10,000 blocks range", 10_000),
            ("range 15000 exceeds limit of 10000", 10_000),
            ("exceed maximum block range: 5000", 5000),
            ("exceed maximum block range 100", 100),
            ("query block range exceeds server limit, narrow your filter: 1000", 1000),
            (
                "Block range 20000 exceeds the maximum of 1000 blocks per logs request. Use a narrower fromBlock/toBlock range or increase Receipt.MaxBlockDepth.",
                1000,
            ),
            ("maximum [from, to] blocks distance: 10000", 10_000),
            ("please limit the query to at most 1000 blocks", 1000),
            (
                "Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: 800",
                800,
            ),
            ("eth_getLogs range is too large, max is 10k blocks", 10_000),
            ("range 5000 is bigger than range limit 2000", 2000),
            ("the range 100 - 9000 exceeds the range allowed for your plan (8900 > 500).", 500),
            ("block range greater than 100 max", 100),
            ("query exceeds max block range 100000", 100_000),
            (
                "eth_getLogs is limited to 1024 block range. Please check the parameter requirements at https://docs.blockpi.io/documentations/api-reference",
                1024,
            ),
            ("block range too large (20000), maximum allowed is 2000 blocks", 2000),
            ("You cannot query logs for more than 100000 blocks at once.", 100_000),
            ("ranges over 10000 blocks are not supported on freetier", 10_000),
        ];
        for (text, max) in cases {
            assert_eq!(classify(text), too_large(None, Some(*max)), "{text}");
        }
    }

    #[test]
    fn size_refusals_without_numbers_halve() {
        for text in [
            "block range is too wide",
            "block range too large",
            "Block range limit exceeded.",
            "query timeout exceeded",
            "Query timeout exceeded. Consider reducing your block range.",
            "request timed out",
            "response too large",
            "eth_getLogs request was canceled due to enabled timeout.",
        ] {
            assert!(
                matches!(classify(text), Some(Refusal::TooLarge { suggested: None, .. })),
                "{text}"
            );
        }
        for text in [
            "query exceeds max results 20000",
            "logs matched by query exceeds limit of 10000",
            "query returns too many logs, narrow your filter: 20000",
            "Too many logs requested. Max logs per response is 20000.",
        ] {
            assert_eq!(classify(text), too_large(None, None), "{text}");
        }
    }

    #[test]
    fn rate_limits_are_not_size_refusals() {
        for text in [
            "daily request count exceeded, request rate limited",
            "project ID request rate exceeded",
            "Your app has exceeded its compute units per second capacity.",
            "credits limited to 25/sec",
            "over rate limit",
            "error code: 1015",
            "You reached Public endpoint rate limit, please upgrade to paid plan",
        ] {
            assert_eq!(classify(text), Some(Refusal::RateLimited), "{text}");
        }
    }

    #[test]
    fn other_errors_are_not_refusals() {
        assert_eq!(classify("Method not found"), None);
        assert_eq!(classify("header not found"), None);
        assert_eq!(classify("invalid argument 0: hex string without 0x prefix"), None);
    }
}
