//! The `match` topology: `po-events`, `grn-events` and `invoice-events` in (keyed by org_id,
//! co-partitioned), per-PO match state in RocksDB, `invoice-matched` and `invoice-exceptions`
//! out, undecodable or invalid records to `<input>.dlq`.
//!
//! [`MatchProcessor::process_batch`] is the whole per-batch step without Kafka: records in,
//! output records and one state write batch out. The runtime does the I/O around it.

use crate::config::Topics;
use crate::dlq::{dead_letter, DlqReason};
use crate::record::{InputRecord, OutputRecord};
use crate::stats::StatsSnapshot;
use p2p_avro::contracts::{INVOICE_EXCEPTION, INVOICE_MATCHED};
use p2p_avro::convert::{self, Decoded};
use p2p_avro::{Codec, CodecError};
use p2p_processors::duplicates::{DocumentKind, DuplicatePolicy, DuplicateRegister, InvoiceFacts};
use p2p_processors::{MatchContext, MatchInput, MatchOutput, PurchaseOrderMatch, Tolerance};
use p2p_state::{StateError, StateKey, Store, StoreBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// Name of this processor in DLQ headers and logs.
pub const PROCESSOR: &str = "match";
/// Name of its store (its directory under the state dir).
pub const STORE: &str = "match-state";

/// A batch could not be processed now and must be retried as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("transient: {0}")]
    Transient(CodecError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What one batch produced.
pub struct BatchOutput {
    pub records: Vec<OutputRecord>,
    pub state: StoreBatch,
    pub stats: StatsSnapshot,
}

#[derive(Clone, Copy)]
enum InputKind {
    PurchaseOrder,
    GoodsReceipt,
    Invoice,
}

pub struct MatchProcessor {
    topics: Topics,
    tolerance: Tolerance,
    duplicates: DuplicatePolicy,
    codec: Arc<Codec>,
}

/// The states a batch touches: each read once from the store, written once at the end.
/// Per-PO match states and per-supplier duplicate registers share the store (and so the
/// write batch): a register's entity is `dup/<supplier id>`, which no PO id can be.
struct Working<'s> {
    store: &'s Store,
    states: HashMap<StateKey, PurchaseOrderMatch>,
    registers: HashMap<StateKey, DuplicateRegister>,
}

impl Working<'_> {
    fn register(&self, key: &StateKey) -> Result<DuplicateRegister, StateError> {
        if let Some(register) = self.registers.get(key) {
            return Ok(register.clone());
        }
        Ok(self.store.get(key)?.unwrap_or_default())
    }

    fn load(
        &mut self,
        key: &StateKey,
        decoded: &Decoded,
    ) -> Result<PurchaseOrderMatch, StateError> {
        if let Some(state) = self.states.get(key) {
            return Ok(state.clone());
        }
        Ok(self.store.get(key)?.unwrap_or_else(|| {
            PurchaseOrderMatch::new(decoded.input.org().clone(), decoded.input.po().clone())
        }))
    }
}

impl MatchProcessor {
    pub fn new(topics: Topics, tolerance: Tolerance, codec: Arc<Codec>) -> Self {
        Self {
            topics,
            tolerance,
            duplicates: DuplicatePolicy::default(),
            codec,
        }
    }

    fn kind_of(&self, topic: &str) -> Option<InputKind> {
        if topic == self.topics.po_events {
            Some(InputKind::PurchaseOrder)
        } else if topic == self.topics.grn_events {
            Some(InputKind::GoodsReceipt)
        } else if topic == self.topics.invoice_events {
            Some(InputKind::Invoice)
        } else {
            None
        }
    }

    /// Processes `records` in order against `store`. Nothing is written to the store here:
    /// the caller applies `BatchOutput::state` once the outputs are safely produced.
    pub async fn process_batch(
        &self,
        records: &[InputRecord],
        store: &Store,
    ) -> Result<BatchOutput, ProcessError> {
        let mut working = Working {
            store,
            states: HashMap::new(),
            registers: HashMap::new(),
        };
        let mut out = Vec::with_capacity(records.len());
        let mut stats = StatsSnapshot {
            records_in: records.len() as u64,
            batches: 1,
            ..Default::default()
        };
        for record in records {
            if let Err((reason, error)) = self
                .process_record(record, &mut working, &mut out, &mut stats)
                .await?
            {
                out.push(dead_letter(record, reason, &error, PROCESSOR));
                stats.dead_lettered += 1;
                *stats.dlq_reasons.entry(reason.code()).or_default() += 1;
            }
        }
        let mut state = StoreBatch::default();
        for (key, value) in &working.states {
            state.put(key, value)?;
        }
        for (key, value) in &working.registers {
            state.put(key, value)?;
        }
        Ok(BatchOutput {
            records: out,
            state,
            stats,
        })
    }

