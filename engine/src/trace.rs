//! W3C Trace Context on records (ADR 0027): an output carries the trace of the input it came
//! of, under a span of its own, so a document can be followed through the topics; an output
//! of no input (a timer's) starts a trace. Parsing and formatting `traceparent` and
//! `tracestate` is OpenTelemetry's propagator's; this module only carries them between
//! Kafka headers and it.

use crate::record::OutputRecord;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The W3C header naming a record's trace and the span that produced it.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendors' trace state, carried along unchanged.
pub const TRACESTATE: &str = "tracestate";

/// The traces a record draws on besides its own (W3C `traceparent` values, comma-separated):
/// an invoice's outcome its PO's; a payment run its payments' (ADR 0027).
pub const LINKS: &str = "p2p.trace.links";
/// At most this many links on a record: a payment run holds at most 1,000 payments.
pub const MAX_LINKS: usize = 1_000;

/// A record's headers as the propagator reads them (the last of a repeated key counts, as a
/// later header overrides an earlier one; a value not in UTF-8 is no value).
struct HeaderReader<'a>(&'a [(String, Vec<u8>)]);

/// The value of header `key`, as [`HeaderReader`] reads it.
fn header<'a>(headers: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Headers the propagator writes into, replacing any of the same name.
struct HeaderWriter<'a>(&'a mut Vec<(String, Vec<u8>)>);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value.into_bytes()));
    }
}

/// The trace context a record's headers carry, if a valid one: a `traceparent` that does not
/// parse is no context (the output then starts a trace), never an error.
pub fn context_of(headers: &[(String, Vec<u8>)]) -> Option<SpanContext> {
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
    {
        return None; // the common case without one: no propagator, no context
    }
    // The W3C field widths, which the propagator does not hold a value to (it reads a
    // 31-digit trace id as one with a leading zero): a header with others is no context.
    let widths_hold = header(headers, TRACEPARENT).is_some_and(|value| {
        let fields: Vec<&str> = value.trim().split('-').collect();
        fields.len() >= 4
            && (fields[0] != "00" || fields.len() == 4)
            && fields[..4].iter().map(|f| f.len()).eq([2, 32, 16, 2])
    });
    if !widths_hold {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&HeaderReader(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The context of a span produced under `parent` (the same trace, its sampling and state,
/// a new span id), or of a new trace's first span without one.
pub fn child_of(parent: Option<&SpanContext>) -> SpanContext {
    let ids = RandomIdGenerator::default();
    match parent {
        Some(parent) => SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        ),
        None => SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
    }
}

/// Writes `span` into `headers` as `traceparent` (and `tracestate` if it has one).
pub fn write(span: &SpanContext, headers: &mut Vec<(String, Vec<u8>)>) {
    let context = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&context, &mut HeaderWriter(headers));
}

/// `span` as a `traceparent` value.
pub fn traceparent(span: &SpanContext) -> String {
    let mut headers = Vec::with_capacity(1);
    write(span, &mut headers);
    headers
        .into_iter()
        .find(|(k, _)| k == TRACEPARENT)
        .and_then(|(_, v)| String::from_utf8(v).ok())
        .unwrap_or_default()
}

/// A record's own `traceparent`, if valid.
pub fn traceparent_of(headers: &[(String, Vec<u8>)]) -> Option<String> {
    context_of(headers).map(|span| traceparent(&span))
}

/// The traces a record carries: its own `traceparent` (if valid) and then its links (each
/// valid one), each once.
pub fn carried(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut traces: Vec<String> = traceparent_of(headers).into_iter().collect();
    for link in links_of(headers) {
        if !traces.contains(&link) {
            traces.push(link);
        }
    }
    traces
}

/// The context a `traceparent` value names, if valid (as [`context_of`] reads a header).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    context_of(&[(TRACEPARENT.to_owned(), traceparent.as_bytes().to_vec())])
}

/// The valid links of a record, as given and as read.
fn links_read(headers: &[(String, Vec<u8>)]) -> Vec<(&str, SpanContext)> {
    let Some(value) = header(headers, LINKS) else {
        return Vec::new();
    };
    value
        .split(',')
        .map(str::trim)
        .filter_map(|link| Some((link, parse(link)?)))
        .collect()
}

/// The valid `traceparent` values of a record's links.
pub fn links_of(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    links_read(headers)
        .into_iter()
        .map(|(link, _)| link.to_owned())
        .collect()
}

/// The contexts of a record's valid links.
pub fn linked(headers: &[(String, Vec<u8>)]) -> Vec<SpanContext> {
    links_read(headers)
        .into_iter()
        .map(|(_, context)| context)
        .collect()
}

/// Adds `links` to `headers`' links, each valid one once, at most [`MAX_LINKS`].
pub fn add_links<'a>(
    headers: &mut Vec<(String, Vec<u8>)>,
    links: impl IntoIterator<Item = &'a str>,
) {
    let mut all = links_of(headers);
    for link in links {
        if all.len() >= MAX_LINKS {
            break;
        }
        if parse(link).is_some() && !all.iter().any(|l| l == link) {
            all.push(link.to_owned());
        }
    }
    if all.is_empty() {
        return;
    }
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(LINKS));
    headers.push((LINKS.to_owned(), all.join(",").into_bytes()));
}

