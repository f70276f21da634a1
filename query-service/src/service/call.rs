//! What a method knows of the call it answers: the caller's name (from the access
//! interceptor), how long the caller will wait (its `grpc-timeout`), and the caller's
//! trace context. [`Call::observe`] runs a method inside its request span, then counts
//! and times it.

use std::time::{Duration, Instant};

use tonic::{Request, Status};
use tracing::{Instrument, field};

use crate::access::Caller;
use crate::metrics::Metrics;

/// One call to the service.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who calls.
    pub caller: Caller,
    /// The statement timeout this call's reads get: the caller's deadline when it is
    /// nearer than the server's own statement timeout. A statement the caller would no
    /// longer wait for is then cancelled by Postgres, not left running.
    pub budget: Option<Duration>,
    /// The caller's W3C trace context (`traceparent`, `tracestate`), if sent.
    pub trace: Vec<(String, String)>,
}

impl Call {
    /// The call `request` makes on a server whose statements stop after
    /// `statement_timeout`.
    pub fn of<T>(request: &Request<T>, statement_timeout: Duration) -> Self {
        let budget = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            // A tenth is kept for the answer's way back, so that the caller hears
            // DEADLINE_EXCEEDED from the server rather than giving up first.
            .map(|d| d.mul_f64(0.9))
            .filter(|d| *d < statement_timeout);
        let trace = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| {
                let v = request.metadata().get(k)?.to_str().ok()?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        Self { caller: Caller::of(request), budget, trace }
    }

    /// Runs `method`'s work in a span of its own (continuing the caller's trace), counting
    /// it by method, outcome code and caller, and timing it.
    pub async fn observe<T>(
        &self,
        metrics: &Metrics,
        method: &str,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let span = tracing::info_span!(
            "request",
            otel.name = format!("holders.v1.HolderService/{method}"),
            rpc.method = method,
            caller = self.caller.name(),
            rpc.grpc.status_code = field::Empty,
            otel.kind = "server",
        );
        bootstrap::telemetry::continue_trace(&span, &self.trace);
        let started = Instant::now();
        let result = work.instrument(span.clone()).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        span.record("rpc.grpc.status_code", code as i32);
        // One line per call at debug level (RUST_LOG=query_service=debug), inside the
        // span, so it names the method and the caller.
        span.in_scope(|| tracing::debug!(code = ?code, ms = started.elapsed().as_secs_f64() * 1e3, "answered"));
        metrics.seconds.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
        metrics
            .requests
            .with_label_values(&[method, &format!("{code:?}"), self.caller.name()])
            .inc();
        result
    }
}

/// A `grpc-timeout` header's value as a duration: up to 8 digits and a unit (H, M, S,
/// m, u, n), as the gRPC over HTTP/2 protocol spells it.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn reads_grpc_timeouts() {
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }
}
