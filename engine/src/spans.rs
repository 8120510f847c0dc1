//! Spans exported over OTLP (ADR 0027): one per committed batch, and one per decision (an
//! input record that caused outputs, or a timer's output) under the span of the input it came
//! of, so a trace backend shows a document's way through the topologies. A span goes out
//! only once its batch has committed: what an aborted transaction decided never happened, and
//! its records are processed again under new spans.
//!
//! The spans are built here with the ids the records already carry (the decision's span is the
//! parent named in its outputs' `traceparent`), and handed to OpenTelemetry's batch span
//! processor and OTLP exporter; no tracer is involved, as a tracer picks ids of its own.

use crate::record::{InputRecord, OutputRecord};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::resource::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks,
    SpanProcessor,
};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where spans go, and as which service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP endpoint, `http://otel-collector:4318` (`/v1/traces` is
    /// added unless the path already ends so). `OTEL_EXPORTER_OTLP_HEADERS` adds headers
    /// (a backend's API key, say).
    pub endpoint: String,
    /// `service.name` on every span.
    pub service: String,
    /// `service.instance.id` on every span.
    pub instance: String,
}

/// `[tracing]` of a configuration file: where spans go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// An OpenTelemetry collector's OTLP/HTTP endpoint (`http://otel-collector:4318`), where
    /// a span per committed batch and per decision goes. None (the default): no spans.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans; default the program's (`p2p-pipeline`,
    /// `p2p-bank-connector`).
    pub service_name: Option<String>,
}

impl TracingSection {
    /// The export this section asks for, as instance `instance` of `service` (unless it
    /// names another); none without an endpoint.
    pub fn export(
        &self,
        service: &str,
        instance: &str,
    ) -> Result<Option<SpanExport>, SpanExportError> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        SpanExport::otlp(&OtlpConfig {
            endpoint: endpoint.clone(),
            service: self.service_name.as_deref().unwrap_or(service).to_owned(),
            instance: instance.to_owned(),
        })
        .map(Some)
    }
}

/// The endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpanExportError {
    #[error("[tracing] otlp_endpoint {endpoint:?} is not an http(s) URL")]
    NotHttp { endpoint: String },
    #[error("the OTLP exporter for {endpoint:?}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Set once any export exists: topologies then note their decisions (a few words each per
/// input that caused outputs); without one they note nothing.
static WANTED: AtomicBool = AtomicBool::new(false);

/// Whether decisions are noted for export.
pub fn wanted() -> bool {
    WANTED.load(Ordering::Relaxed)
}

/// The spans' way out: OpenTelemetry's batch span processor, which queues them (dropping the
/// newest when 16,384 wait, rather than slowing the pipeline) and posts them from a thread of
/// its own, over OTLP/HTTP in protobuf.
#[derive(Debug, Clone)]
pub struct SpanExport {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl SpanExport {
    pub fn otlp(config: &OtlpConfig) -> Result<SpanExport, SpanExportError> {
        let endpoint = traces_url(&config.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| SpanExportError::Exporter {
                endpoint,
                reason: error.to_string(),
            })?;
        Ok(Self::to(exporter, &config.service, &config.instance))
    }

