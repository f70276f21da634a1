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
/// metrics and traces. Never the key.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<str>);

impl Caller {
    /// The caller of `request`, as the interceptor named it.
    pub fn of<T>(request: &Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or_else(|| Self(ANONYMOUS.into()))
    }

    /// The caller's name.
    pub fn name(&self) -> &str {
        &self.0
    }
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
        let Some(keys) = &self.keys else { return Ok(Caller(ANONYMOUS.into())) };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let ring = keys.ring();
        match presented.and_then(|key| ring.name_of(key)) {
            Some(name) => Ok(Caller(name.into())),
            None => {
                self.metrics.refused.with_label_values(&["unauthenticated", "-"]).inc();
                Err(Status::unauthenticated(
                    "this service needs a valid API key: send the metadata `authorization: Bearer <key>`",
                ))
            }
        }
    }
}

impl Interceptor for Access {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.caller(&request)?;
        if let Some(limiter) = &self.limiter {
            // Without keys, callers are told apart by address (not port: every connection
            // has a port of its own).
            let bucket = match (&self.keys, request.remote_addr()) {
                (None, Some(peer)) => peer.ip().to_string(),
                _ => caller.name().to_string(),
            };
            if let Err(wait) = limiter.check(&bucket) {
                self.metrics.refused.with_label_values(&["rate_limited", caller.name()]).inc();
                let wait = wait.max(std::time::Duration::from_millis(1));
                return Err(Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "rate limit reached for {}; retry in {} ms",
                        caller.name(),
                        wait.as_millis()
                    ),
                    ErrorDetails::with_retry_info(Some(wait)),
                ));
            }
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
