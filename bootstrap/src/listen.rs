//! Binding the auxiliary ports (metrics, health). On one host, a second ingestor started
//! as a standby finds them taken by the first: it must wait, not die. So a port in use is
//! tried again until it frees; any other bind error is the setting's fault and is final.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr` (the value of `flag`) now: `Ok(None)` when the port is in use (see
/// [`when_free`]), an error naming the flag for any other failure.
pub async fn try_bind(flag: &str, addr: SocketAddr) -> Result<Option<TcpListener>, String> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(format!("binding {flag} {addr}: {e}")),
    }
}

/// `bound` if [`try_bind`] got the port; else tries `addr` every second (logged once)
/// until it frees, or `None` at `shutdown`.
pub async fn when_free(
    bound: Option<TcpListener>,
    flag: &str,
    addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<TcpListener> {
    if bound.is_some() {
        return bound;
    }
    tracing::warn!(
        %addr,
        "{flag} {addr} is in use (another ingestor on this host?); serving it once it is free"
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(listener) = TcpListener::bind(addr).await {
            tracing::info!(%addr, "{flag} is free now; serving");
            return Some(listener);
        }
    }
}
