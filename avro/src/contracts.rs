//! The records the pipeline reads and writes, and the default topic each lives on.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use std::sync::LazyLock;

/// One record type and the topic it is published on.
#[derive(Debug)]
pub struct Contract {
    /// Default topic name (operators may rename topics; the subject follows the topic).
    pub default_topic: &'static str,
    /// The schema as published, `.avsc` text.
    pub schema_text: &'static str,
    /// Id used for this schema when no registry is configured (embedded mode only).
    pub embedded_id: u32,
}

pub const PURCHASE_ORDER_EVENT: Contract = Contract {
    default_topic: "po-events",
    schema_text: include_str!("../schemas/purchase_order_event.avsc"),
    embedded_id: 1,
};
pub const GOODS_RECEIPT_EVENT: Contract = Contract {
    default_topic: "grn-events",
    schema_text: include_str!("../schemas/goods_receipt_event.avsc"),
    embedded_id: 2,
};
pub const INVOICE_EVENT: Contract = Contract {
    default_topic: "invoice-events",
    schema_text: include_str!("../schemas/invoice_event.avsc"),
    embedded_id: 3,
};
pub const INVOICE_MATCHED: Contract = Contract {
    default_topic: "invoice-matched",
    schema_text: include_str!("../schemas/invoice_matched.avsc"),
    embedded_id: 4,
};
pub const INVOICE_EXCEPTION: Contract = Contract {
    default_topic: "invoice-exceptions",
    schema_text: include_str!("../schemas/invoice_exception.avsc"),
    embedded_id: 5,
};

pub const APPROVAL_DECISION: Contract = Contract {
    default_topic: "approval-decisions",
    schema_text: include_str!("../schemas/approval_decision.avsc"),
    embedded_id: 6,
};
pub const APPROVAL_REQUEST: Contract = Contract {
    default_topic: "approval-requests",
    schema_text: include_str!("../schemas/approval_request.avsc"),
    embedded_id: 7,
};
pub const ORG_CONFIG: Contract = Contract {
    default_topic: "org-config",
    schema_text: include_str!("../schemas/org_config.avsc"),
    embedded_id: 8,
};
pub const PO_STATUS: Contract = Contract {
    default_topic: "po-status",
    schema_text: include_str!("../schemas/po_status.avsc"),
    embedded_id: 9,
};
pub const AUDIT_EVENT: Contract = Contract {
    default_topic: "audit-events",
    schema_text: include_str!("../schemas/audit_event.avsc"),
    embedded_id: 10,
};

pub const SUPPLIER_MASTER: Contract = Contract {
    default_topic: "supplier-master",
    schema_text: include_str!("../schemas/supplier_master.avsc"),
    embedded_id: 11,
};
pub const PAYMENT_STATUS: Contract = Contract {
    default_topic: "payment-status",
    schema_text: include_str!("../schemas/payment_status.avsc"),
    embedded_id: 12,
};
pub const PAYMENT_SCHEDULE: Contract = Contract {
    default_topic: "payment-schedule",
    schema_text: include_str!("../schemas/payment_schedule.avsc"),
    embedded_id: 13,
};
pub const PAYMENT_INSTRUCTION: Contract = Contract {
    default_topic: "payment-instructions",
    schema_text: include_str!("../schemas/payment_instruction.avsc"),
    embedded_id: 14,
};

pub const REQUISITION_EVENT: Contract = Contract {
    default_topic: "requisition-events",
    schema_text: include_str!("../schemas/requisition_event.avsc"),
    embedded_id: 15,
};

pub const INVOICE_STATUS: Contract = Contract {
    default_topic: "invoice-status",
    schema_text: include_str!("../schemas/invoice_status.avsc"),
    embedded_id: 16,
};

pub const INVOICE_DECISION: Contract = Contract {
    default_topic: "invoice-decisions",
    schema_text: include_str!("../schemas/invoice_decision.avsc"),
    embedded_id: 17,
};

pub const CONTRACTS: [&Contract; 17] = [
    &PURCHASE_ORDER_EVENT,
    &GOODS_RECEIPT_EVENT,
    &INVOICE_EVENT,
    &INVOICE_MATCHED,
    &INVOICE_EXCEPTION,
    &APPROVAL_DECISION,
    &APPROVAL_REQUEST,
    &ORG_CONFIG,
    &PO_STATUS,
    &AUDIT_EVENT,
    &SUPPLIER_MASTER,
    &PAYMENT_STATUS,
    &PAYMENT_SCHEDULE,
    &PAYMENT_INSTRUCTION,
    &REQUISITION_EVENT,
    &INVOICE_STATUS,
    &INVOICE_DECISION,
];

static PARSED: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    CONTRACTS
        .iter()
        .map(|c| Schema::parse_str(c.schema_text).expect("bundled .avsc files are valid Avro"))
        .collect()
});

/// A resolved writer and reader per contract, built once: resolving a schema per record
/// would be wasted work on the hot path.
static DATUM: LazyLock<Vec<(GenericDatumWriter<'static>, GenericDatumReader<'static>)>> =
    LazyLock::new(|| {
        PARSED
            .iter()
            .map(|schema| {
                (
                    GenericDatumWriter::builder(schema)
                        .build()
                        .expect("bundled schemas resolve"),
                    GenericDatumReader::builder(schema)
                        .build()
                        .expect("bundled schemas resolve"),
                )
            })
            .collect()
    });

impl Contract {
    fn index(&self) -> usize {
        (self.embedded_id - 1) as usize
    }

    /// The parsed schema (parsed once per process).
    pub fn schema(&self) -> &'static Schema {
        &PARSED[self.index()]
    }

    /// Writes `value` as one Avro binary datum of this schema (validated first).
    pub fn write_datum(&self, value: Value) -> Result<Vec<u8>, apache_avro::Error> {
        DATUM[self.index()].0.write_value_to_vec(value)
    }

    /// Reads one Avro binary datum of this schema from the front of `bytes`.
    pub fn read_datum(&self, bytes: &mut &[u8]) -> Result<Value, apache_avro::Error> {
        DATUM[self.index()].1.read_value(bytes)
    }

    /// Confluent TopicNameStrategy subject for values on `topic`.
    pub fn value_subject(topic: &str) -> String {
        format!("{topic}-value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_schema_parses_and_embedded_ids_index_them() {
        for (i, c) in CONTRACTS.iter().enumerate() {
            assert_eq!(c.embedded_id as usize, i + 1);
            assert!(matches!(c.schema(), Schema::Record(_)));
        }
    }

    #[test]
    fn the_reason_enum_lists_every_domain_reason_in_order_then_other() {
        let Schema::Record(record) = INVOICE_EXCEPTION.schema() else {
            panic!("a record")
        };
        let reasons = &record.fields[record.lookup["reasons"]].schema;
        let Schema::Array(items) = reasons else {
            panic!("an array")
        };
        let Schema::Record(reason) = items.items.as_ref() else {
            panic!("a record")
        };
        let Schema::Enum(kind) = &reason.fields[reason.lookup["reason"]].schema else {
            panic!("an enum")
        };
        let mut expected: Vec<&str> = p2p_processors::ReasonKind::ALL
            .iter()
            .map(|k| k.symbol())
            .collect();
        expected.push("OTHER");
        assert_eq!(kind.symbols, expected);
    }

    #[test]
    fn no_schema_uses_a_float_anywhere() {
        for c in CONTRACTS {
            assert!(!c.schema_text.contains("\"float\""), "{}", c.default_topic);
            assert!(!c.schema_text.contains("\"double\""), "{}", c.default_topic);
        }
    }
}
