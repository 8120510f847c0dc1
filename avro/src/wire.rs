//! The Confluent wire format: byte 0 is the magic 0, bytes 1..5 the big-endian schema id,
//! then one Avro binary datum. With a registry, schemas are registered and looked up under
//! TopicNameStrategy subjects (`<topic>-value`), so Java producers using Confluent's
//! serializers interoperate with no glue. Without one (the embedded demo), the pipeline uses
//! its bundled schemas under fixed local ids.
//!
//! With a registry, the registry's clients are asked only once per schema: the id the registry
//! gives a bundled schema under a topic's subject is learnt from the first record encoded, and
//! a writer id whose schema is one of the bundled ones is read with the bundled reader, resolved
//! once per process. Per record that spares a copy of the schema text, a subject lookup, a
//! reader built anew and a copy of the datum (about 8% of the pipeline's CPU per record, see
//! docs/benchmarks.md). Any other writer schema is read through the registry's decoder.

use crate::contracts::{Contract, CONTRACTS};
use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// Why bytes could not be turned into a value, or a value into bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("the record has no value")]
    Empty,
    #[error("not Confluent wire format: {0}")]
    NotWireFormat(&'static str),
    #[error("schema id {0} is not one of the pipeline's schemas")]
    UnknownSchemaId(u32),
    #[error("Avro datum does not match its schema: {0}")]
    Avro(String),
    #[error("{0} trailing bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("schema registry unreachable (will retry): {0}")]
    RegistryUnavailable(String),
    #[error("schema registry refused: {0}")]
    Registry(String),
}

impl CodecError {
    /// Transient faults are retried with backoff, never dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    /// The registry client's error, after clearing what it cached of a transient one, so the
    /// retry asks again.
    fn from_decoder(decoder: &AvroDecoder, e: SRCError) -> Self {
        if e.retriable {
            decoder.remove_errors_from_cache();
        }
        Self::from_registry(e)
    }

    fn from_registry(e: SRCError) -> Self {
        let text = match &e.cause {
            Some(cause) => format!("{}: {cause}", e.error),
            None => e.error.clone(),
        };
        if e.retriable {
            CodecError::RegistryUnavailable(text)
        } else {
            CodecError::Registry(text)
        }
    }
}

/// Encodes and decodes records of the pipeline's topics.
pub enum Codec {
    /// Bundled schemas, fixed local ids; for the embedded demo and unit tests.
    Embedded,
    /// A Confluent-compatible schema registry.
    Registry {
        url: String,
        encoder: Box<AvroEncoder>,
        decoder: Box<AvroDecoder>,
        learnt: Box<LearntIds>,
    },
}

/// What the registry said once and the codec need not ask again.
#[derive(Default)]
pub struct LearntIds {
    /// The id each bundled schema has under a topic's subject: (contract, topic, id).
    writer: RwLock<Vec<(u32, String, u32)>>,
    /// Per writer id: the bundled contract whose schema it is, or `None` for any other schema.
    reader: RwLock<HashMap<u32, Option<&'static Contract>>>,
}

impl LearntIds {
    fn writer_id(&self, topic: &str, contract: &Contract) -> Option<u32> {
        let writer = self.writer.read().unwrap_or_else(|e| e.into_inner());
        writer
            .iter()
            .find(|(c, t, _)| *c == contract.embedded_id && t == topic)
            .map(|(_, _, id)| *id)
    }

    fn learn_writer_id(&self, topic: &str, contract: &Contract, id: u32) {
        let mut writer = self.writer.write().unwrap_or_else(|e| e.into_inner());
        if !writer
            .iter()
            .any(|(c, t, _)| *c == contract.embedded_id && t == topic)
        {
            writer.push((contract.embedded_id, topic.to_owned(), id));
        }
    }

    fn reader(&self, id: u32) -> Option<Option<&'static Contract>> {
        let reader = self.reader.read().unwrap_or_else(|e| e.into_inner());
        reader.get(&id).copied()
    }

    fn learn_reader(&self, id: u32, contract: Option<&'static Contract>) {
        let mut reader = self.reader.write().unwrap_or_else(|e| e.into_inner());
        reader.insert(id, contract);
    }
}

