//! Serves a Prometheus registry as text at `GET /metrics` on a plain HTTP port.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Answers `GET /metrics` from `registry` on `listener` until `shutdown`; any other path is
/// 404.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: CancellationToken) {
    // Connections end with this server: the set aborts them when dropped.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let registry = registry.clone();
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&req, &registry)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let mut text = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&registry.gather(), &mut text).is_err() {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    *response.body_mut() = Full::new(Bytes::from(text));
    if let Ok(value) = encoder.format_type().parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
