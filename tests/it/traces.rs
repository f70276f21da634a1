//! Traces across services: both binaries export spans over OTLP/gRPC to a collector (here
//! a small receiver of the collector's trace service, run by the test); a call that
//! carries a W3C `traceparent` continues the caller's trace, with the method, code and
//! caller's key name on its span; the ingestor sends a span per batch and per node call.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use proto::pb::GetTopHoldersRequest;
use tokio::process::Command;
use tonic::{Request, Response, Status};

use crate::{small, world};

/// Every span received, with its service's name.
#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A span's attribute as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

impl Receiver {
    /// Serves on a free port; its endpoint URL.
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (receiver, endpoint)
    }

    /// Waits up to 20 s for a span of `service` that `matches`.
    async fn wait_for(&self, service: &str, matches: impl Fn(&Span) -> bool) -> Span {
        let started = Instant::now();
        loop {
            if let Some((_, s)) =
                self.spans.lock().unwrap().iter().find(|(svc, s)| svc == service && matches(s))
            {
                return s.clone();
            }
            let names: Vec<_> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .map(|(svc, s)| format!("{svc}:{}", s.name))
                .collect();
            assert!(started.elapsed() < Duration::from_secs(20), "no such span; got {names:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_continue_the_callers_trace() {
    let w = world(small(91)).await;
    let (receiver, endpoint) = Receiver::start().await;

    // The ingestor: a span per batch and per node call.
    let bin = rig::pair::ingestor_binary().unwrap();
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let status = Command::new(&bin)
        .args(["--database-url", &w.db.url, "--rpc-url", &w.chain.url])
        .args(["--token", &w.history.token.to_string(), "--from", &from, "--to", &to])
        .args(rig::pair::LOCAL_PORTS)
        .args(["--otlp-endpoint", &endpoint])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let batch = receiver.wait_for("ingestor", |s| s.name == "batch").await;
    assert!(attribute(&batch, "from").is_some() && attribute(&batch, "to").is_some(), "{batch:?}");
    let call = receiver
        .wait_for("ingestor", |s| {
            s.name == "rpc" && attribute(s, "rpc.method").as_deref() == Some("eth_getLogs")
        })
        .await;
    assert_eq!(attribute(&call, "outcome").as_deref(), Some("ok"), "{call:?}");

    // The query-service: the caller's trace goes on, with method, code and key name.
    let dir = std::env::temp_dir().join(format!("holders-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("api-keys");
    let key = "trace-KEY-77aa01";
    let digest = alloy_primitives::hex::encode(query_service::access::keys::digest(key));
    std::fs::write(&keys, format!("tracer {digest}\n")).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _qs = Command::new(bin.with_file_name("query-service"))
        .args(["--database-url", &w.db.url, "--listen", &listen.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0", "--otlp-endpoint", &endpoint])
        .arg("--api-keys-file")
        .arg(&keys)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client = rig::pair::wait_for_client(&format!("http://{listen}")).await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut r = Request::new(GetTopHoldersRequest { limit: 3, ..Default::default() });
    let m = r.metadata_mut();
    m.insert("authorization", format!("Bearer {key}").parse().unwrap());
    m.insert("traceparent", format!("00-{trace_id}-{parent_id}-01").parse().unwrap());
    client.get_top_holders(r).await.unwrap();
    let hex = |b: &[u8]| alloy_primitives::hex::encode(b);
    let span = receiver.wait_for("query-service", |s| hex(&s.trace_id) == trace_id).await;
    assert_eq!(span.name, "holders.v1.HolderService/GetTopHolders");
    assert_eq!(hex(&span.parent_span_id), parent_id, "a child of the caller's span");
    assert_eq!(attribute(&span, "rpc.method").as_deref(), Some("GetTopHolders"));
    assert_eq!(attribute(&span, "caller").as_deref(), Some("tracer"));
    assert_eq!(attribute(&span, "rpc.grpc.status_code").as_deref(), Some("0"));
    // Without a traceparent, a call starts a trace of its own.
    let mut r = Request::new(GetTopHoldersRequest { limit: 2, ..Default::default() });
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    client.get_top_holders(r).await.unwrap();
    let root = receiver
        .wait_for("query-service", |s| s.parent_span_id.is_empty() && hex(&s.trace_id) != trace_id)
        .await;
    assert_eq!(attribute(&root, "caller").as_deref(), Some("tracer"));
    std::fs::remove_dir_all(&dir).unwrap();
}