    /// Spans of instance `instance` of `service` to `exporter`.
    pub fn to(exporter: impl SpanExporter + 'static, service: &str, instance: &str) -> SpanExport {
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(16_384)
                    .with_max_export_batch_size(1_024)
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build(),
            )
            .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_owned())
                .with_attributes([KeyValue::new("service.instance.id", instance.to_owned())])
                .build(),
        );
        WANTED.store(true, Ordering::Relaxed);
        SpanExport {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("p2p-pipeline")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Hands one finished span to the exporter.
    pub fn export(&self, span: SpanData) {
        self.processor.on_end(span);
    }

    /// A span of this service's instrumentation scope, from `started` to now.
    pub fn span(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        context: SpanContext,
        parent: Option<&SpanContext>,
        started: SystemTime,
    ) -> SpanData {
        SpanData {
            span_context: context,
            parent_span_id: parent.map_or(SpanId::INVALID, SpanContext::span_id),
            parent_span_is_remote: parent.is_some_and(SpanContext::is_remote),
            span_kind: kind,
            name: name.into(),
            start_time: started,
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Sends what is queued and waits for it (at most a few seconds): on a stop.
    pub fn flush(&self) {
        if let Err(error) = self.processor.force_flush() {
            tracing::warn!(%error, "spans not exported before the stop");
        }
    }

    /// The batch `batch` of `topology` that committed, `took` after it was taken, and its
    /// decisions: one span for the
    /// batch (a trace of its own, as its records belong to many), one per decision in the
    /// trace of the input it came of, linked to the batch's, and to the traces its outputs
    /// link to (an invoice's outcome to its PO's).
    pub fn committed_batch(
        &self,
        topology: &'static str,
        group: &str,
        batch: &[InputRecord],
        outputs: &[OutputRecord],
        decisions: Vec<Decision>,
        took: Duration,
    ) {
        if batch.is_empty() && outputs.is_empty() {
            return; // a timer tick with nothing due
        }
        let started = SystemTime::now() - took;
        let batch_span = crate::trace::child_of(None);
        let mut span = self.span(
            format!("{topology} batch"),
            SpanKind::Internal,
            batch_span.clone(),
            None,
            started,
        );
        span.attributes = vec![
            KeyValue::new("p2p.topology", topology),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
            KeyValue::new("messaging.batch.message_count", batch.len() as i64),
            KeyValue::new("p2p.batch.outputs", outputs.len() as i64),
            KeyValue::new("p2p.batch.decisions", decisions.len() as i64),
        ];
        self.export(span);
        for decision in decisions {
            if !decision.span.is_sampled() {
                continue;
            }
            let name = match &decision.input {
                Some(input) => format!("{topology} process {}", input.topic),
                None => format!("{topology} timer"),
            };
            let kind = if decision.input.is_some() {
                SpanKind::Consumer
            } else {
                SpanKind::Internal
            };
            let mut span = self.span(
                name,
                kind,
                decision.span.clone(),
                decision.parent.as_ref(),
                started,
            );
            span.attributes = decision.attributes(topology, group, outputs);
            span.links.links = decision.links(&batch_span, outputs);
            if let Some(reason) = decision.dead_lettered(outputs) {
                span.status = Status::error(format!("dead-lettered: {reason}"));
            }
            self.export(span);
        }
    }
}

/// The collector's traces URL for `endpoint`.
fn traces_url(endpoint: &str) -> Result<String, SpanExportError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let http = trimmed.starts_with("http://") || trimmed.starts_with("https://");
    if !http || trimmed.len() <= "https://".len() {
        return Err(SpanExportError::NotHttp {
            endpoint: endpoint.to_owned(),
        });
    }
    Ok(if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    })
}

/// The input record a decision was taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedOn {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
}

impl DecidedOn {
    pub fn of(record: &InputRecord) -> DecidedOn {
        DecidedOn {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record
                .key
                .as_deref()
                .map(|key| String::from_utf8_lossy(&key[..key.len().min(256)]).into_owned()),
        }
    }
}

/// One decision of a batch: the span its outputs name as their parent, the span of the input
/// it was taken on (if that input carried a trace), and which of the batch's outputs it caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub span: SpanContext,
    pub parent: Option<SpanContext>,
    pub input: Option<DecidedOn>,
    pub outputs: Range<usize>,
}

