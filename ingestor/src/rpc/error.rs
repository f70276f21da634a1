//! Why a JSON-RPC call failed, sorted by what the caller can do about it: shrink the span,
//! wait, retry as is, or give up. HTTP statuses, JSON-RPC error objects and transport
//! failures all end up as one [`RpcError`]; the providers' own words for "too large" and
//! "slow down" are read in [`super::refusal`].

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use alloy_json_rpc::{ErrorPayload, RpcError as JsonRpcError};
use alloy_transport::{TransportError, TransportErrorKind};

use super::refusal::{self, Refusal};
use crate::retry::Transient;

/// The lower-level failure behind an [`RpcError`], kept for its source chain.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A failed call, sorted by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The node refused the span (too many blocks or results, or it timed out on it).
    #[error("the node refused the block span: {message}")]
    TooLarge {
        /// A span the node says will work.
        suggested: Option<RangeInclusive<u64>>,
        /// The most blocks one request may span, as the node said.
        max_blocks: Option<u64>,
        /// Refused on our side ([`super::capped`]): the bytes the answer had (at least)
        /// and the most read at once, for narrowing in proportion.
        over_cap: Option<(u64, u64)>,
        /// The node's words.
        message: String,
    },
    /// The node asks us to slow down.
    #[error("rate limited by the node: {message}")]
    RateLimited {
        /// How long the node asked us to wait (HTTP Retry-After).
        retry_after: Option<Duration>,
        /// The node's words.
        message: String,
    },
    /// Worth retrying as is: 5xx, a reset connection, a timeout, a truncated answer.
    #[error("transient RPC failure: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// The transport's error, when there was one.
        #[source]
        cause: Option<Cause>,
    },
    /// Retrying will not help: a bad URL or key, a method the node lacks, a revert.
    #[error("RPC failure: {message}")]
    Fatal {
        /// What happened.
        message: String,
        /// The transport's error, when there was one.
        #[source]
        cause: Option<Cause>,
    },
}

impl RpcError {
    /// A transient failure without a lower-level cause.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), cause: None }
    }

    /// A fatal failure without a lower-level cause.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal { message: message.into(), cause: None }
    }

    /// Its outcome label in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transient { .. } => "transient",
            Self::Fatal { .. } => "fatal",
        }
    }
}

impl Transient for RpcError {
    /// Transient failures and rate limits; a refused span is not: the caller must change
    /// the span, repeating it cannot help.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::RateLimited { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The node is away: its address refuses connections, or a proxy in front of it says
    /// it has no backend (502, 503, 504).
    fn is_outage(&self) -> bool {
        let Self::Transient { message, cause } = self else { return false };
        ["HTTP 502", "HTTP 503", "HTTP 504"].iter().any(|s| message.starts_with(s))
            || cause
                .as_ref()
                .and_then(|c| c.downcast_ref::<reqwest::Error>())
                .is_some_and(reqwest::Error::is_connect)
    }
}

/// Sorts a transport-level failure by what the caller can do about it.
pub fn classify(err: TransportError) -> RpcError {
    match err {
        JsonRpcError::ErrorResp(payload) => classify_payload(&payload).unwrap_or_else(|| {
            let text = payload_text(&payload);
            match payload.code {
                // Method not found: this node will never answer it.
                -32601 => RpcError::fatal(text),
                _ => RpcError::transient(text),
            }
        }),
        JsonRpcError::Transport(kind) => classify_transport(kind),
        JsonRpcError::DeserError { err, text } => RpcError::Transient {
            message: format!("unreadable answer: {}", scrub(&text)),
            cause: Some(Arc::new(err)),
        },
        JsonRpcError::NullResp => RpcError::transient("the node answered null"),
        other => RpcError::Fatal {
            message: "the request could not be made".into(),
            cause: Some(Arc::new(other)),
        },
    }
}

