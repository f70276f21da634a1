//! Who may call, and how often: the interceptor in front of HolderService (and, unless
//! told otherwise, reflection). It checks the caller's API key against the keys file
//! ([`keys`]), takes a token from the caller's bucket ([`limit`]) and hands the caller's
//! name to the method in the request's extensions. Health is never behind it: probes
//! carry no key.
//!
//! mTLS is not here: a client without a certificate from `--tls-client-ca` is refused by
//! the TLS handshake before any request exists.

pub mod keys;
pub mod limit;

use std::sync::Arc;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::metrics::Metrics;
pub use keys::{KeyRing, KeysFile};
pub use limit::{Limiter, RateLimit};

/// The name requests are known by when no keys file is set.
pub const ANONYMOUS: &str = "anonymous";

/// Who is calling: the name of the caller's API key (or [`ANONYMOUS`]), for logs,
/// metrics and traces, and the key's SHA-256 (never the key), so that a long call can
/// tell when its key is revoked.
#[derive(Debug, Clone)]
pub struct Caller {
    name: Arc<str>,
    key: Option<[u8; 32]>,
}

impl Caller {
    /// A caller without a key.
    pub fn anonymous() -> Self {
        Self { name: ANONYMOUS.into(), key: None }
    }

    /// The caller of `request`, as the interceptor named it.
    pub fn of<T>(request: &Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or_else(Self::anonymous)
    }

    /// The caller's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of the key the caller presented, if keys are needed.
    pub fn key(&self) -> Option<[u8; 32]> {
        self.key
    }
}

/// The `authorization` value's key: `Bearer <key>`, the scheme in any case (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()).filter(|k| !k.is_empty())
}

/// The checks of HolderService's calls and of reflection's, as `settings` say: the keys
/// file loaded (and re-read every second on `tasks`), the rate limiter made (idle
/// buckets forgotten once a minute), until `stop`.
pub fn from_settings(
    settings: &crate::Settings,
    metrics: &Metrics,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<(Access, Access)> {
    let keys = match &settings.api_keys_file {
        Some(path) => {
            let keys = KeysFile::load(path).map_err(|e| anyhow::anyhow!("--api-keys-file {e}"))?;
            tracing::info!(keys = keys.ring().len(), "calls need an API key");
            tasks.spawn(keys.clone().watch(Duration::from_secs(1), stop.clone()));
            Some(keys)
        }
        None => None,
    };
    let limiter = settings.rate_limit.map(|limit| {
        let limiter = Arc::new(Limiter::new(limit));
        tasks.spawn(forget_idle_buckets(limiter.clone(), stop.clone()));
        limiter
    });
    let service = Access { keys, limiter, metrics: metrics.clone() };
    let reflection = Access {
        keys: if settings.reflection_without_key { None } else { service.keys.clone() },
        ..service.clone()
    };
    Ok((service, reflection))
}

/// Drops the token buckets of callers gone quiet, once a minute.
async fn forget_idle_buckets(limiter: Arc<Limiter>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => limiter.forget_idle(),
        }
    }
}

/// The checks of one service's calls.
#[derive(Debug, Clone)]
pub struct Access {
    /// The keys callers must present; everybody may call when `None`.
    pub keys: Option<KeysFile>,
    /// Per-caller token buckets; no limit when `None`.
    pub limiter: Option<Arc<Limiter>>,
    /// Where refusals are counted.
    pub metrics: Metrics,
}

impl Access {
    /// The caller of `request` if its key is valid (or no key is needed), else
    /// UNAUTHENTICATED. The message does not say which part was wrong.
    fn caller(&self, request: &Request<()>) -> Result<Caller, Status> {
        let Some(keys) = &self.keys else { return Ok(Caller::anonymous()) };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(keys::digest);
        let ring = keys.ring();
        match presented.and_then(|key| Some((ring.name_by_digest(&key)?, key))) {
            Some((name, key)) => Ok(Caller { name: name.into(), key: Some(key) }),
            None => {
                self.metrics.refused.with_label_values(&["unauthenticated", "-"]).inc();
                Err(unauthenticated())
            }
        }
    }
}

/// The refusal of a call without a valid key; it does not say which part was wrong.
pub fn unauthenticated() -> Status {
    Status::unauthenticated(
        "this service needs a valid API key: send the metadata `authorization: Bearer <key>`",
    )
}

impl Interceptor for Access {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.remote_addr().map(|p| p.ip().to_string());
        let caller = match self.caller(&request) {
            Ok(caller) => caller,
            // Guessing keys costs the guesser's address its share too.
            Err(refused) => {
                self.limit(&format!("peer {}", peer.as_deref().unwrap_or("-")), "-")?;
                return Err(refused);
            }
        };
        // Without keys, callers are told apart by address (not port: every connection
        // has a port of its own).
        let bucket = match (&self.keys, peer) {
            (None, Some(peer)) => peer,
            _ => caller.name().to_string(),
        };
        self.limit(&bucket, caller.name())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

impl Access {
    /// Takes a token from `bucket`'s bucket, or RESOURCE_EXHAUSTED with the wait, counted
    /// for `name`.
    fn limit(&self, bucket: &str, name: &str) -> Result<(), Status> {
        {
            let Some(limiter) = &self.limiter else { return Ok(()) };
            if let Err(wait) = limiter.check(bucket) {
                self.metrics.refused.with_label_values(&["rate_limited", name]).inc();
                let wait = wait.max(std::time::Duration::from_millis(1));
                let who = if name == "-" { bucket } else { name };
                return Err(Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("rate limit reached for {who}; retry in {} ms", wait.as_millis()),
                    ErrorDetails::with_retry_info(Some(wait)),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "  bEaReR   k1  ", "Bearer\tk1"] {
            assert_eq!(bearer(value), Some("k1"), "{value:?}");
        }
        for value in ["k1", "Basic k1", "Bearer", "Bearer  ", "Bearerk1"] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }
}