/// Gives each of `records` that has no trace yet `span`: the decision that produced them.
pub fn carry(records: &mut [OutputRecord], span: &SpanContext) {
    for record in records {
        if !has_trace(record) {
            write(span, &mut record.headers);
        }
    }
}

/// Starts a trace for each of `records` that has none (a timer's output: no input caused
/// it), and names the decisions so taken (`first` is the index of `records[0]` among the
/// batch's outputs) if spans are wanted.
pub fn start_each(records: &mut [OutputRecord], first: usize) -> Vec<crate::spans::Decision> {
    let wanted = crate::spans::wanted();
    let mut decisions = Vec::new();
    for (i, record) in records.iter_mut().enumerate() {
        if has_trace(record) {
            continue;
        }
        let span = child_of(None);
        write(&span, &mut record.headers);
        if wanted {
            decisions.push(crate::spans::Decision {
                span,
                parent: None,
                input: None,
                outputs: first + i..first + i + 1,
            });
        }
    }
    decisions
}

fn has_trace(record: &OutputRecord) -> bool {
    record
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(headers: &[(String, Vec<u8>)], key: &str) -> Option<String> {
        headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    fn output() -> OutputRecord {
        OutputRecord {
            topic: "invoice-status".into(),
            key: b"ACME".to_vec(),
            payload: None,
            headers: vec![("p2p.schema".into(), b"x".to_vec())],
            timestamp: None,
        }
    }

    // The example of the W3C recommendation.
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_outputs_of_an_input_carry_its_trace_under_one_span_of_their_own() {
        let input = vec![
            ("traceparent".to_owned(), PARENT.as_bytes().to_vec()),
            ("tracestate".to_owned(), b"erp=sap".to_vec()),
        ];
        let parent = context_of(&input).expect("a valid traceparent");
        let mut records = vec![output(), output()];
        carry(&mut records, &child_of(Some(&parent)));
        let mut spans = Vec::new();
        for record in &records {
            let traceparent = header(&record.headers, TRACEPARENT).expect("a traceparent");
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts[0], "00");
            assert_eq!(
                parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
                "the input's trace"
            );
            assert_ne!(parts[2], "00f067aa0ba902b7", "a span of its own");
            assert_eq!(parts[3], "01", "sampled, as the input");
            assert_eq!(
                header(&record.headers, TRACESTATE).as_deref(),
                Some("erp=sap")
            );
            assert_eq!(header(&record.headers, "p2p.schema").as_deref(), Some("x"));
            spans.push(parts[2].to_owned());
        }
        assert_eq!(spans[0], spans[1], "one decision, one span");
    }

    #[test]
    fn links_are_kept_once_each_valid_and_bounded() {
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut headers = vec![("traceparent".to_owned(), PARENT.as_bytes().to_vec())];
        add_links(&mut headers, [other, other, "00-bad-01"]);
        assert_eq!(links_of(&headers), vec![other.to_owned()]);
        assert_eq!(carried(&headers), vec![PARENT.to_owned(), other.to_owned()]);
        let many: Vec<String> = (0..MAX_LINKS + 5)
            .map(|i| format!("00-{:032x}-b7ad6b7169203331-01", i + 1))
            .collect();
        add_links(&mut headers, many.iter().map(String::as_str));
        assert_eq!(links_of(&headers).len(), MAX_LINKS);
        assert_eq!(
            headers.iter().filter(|(k, _)| k == LINKS).count(),
            1,
            "one header, rewritten"
        );
    }

    #[test]
    fn an_output_without_a_valid_input_trace_starts_one_and_one_that_has_a_trace_keeps_it() {
        for broken in [
            "",
            "not a traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let input = vec![("traceparent".to_owned(), broken.as_bytes().to_vec())];
            assert_eq!(context_of(&input), None, "{broken:?}");
        }
        assert_eq!(
            context_of(&[("traceparent".to_owned(), vec![0xff, 0xfe])]),
            None
        );
        assert_eq!(context_of(&[]), None);

        let mut records = vec![output(), output()];
        records[1]
            .headers
            .push(("traceparent".to_owned(), PARENT.as_bytes().to_vec()));
        let decisions = start_each(&mut records, 3);
        // Noted only if another test made spans wanted (the flag is the process's): then as
        // the one started, the batch's output 3.
        assert!(decisions
            .iter()
            .all(|d| d.outputs == (3..4) && d.parent.is_none()));
        let started = context_of(&records[0].headers).expect("a trace started");
        assert_ne!(
            started.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(started.is_sampled());
        assert_eq!(
            header(&records[1].headers, TRACEPARENT).as_deref(),
            Some(PARENT),
            "a trace the topology set stays"
        );
    }
}