/// A JSON-RPC error object the node answered, when it is a lagging node, a refused span
/// or a rate limit; `None` for anything else (a revert, an unknown method, ...).
pub(super) fn classify_payload<E: std::fmt::Display>(
    payload: &ErrorPayload<E>,
) -> Option<RpcError> {
    let text = payload_text(payload);
    let lower = text.to_ascii_lowercase();
    // A node behind the requested block is lagging, not refusing: retry later.
    if lower.contains("beyond current head")
        || lower.contains("header not found")
        || lower.contains("unknown block")
    {
        return Some(RpcError::transient(text));
    }
    // A node that has pruned the state of old blocks will not have it on a retry.
    if [
        "missing trie node",
        "historical state",
        "state not available",
        "state is not available",
        "blockoutofrangeerror",
        "pruned",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        return Some(RpcError::fatal(text));
    }
    match refusal::classify(&text)? {
        Refusal::RateLimited => Some(RpcError::RateLimited { retry_after: None, message: text }),
        Refusal::TooLarge { suggested, max_blocks } => {
            Some(RpcError::TooLarge { suggested, max_blocks, over_cap: None, message: text })
        }
    }
}

fn payload_text<E: std::fmt::Display>(payload: &ErrorPayload<E>) -> String {
    let text = match &payload.data {
        Some(data) => format!("{} (code {}) {}", payload.message, payload.code, data),
        None => format!("{} (code {})", payload.message, payload.code),
    };
    scrub(&text)
}

/// What a node or the proxy in front of it said, fit for a log line: one line (an HTML
/// error page's markup and breaks collapsed), at most 200 characters, and every URL cut
/// to its scheme and host, since hosted RPC URLs carry the API key in their path or
/// query and error pages like to quote the URL asked for.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(256));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || "\"'<>`)]},;".contains(c))
            .unwrap_or(after.len());
        let url = &after[..end];
        let host_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        // user:password@ in front of the host is a secret too.
        let host = url[..host_end].rsplit('@').next().unwrap_or("");
        out.push_str(host);
        if host_end < url.len() {
            out.push_str("/…");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    // Markup says nothing a person needs here.
    let mut plain = String::with_capacity(out.len());
    let mut in_tag = false;
    for c in out.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let line = bootstrap::one_line(&plain);
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

/// An answer the capped transport would not hold: `bytes` or more, over `cap`.
#[derive(Debug, Clone, Copy)]
pub(super) struct AnswerTooLarge {
    pub bytes: u64,
    pub cap: u64,
}

impl std::fmt::Display for AnswerTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "response too large: {} bytes or more, over the {} read at once",
            self.bytes, self.cap
        )
    }
}

impl std::error::Error for AnswerTooLarge {}

