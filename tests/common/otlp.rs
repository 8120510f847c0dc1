//! An OTLP/HTTP receiver in the test's process: what a collector is sent, decoded with the
//! OpenTelemetry protocol's own message types.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A span as a collector received it; ids in lower-case hex, as in `traceparent`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    pub attributes: BTreeMap<String, String>,
    /// The status code (0 unset, 1 ok, 2 error).
    pub status: i32,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether it links to the trace of W3C `traceparent`.
    pub fn links_to(&self, traceparent: &str) -> bool {
        let trace = traceparent.split('-').nth(1).unwrap_or_default();
        self.links.iter().any(|(t, _)| t == trace)
    }
}

pub struct Collector {
    /// The base URL the pipeline is given, as `[tracing] otlp_endpoint`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { endpoint, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: Bytes,
) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|mut a| a.remove("service.name"))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: attributes(&span.attributes),
                    status: span.status.map_or(0, |s| s.code),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Jaeger v2, a real OpenTelemetry collector with trace storage and a query API, built from
/// the Go module proxy by `deploy/local/jaeger.sh` (`P2P_JAEGER` names the binary), on ports
/// of its own, its traces in memory. Stopped when dropped.
pub struct Jaeger {
    /// Its OTLP/HTTP receiver, as `[tracing] otlp_endpoint`.
    pub endpoint: String,
    query: String,
    process: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Jaeger {
    /// Jaeger started, or none where `P2P_JAEGER` is not set (outside CI: the test says it
    /// did not run; in CI, which builds it, that is a failure).
    pub async fn start() -> Option<Jaeger> {
        let Some(binary) = std::env::var_os("P2P_JAEGER") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI builds Jaeger: export P2P_JAEGER=\"$(deploy/local/jaeger.sh)\""
            );
            eprintln!(
                "not run: no Jaeger (export P2P_JAEGER=\"$(deploy/local/jaeger.sh)\" to run it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let [otlp, query, grpc] = [(); 3].map(|_| super::bank::free_port());
        let config = format!(
            "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      \
             receivers: [otlp]\n      processors: []\n      exporters: [jaeger_storage_exporter]\n  \
             telemetry:\n    metrics:\n      level: none\n\
             extensions:\n  jaeger_query:\n    storage:\n      traces: memstore\n    http:\n      \
             endpoint: {query}\n    grpc:\n      endpoint: {grpc}\n  jaeger_storage:\n    backends:\n      \
             memstore:\n        memory:\n          max_traces: 100000\n\
             receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: {otlp}\n\
             exporters:\n  jaeger_storage_exporter:\n    trace_storage: memstore\n"
        );
        let config_path = dir.path().join("jaeger.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("jaeger.log")).unwrap();
        let process = std::process::Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting Jaeger {binary:?}: {e}"));
        let jaeger = Jaeger {
            endpoint: format!("http://{otlp}"),
            query: format!("http://{query}"),
            process,
            _dir: dir,
        };
        let answered = super::poll(
            "Jaeger to answer",
            || async {
                reqwest::get(format!("{}/api/services", jaeger.query))
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            },
            |status| *status == Ok(200),
        )
        .await;
        assert_eq!(answered, Ok(200));
        Some(jaeger)
    }

    /// What Jaeger's query API answers for `path` (`/api/traces/<id>`, ...), as JSON; null if
    /// not found.
    pub async fn query(&self, path: &str) -> serde_json::Value {
        let response = reqwest::get(format!("{}{path}", self.query)).await.unwrap();
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return serde_json::Value::Null;
        }
        response.json().await.unwrap()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