    /// `Ok(Err(..))`: this record goes to the DLQ; `Err(..)`: the batch must be retried.
    async fn process_record(
        &self,
        record: &InputRecord,
        working: &mut Working<'_>,
        out: &mut Vec<OutputRecord>,
        stats: &mut StatsSnapshot,
    ) -> Result<Result<(), (DlqReason, String)>, ProcessError> {
        let Some(kind) = self.kind_of(&record.topic) else {
            return Ok(Err((
                DlqReason::Rejected,
                format!("topic {} is not an input of this topology", record.topic),
            )));
        };
        let value = match self.codec.decode(record.payload.as_deref()).await {
            Ok(value) => value,
            Err(e) if e.is_transient() => return Err(ProcessError::Transient(e)),
            Err(e) => return Ok(Err((DlqReason::Undecodable, e.to_string()))),
        };
        let decoded = match kind {
            InputKind::PurchaseOrder => convert::purchase_order_event(&value),
            InputKind::GoodsReceipt => convert::goods_receipt_event(&value),
            InputKind::Invoice => convert::invoice_event(&value),
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
        };
        let org = decoded.input.org();
        if record.key.as_deref() != Some(org.as_str().as_bytes()) {
            let key = record
                .key
                .as_deref()
                .map_or("no key".into(), |k| String::from_utf8_lossy(k).into_owned());
            return Ok(Err((
                DlqReason::KeyMismatch,
                format!("record key {key:?} is not the document's org_id {org}"),
            )));
        }

        // An invoice is first checked against its supplier's earlier invoices.
        let mut context = MatchContext {
            tolerance: self.tolerance,
            duplicate_of: None,
        };
        let mut register = None;
        if let MatchInput::Invoice(invoice) = &decoded.input {
            let key = StateKey::new(org, &format!("dup/{}", invoice.supplier));
            let mut seen = working.register(&key)?;
            let facts = InvoiceFacts {
                invoice: invoice.invoice.clone(),
                supplier: invoice.supplier.clone(),
                kind: DocumentKind::Invoice,
                number: invoice.number.clone(),
                gross: invoice.total,
                invoice_date: invoice.invoice_date,
            };
            context.duplicate_of = seen.check(&facts, &self.duplicates).map(|d| d.duplicate_of);
            register = Some((key, seen));
        }

        let key = StateKey::new(org, decoded.input.po().as_str());
        // Work on copies: if an output cannot be encoded, the state stays as it was.
        let mut state = working.load(&key, &decoded)?;
        let outputs = match state.apply(&decoded.input, decoded.occurred_at, &context) {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err((DlqReason::Rejected, e.to_string()))),
        };
        let mut encoded = Vec::with_capacity(outputs.len());
        let mut batch_stats = StatsSnapshot::default();
        for output in &outputs {
            match self.encode(output, &mut batch_stats).await {
                Ok(Some(r)) => encoded.push(r),
                Ok(None) => {}
                Err(e) if e.is_transient() => return Err(ProcessError::Transient(e)),
                Err(e) => {
                    return Ok(Err((
                        DlqReason::Rejected,
                        format!("output not encodable: {e}"),
                    )))
                }
            }
        }
        working.states.insert(key, state);
        if let Some((key, seen)) = register {
            working.registers.insert(key, seen);
        }
        out.extend(encoded);
        stats.matched += batch_stats.matched;
        stats.exceptions += batch_stats.exceptions;
        stats.pending += batch_stats.pending;
        stats.receipts_rejected += batch_stats.receipts_rejected;
        for (k, v) in batch_stats.exception_reasons {
            *stats.exception_reasons.entry(k).or_default() += v;
        }
        Ok(Ok(()))
    }

    async fn encode(
        &self,
        output: &MatchOutput,
        stats: &mut StatsSnapshot,
    ) -> Result<Option<OutputRecord>, CodecError> {
        let (topic, contract, org, value) = match output {
            MatchOutput::Matched(m) => {
                stats.matched += 1;
                let value = convert::invoice_matched_value(m)
                    .map_err(|e| CodecError::Avro(e.to_string()))?;
                (
                    &self.topics.invoice_matched,
                    &INVOICE_MATCHED,
                    &m.org,
                    value,
                )
            }
            MatchOutput::Exception(e) => {
                stats.exceptions += 1;
                for reason in &e.reasons {
                    *stats
                        .exception_reasons
                        .entry(reason.kind().symbol())
                        .or_default() += 1;
                }
                let value = convert::invoice_exception_value(e)
                    .map_err(|e| CodecError::Avro(e.to_string()))?;
                (
                    &self.topics.invoice_exceptions,
                    &INVOICE_EXCEPTION,
                    &e.org,
                    value,
                )
            }
            // Pending and rejected receipts have no topic yet (audit-events will carry them).
            MatchOutput::Pending(_) => {
                stats.pending += 1;
                return Ok(None);
            }
            MatchOutput::ReceiptRejected(_) => {
                stats.receipts_rejected += 1;
                return Ok(None);
            }
        };
        let payload = self.codec.encode(topic, contract, value).await?;
        Ok(Some(OutputRecord {
            topic: topic.clone(),
            key: org.as_str().as_bytes().to_vec(),
            payload: Some(payload),
            headers: vec![],
        }))
    }
}