/// The bundled contract whose schema `schema_text` is, compared as JSON: a registry may
/// reformat the text it was given, but a schema with any other field, type, logical type or
/// default is another schema, read through the registry's decoder.
fn bundled_contract_of(schema_text: &str) -> Option<&'static Contract> {
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    let registered = json(schema_text)?;
    CONTRACTS
        .iter()
        .copied()
        .find(|c| json(c.schema_text).as_ref() == Some(&registered))
}

/// The schema id of a record in the wire format (bytes 1 to 4, big-endian).
fn schema_id(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}

/// One record in the wire format: the magic byte, `id`, and `value` written with `contract`'s
/// bundled schema.
fn frame(id: u32, contract: &Contract, value: Value) -> Result<Vec<u8>, CodecError> {
    let datum = contract
        .write_datum(value)
        .map_err(|e| CodecError::Avro(e.to_string()))?;
    let mut bytes = Vec::with_capacity(5 + datum.len());
    bytes.push(0);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&datum);
    Ok(bytes)
}

/// Reads the whole of `datum` as one record of `contract`'s bundled schema.
fn read_whole(contract: &Contract, mut datum: &[u8]) -> Result<Value, CodecError> {
    let value = contract
        .read_datum(&mut datum)
        .map_err(|e| CodecError::Avro(e.to_string()))?;
    if !datum.is_empty() {
        return Err(CodecError::TrailingBytes(datum.len()));
    }
    Ok(value)
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::Embedded => f.write_str("Codec::Embedded"),
            Codec::Registry { url, .. } => write!(f, "Codec::Registry({url})"),
        }
    }
}