fn classify_transport(kind: TransportErrorKind) -> RpcError {
    let (status, body, retry_after) = match kind {
        TransportErrorKind::HttpError(e) => (e.status, e.body, None),
        TransportErrorKind::HttpErrorWithRetryAfter { error, retry_after } => {
            (error.status, error.body, Some(retry_after))
        }
        TransportErrorKind::Custom(e) if e.is::<AnswerTooLarge>() => {
            let over = e.downcast_ref::<AnswerTooLarge>().expect("checked");
            return RpcError::TooLarge {
                suggested: None,
                max_blocks: None,
                over_cap: Some((over.bytes, over.cap)),
                message: over.to_string(),
            };
        }
        TransportErrorKind::Custom(e) => {
            // reqwest puts the URL in its errors, and hosted RPC URLs carry the API key.
            let cause: Cause = match e.downcast::<reqwest::Error>() {
                Ok(r) => Arc::new(r.without_url()),
                Err(other) => Arc::from(other),
            };
            return RpcError::Transient {
                message: "the request failed".into(),
                cause: Some(cause),
            };
        }
        other => {
            return RpcError::Transient {
                message: "the transport failed".into(),
                cause: Some(Arc::new(other)),
            };
        }
    };
    let message = format!("HTTP {status}: {}", scrub(&body));
    match (status, refusal::classify(&body)) {
        (429, _) | (_, Some(Refusal::RateLimited)) => {
            RpcError::RateLimited { retry_after, message }
        }
        (_, Some(Refusal::TooLarge { suggested, max_blocks })) => {
            RpcError::TooLarge { suggested, max_blocks, over_cap: None, message }
        }
        // QuickNode refuses wide spans with 413.
        (413, None) => {
            RpcError::TooLarge { suggested: None, max_blocks: None, over_cap: None, message }
        }
        (401 | 403 | 404, None) => {
            RpcError::fatal(format!("{message} (check the RPC URL and its API key)"))
        }
        _ => RpcError::transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_transport::HttpError;

    #[test]
    fn http_statuses_sort_by_remedy() {
        let http = |status, body: &str| {
            classify(JsonRpcError::Transport(TransportErrorKind::HttpError(HttpError {
                status,
                body: body.into(),
            })))
        };
        assert!(matches!(http(429, "slow down"), RpcError::RateLimited { .. }));
        assert!(matches!(http(200, "error code: 1015"), RpcError::RateLimited { .. }));
        assert!(matches!(http(413, "Request Entity Too Large"), RpcError::TooLarge { .. }));
        assert!(matches!(http(502, "Bad Gateway"), RpcError::Transient { .. }));
        assert!(matches!(
            http(503, "no backend is currently healthy to serve traffic"),
            RpcError::Transient { .. }
        ));
        assert!(matches!(http(401, "invalid project id"), RpcError::Fatal { .. }));
    }

    #[test]
    fn json_rpc_errors_sort_by_text_not_code() {
        let resp = |code, message: &'static str| {
            classify(JsonRpcError::ErrorResp(ErrorPayload {
                code,
                message: message.into(),
                data: None,
            }))
        };
        assert!(matches!(
            resp(-32005, "query returned more than 10000 results"),
            RpcError::TooLarge { .. }
        ));
        assert!(matches!(
            resp(-32005, "daily request count exceeded, request rate limited"),
            RpcError::RateLimited { .. }
        ));
        assert!(matches!(
            resp(-32602, "block range extends beyond current head block"),
            RpcError::Transient { .. }
        ));
        assert!(matches!(resp(-32601, "Method not found"), RpcError::Fatal { .. }));
        for pruned in [
            "missing trie node 4a3b (path )",
            "historical state not available in path scheme yet",
            "BlockOutOfRangeError: block height is 5 but requested was 1",
        ] {
            assert!(matches!(resp(-32000, pruned), RpcError::Fatal { .. }), "{pruned}");
        }
        assert!(matches!(resp(-32603, "internal error"), RpcError::Transient { .. }));
    }

    #[test]
    fn error_pages_are_one_short_line_without_urls() {
        let page =
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\r\n<h1>Bad Gateway</h1>\n\
                    <p>upstream https://mainnet.infura.io/v3/SECRETKEY123?x=1 failed\n\x1b[31m</p>\
                    <a href=\"https://user:pw@rpc.example/key/SECRET2\">retry</a></body></html>"
                .to_string()
                + &"padding ".repeat(100);
        let e = classify(JsonRpcError::Transport(TransportErrorKind::HttpError(HttpError {
            status: 502,
            body: page,
        })));
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\x1b'), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("pw@"), "{text}");
        assert!(text.contains("https://mainnet.infura.io/…"), "{text}");
        assert!(text.contains("Bad Gateway") && !text.contains("<h1>"), "{text}");
        assert!(text.chars().count() < 260, "{}", text.len());
    }

    #[test]
    fn a_transport_failure_keeps_its_cause() {
        let e = classify(JsonRpcError::DeserError {
            err: serde_json::from_str::<u8>("x").unwrap_err(),
            text: "{\"jsonrpc\":".into(),
        });
        assert!(matches!(e, RpcError::Transient { .. }));
        assert!(std::error::Error::source(&e).is_some(), "the serde error is the source");
    }
}