impl Decision {
    fn attributes(
        &self,
        topology: &'static str,
        group: &str,
        outputs: &[OutputRecord],
    ) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("p2p.topology", topology),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
        ];
        if let Some(input) = &self.input {
            attributes.extend([
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", input.topic.clone()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    input.partition.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", input.offset),
            ]);
            if let Some(key) = &input.key {
                attributes.push(KeyValue::new("messaging.kafka.message.key", key.clone()));
            }
        }
        let mut topics: Vec<&str> = outputs
            .get(self.outputs.clone())
            .unwrap_or_default()
            .iter()
            .map(|record| record.topic.as_str())
            .collect();
        topics.dedup();
        attributes.push(KeyValue::new("p2p.outputs", self.outputs.len() as i64));
        attributes.push(KeyValue::new("p2p.output.topics", topics.join(",")));
        attributes
    }

    /// Why its input went to a dead-letter queue, if it did.
    fn dead_lettered(&self, outputs: &[OutputRecord]) -> Option<String> {
        outputs
            .get(self.outputs.clone())
            .unwrap_or_default()
            .iter()
            .find_map(|record| {
                let (_, reason) = record
                    .headers
                    .iter()
                    .find(|(k, _)| k == crate::dlq::HEADER_REASON)?;
                Some(String::from_utf8_lossy(reason).into_owned())
            })
    }

    fn links(&self, batch: &SpanContext, outputs: &[OutputRecord]) -> Vec<Link> {
        let mut links = vec![Link::with_context(batch.clone())];
        for record in outputs.get(self.outputs.clone()).unwrap_or_default() {
            for context in crate::trace::linked(&record.headers) {
                if links.len() <= 64 && !links.iter().any(|l| l.span_context == context) {
                    links.push(Link::with_context(context));
                }
            }
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::BatchOutput;
    use opentelemetry_sdk::error::OTelSdkResult;
    use std::sync::Mutex;

    /// What a collector would be sent.
    #[derive(Debug, Clone, Default)]
    struct Received(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Received {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn input(topic: &str, offset: i64, traceparent: Option<&str>) -> InputRecord {
        InputRecord {
            topic: topic.into(),
            partition: 3,
            offset,
            timestamp: Some(1),
            key: Some(b"1000".to_vec()),
            payload: None,
            headers: traceparent
                .map(|t| vec![("traceparent".to_owned(), t.as_bytes().to_vec())])
                .unwrap_or_default(),
        }
    }

    fn record_to(topic: &str) -> OutputRecord {
        OutputRecord {
            topic: topic.into(),
            key: b"1000".to_vec(),
            payload: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    const PO_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    #[test]
    fn a_committed_batch_is_a_span_and_each_decision_one_under_its_inputs_span() {
        let received = Received::default();
        let export = SpanExport::to(received.clone(), "p2p-pipeline", "pod-0");
        let batch = vec![
            input("po-events", 7, Some(PO_TRACE)),
            input("invoice-events", 8, None),
            input("invoice-events", 9, Some(UNSAMPLED)),
            input("grn-events", 10, None),
        ];
        let mut output = BatchOutput::default();
        // The PO: a status; the first invoice: its outcome (linked to the PO's trace) and a
        // dead letter for a line; the unsampled one: a status; the receipt: nothing.
        output.records.push(record_to("po-status"));
        output.stamp_since(0, &batch[0]);
        let mut outcome = record_to("invoice-matched");
        crate::trace::add_links(&mut outcome.headers, [PO_TRACE]);
        output.records.push(outcome);
        output.dead_letter(
            &batch[1],
            crate::dlq::DlqReason::InvalidDocument,
            "line 2: no quantity",
            "match",
        );
        output.stamp_since(1, &batch[1]);
        output.records.push(record_to("invoice-status"));
        output.stamp_since(3, &batch[2]);
        output.stamp_since(4, &batch[3]);
        // A run released by a timer.
        output.records.push(record_to("payment-instructions"));
        let started = crate::trace::start_each(&mut output.records, 0);
        output.decisions.extend(started);

        export.committed_batch(
            "match",
            "p2p-match",
            &batch,
            &output.records,
            output.decisions,
            Duration::from_millis(20),
        );
        export.flush();
        let spans = received.0.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "match batch",
                "match process po-events",
                "match process invoice-events",
                "match timer"
            ],
            "one per batch, per sampled decision; none for the receipt that caused nothing"
        );
        let (batch_span, po, invoice, timer) = (&spans[0], &spans[1], &spans[2], &spans[3]);
        let po_context = crate::trace::context_of(&batch[0].headers).unwrap();
        assert_eq!(po.span_context.trace_id(), po_context.trace_id());
        assert_eq!(
            po.parent_span_id,
            po_context.span_id(),
            "under the ERP's span"
        );
        assert!(po.parent_span_is_remote);
        assert_eq!(po.span_kind, SpanKind::Consumer);
        let ids = |context: &SpanContext| (context.trace_id(), context.span_id());
        assert_eq!(
            crate::trace::context_of(&output.records[0].headers).map(|c| ids(&c)),
            Some(ids(&po.span_context)),
            "its output names the decision's span"
        );
        let attribute = |span: &SpanData, key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            attribute(po, "messaging.kafka.offset").as_deref(),
            Some("7")
        );
        assert_eq!(
            attribute(po, "messaging.kafka.message.key").as_deref(),
            Some("1000")
        );
        assert_eq!(
            attribute(po, "p2p.output.topics").as_deref(),
            Some("po-status")
        );
        assert_eq!(
            po.links.links[0].span_context, batch_span.span_context,
            "linked to its batch"
        );

        assert_eq!(
            invoice.parent_span_id,
            SpanId::INVALID,
            "a trace started for it"
        );
        assert_eq!(
            invoice
                .links
                .links
                .iter()
                .map(|l| l.span_context.trace_id())
                .collect::<Vec<_>>(),
            [batch_span.span_context.trace_id(), po_context.trace_id()],
            "linked to its batch and to the PO's trace its outcome links to"
        );
        assert_eq!(
            invoice.status,
            Status::error("dead-lettered: invalid-document")
        );
        assert_eq!(
            attribute(invoice, "p2p.output.topics").as_deref(),
            Some("invoice-matched,invoice-events.dlq")
        );
        assert_eq!(timer.parent_span_id, SpanId::INVALID);
        assert_eq!(
            crate::trace::context_of(&output.records[4].headers).map(|c| ids(&c)),
            Some(ids(&timer.span_context))
        );
        assert_eq!(
            attribute(batch_span, "messaging.batch.message_count").as_deref(),
            Some("4")
        );
    }

    #[test]
    fn the_traces_url_is_the_collectors_base_and_v1_traces() {
        assert_eq!(
            traces_url("http://otel-collector:4318").unwrap(),
            "http://otel-collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otlp.example.com/v1/traces/").unwrap(),
            "https://otlp.example.com/v1/traces"
        );
        for wrong in ["otel-collector:4318", "grpc://x:4317", "", "http://"] {
            assert!(
                matches!(traces_url(wrong), Err(SpanExportError::NotHttp { .. })),
                "{wrong:?}"
            );
        }
    }
}