impl Codec {
    /// A codec backed by the registry at `url` (e.g. `http://127.0.0.1:8081/apis/ccompat/v7`).
    pub fn registry(url: &str) -> Result<Self, CodecError> {
        let settings = || {
            SrSettings::new_builder(url.to_owned())
                .set_timeout(Duration::from_secs(10))
                .build()
                .map_err(CodecError::from_registry)
        };
        Ok(Codec::Registry {
            url: url.to_owned(),
            encoder: Box::new(AvroEncoder::new(settings()?)),
            decoder: Box::new(AvroDecoder::new(settings()?)),
            learnt: Box::default(),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Codec::Embedded => "embedded schemas from avro/ (no schema registry configured)".into(),
            Codec::Registry { url, .. } => format!("schema registry at {url}"),
        }
    }

    /// Encodes `value` (a record of `contract`) for `topic`.
    pub async fn encode(
        &self,
        topic: &str,
        contract: &Contract,
        value: Value,
    ) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Embedded => frame(contract.embedded_id, contract, value),
            Codec::Registry {
                encoder, learnt, ..
            } => {
                if let Some(id) = learnt.writer_id(topic, contract) {
                    return frame(id, contract, value);
                }
                let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
                    topic.to_owned(),
                    false,
                    SuppliedSchema::new(None, SchemaType::Avro, contract.schema_text.to_owned()),
                );
                let bytes = encoder
                    .encode_value(value, &strategy)
                    .await
                    .inspect_err(|_| encoder.remove_errors_from_cache())
                    .map_err(CodecError::from_registry)?;
                if let Some(id) = schema_id(&bytes) {
                    learnt.learn_writer_id(topic, contract, id);
                }
                Ok(bytes)
            }
        }
    }

    /// Decodes one record's value into the Avro value its writer wrote.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Value, CodecError> {
        let bytes = bytes.filter(|b| !b.is_empty()).ok_or(CodecError::Empty)?;
        if bytes.len() < 5 {
            return Err(CodecError::NotWireFormat("shorter than the 5-byte header"));
        }
        if bytes[0] != 0 {
            return Err(CodecError::NotWireFormat("magic byte is not 0"));
        }
        let id =
            schema_id(bytes).ok_or(CodecError::NotWireFormat("shorter than the 5-byte header"))?;
        match self {
            Codec::Embedded => {
                let contract = CONTRACTS
                    .iter()
                    .find(|c| c.embedded_id == id)
                    .ok_or(CodecError::UnknownSchemaId(id))?;
                read_whole(contract, &bytes[5..])
            }
            Codec::Registry {
                decoder, learnt, ..
            } => {
                let bundled = match learnt.reader(id) {
                    Some(bundled) => bundled,
                    None => {
                        let schema = decoder
                            .get_schema(id)
                            .await
                            .map_err(|e| CodecError::from_decoder(decoder, e))?;
                        let bundled = bundled_contract_of(&schema.raw);
                        learnt.learn_reader(id, bundled);
                        bundled
                    }
                };
                if let Some(contract) = bundled {
                    return read_whole(contract, &bytes[5..]);
                }
                decoder
                    .decode(Some(bytes))
                    .await
                    .map(|result| result.value)
                    .map_err(|e| CodecError::from_decoder(decoder, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::*;
    use crate::convert;
    use p2p_processors::*;
    use rust_decimal_macros::dec;

    fn invoice() -> InvoiceReceived {
        let eur = Currency::parse("EUR").unwrap();
        InvoiceReceived {
            payment_block: None,
            posted_by: None,
            org: OrgId::from_u128(1),
            invoice: InvoiceId::from_u128(2),
            kind: DocumentKind::CreditMemo,
            supplier: SupplierId::from_u128(3),
            number: InvoiceNumber::parse("A-1").unwrap(),
            po: PurchaseOrderId::from_u128(4),
            currency: eur,
            lines: vec![InvoiceLine {
                line: LineNumber::new(1).unwrap(),
                quantity: Quantity::new(dec!(2.5)).unwrap(),
                unit_price: UnitPrice::new(Money::new(dec!(19.999999), eur)).unwrap(),
            }],
            total: Money::new(dec!(50.00), eur),
            invoice_date: 20_100,
        }
    }

    #[tokio::test]
    async fn an_invoice_survives_the_embedded_wire_format_to_the_last_digit() {
        let codec = Codec::Embedded;
        let value = convert::invoice_event_value(&invoice(), "e1", EventTime(7)).unwrap();
        let bytes = codec
            .encode("invoice-events", &INVOICE_EVENT, value)
            .await
            .unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 3]);
        let decoded = convert::invoice_event(&codec.decode(Some(&bytes)).await.unwrap()).unwrap();
        assert_eq!(decoded.input, MatchInput::Invoice(invoice()));
        assert_eq!(decoded.occurred_at, EventTime(7));
    }

    #[tokio::test]
    async fn garbage_is_a_typed_error_not_a_panic() {
        let codec = Codec::Embedded;
        assert_eq!(codec.decode(None).await, Err(CodecError::Empty));
        assert!(matches!(
            codec.decode(Some(b"{\"json\":true}")).await,
            Err(CodecError::NotWireFormat(_))
        ));
        assert_eq!(
            codec.decode(Some(&[0, 0, 0, 0, 42, 1])).await,
            Err(CodecError::UnknownSchemaId(42))
        );
        assert!(codec.decode(Some(&[0, 0, 0, 0, 3, 0xFF])).await.is_err());
    }

    #[tokio::test]
    async fn a_value_that_does_not_fit_the_schema_is_refused_when_encoding() {
        let err = Codec::Embedded
            .encode("po-events", &PURCHASE_ORDER_EVENT, Value::Null)
            .await
            .unwrap_err();
        assert!(matches!(err, CodecError::Avro(_)));
    }

    #[test]
    fn a_registered_schema_is_known_as_bundled_however_the_registry_formats_it() {
        let reformatted: serde_json::Value =
            serde_json::from_str(INVOICE_EVENT.schema_text).unwrap();
        let compact = serde_json::to_string(&reformatted).unwrap();
        assert_ne!(compact, INVOICE_EVENT.schema_text);
        assert_eq!(
            bundled_contract_of(&compact).map(|c| c.embedded_id),
            Some(INVOICE_EVENT.embedded_id)
        );
    }

    #[test]
    fn a_schema_that_differs_in_anything_is_not_taken_for_a_bundled_one() {
        let mut schema: serde_json::Value =
            serde_json::from_str(INVOICE_EVENT.schema_text).unwrap();
        schema["doc"] = "written by another ERP's release".into();
        assert!(bundled_contract_of(&schema.to_string()).is_none());
        assert!(bundled_contract_of("not json").is_none());
    }

    #[test]
    fn a_writer_id_is_learnt_per_topic_and_contract() {
        let learnt = LearntIds::default();
        learnt.learn_writer_id("invoice-events", &INVOICE_EVENT, 41);
        learnt.learn_writer_id("invoice-events", &INVOICE_EVENT, 99);
        assert_eq!(learnt.writer_id("invoice-events", &INVOICE_EVENT), Some(41));
        assert_eq!(learnt.writer_id("invoice-events-2", &INVOICE_EVENT), None);
        assert_eq!(
            learnt.writer_id("invoice-events", &PURCHASE_ORDER_EVENT),
            None
        );
    }

    #[test]
    fn a_record_framed_with_a_learnt_id_reads_back_whole_and_trailing_bytes_are_refused() {
        let value = convert::invoice_event_value(&invoice(), "e1", EventTime(7)).unwrap();
        let mut bytes = frame(77, &INVOICE_EVENT, value.clone()).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 77]);
        assert_eq!(read_whole(&INVOICE_EVENT, &bytes[5..]), Ok(value));
        bytes.push(0);
        assert_eq!(
            read_whole(&INVOICE_EVENT, &bytes[5..]),
            Err(CodecError::TrailingBytes(1))
        );
    }

    #[test]
    fn an_invalid_org_id_is_reported_with_its_field() {
        let mut value = convert::invoice_event_value(&invoice(), "e1", EventTime(7)).unwrap();
        if let Value::Record(fields) = &mut value {
            fields[1].1 = Value::String("acme\u{0}".into());
        }
        let err = convert::invoice_event(&value).unwrap_err();
        assert!(matches!(
            err,
            convert::DecodeError::InvalidId {
                field: "org_id",
                ..
            }
        ));
    }

    /// [`invoice`]'s exception, written to the wire and read back.
    fn exception_on_the_wire(reasons: Vec<ExceptionReason>, revision: u32) -> Value {
        let inv = invoice();
        let exception = InvoiceException {
            revision,
            org: inv.org.clone(),
            invoice: inv.invoice.clone(),
            kind: inv.kind,
            po: inv.po.clone(),
            supplier: inv.supplier.clone(),
            number: inv.number.clone(),
            total: inv.total,
            reasons,
            raised_at: EventTime(9),
        };
        let value = convert::invoice_exception_value(&exception).unwrap();
        let bytes = INVOICE_EXCEPTION.write_datum(value).unwrap();
        INVOICE_EXCEPTION.read_datum(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn exception_reasons_carry_expected_actual_and_delta_on_the_wire() {
        let inv = invoice();
        let back = exception_on_the_wire(
            vec![ExceptionReason::AmountVariance {
                expected: Money::new(dec!(49.9999975), inv.currency),
                actual: inv.total,
            }],
            0,
        );
        let record = convert::exception_record(&back).unwrap();
        assert_eq!(record.reasons[0].reason, "AMOUNT_VARIANCE");
        assert_eq!(record.reasons[0].expected, Some(dec!(49.9999975)));
        assert_eq!(record.reasons[0].delta, Some(dec!(0.0000025)));
    }

    #[test]
    fn a_payment_block_survives_the_wire_and_a_blank_one_is_no_block() {
        let mut blocked = invoice();
        blocked.payment_block = Some("price under negotiation".into());
        let value = convert::invoice_event_value(&blocked, "e1", EventTime(7)).unwrap();
        let bytes = INVOICE_EVENT.write_datum(value).unwrap();
        let back = INVOICE_EVENT.read_datum(&mut &bytes[..]).unwrap();
        assert_eq!(
            convert::invoice_event(&back).unwrap().input,
            MatchInput::Invoice(blocked.clone())
        );
        blocked.payment_block = Some("  ".into());
        let value = convert::invoice_event_value(&blocked, "e1", EventTime(7)).unwrap();
        assert_eq!(
            convert::invoice_event(&value).unwrap().input,
            MatchInput::Invoice(invoice())
        );
    }

    #[test]
    fn a_manual_hold_and_the_outcome_revision_reach_the_payment_side() {
        let back = exception_on_the_wire(
            vec![ExceptionReason::ManualHold {
                reason: "supplier query".into(),
            }],
            3,
        );
        let blocked = convert::blocked_invoice(&back).unwrap();
        assert_eq!(blocked.revision, 3);
        assert_eq!(blocked.invoice, invoice().invoice);
        assert_eq!(blocked.reasons, vec!["MANUAL_HOLD".to_owned()]);
        let record = convert::exception_record(&back).unwrap();
        assert_eq!(
            record.reasons[0].detail,
            "blocked for payment by hand: supplier query"
        );
    }
}
