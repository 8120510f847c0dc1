//! Dead-letter records: the original key, value and headers, plus headers naming why and
//! where from, so a DLQ can be inspected and replayed without guessing. Inspecting and replaying
//! them (the `dlq` subcommands) lives here too.

use crate::config::KafkaProperties;
use crate::kafka::{producer_config, read_topic, ReadError};
use crate::record::{InputRecord, OutputRecord};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::util::Timeout;
use std::time::Duration;

pub const HEADER_REASON: &str = "dlq.reason";
pub const HEADER_ERROR: &str = "dlq.error";
pub const HEADER_TOPIC: &str = "dlq.original.topic";
pub const HEADER_PARTITION: &str = "dlq.original.partition";
pub const HEADER_OFFSET: &str = "dlq.original.offset";
pub const HEADER_TIMESTAMP: &str = "dlq.original.timestamp";
pub const HEADER_PROCESSOR: &str = "dlq.processor";
/// On a letter whose record was too large to keep: its size in bytes (the record itself is
/// at its original topic, partition and offset, as long as that topic retains it).
pub const HEADER_PAYLOAD_OMITTED: &str = "dlq.payload.omitted";
/// Largest record value a dead letter keeps: below the producer's 1,000,000-byte default
/// with room for the headers.
const MAX_KEPT_PAYLOAD: usize = 900_000;

/// On a replayed record: the dead letter it came from, `<dlq topic>/<partition>/<offset>`.
pub const HEADER_REPLAYED_FROM: &str = "dlq.replayed.from";
/// On a replayed record: the processors that refused it, comma-separated. A topology not named
/// passes the record over: it processed the record the first time, and must not twice.
pub const HEADER_REPLAYED_FOR: &str = "dlq.replayed.for";

/// On a growth's straggler forwarded to its owner's new partition (ADR 0025): the processor
/// that forwarded it, the only one to process this copy. Each processor reading the topic
/// forwards its own copy, so each decides the record once, whatever the others do.
pub const HEADER_FORWARDED_FOR: &str = "p2p.forwarded.for";

/// Whether `processor` is to process `record`: any record, unless it is a replayed dead letter
/// that only other processors refused, or a straggler another processor forwarded.
pub fn meant_for(record: &InputRecord, processor: &str) -> bool {
    let named = |header: &str| {
        record
            .headers
            .iter()
            .rev()
            .find(|(k, _)| k == header)
            .map(|(_, v)| String::from_utf8_lossy(v))
    };
    named(HEADER_REPLAYED_FOR).is_none_or(|v| v.split(',').any(|p| p.trim() == processor))
        && named(HEADER_FORWARDED_FOR).is_none_or(|v| v == processor)
}

/// The dead-letter topic of an input topic: `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Why a record went to the dead-letter queue (the `dlq.reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DlqReason {
    /// Not Avro in the Confluent wire format, or not readable with its schema.
    Undecodable,
    /// Decoded, but not a valid document (bad id, unknown currency, no lines, ...).
    InvalidDocument,
    /// The record key is not the key group (the owner, an org in P2P) of what it carries.
    KeyMismatch,
    /// The processor refused the document outright (not a business outcome).
    Rejected,
    /// On a partition other than the one its key hashes to with the Java client's
    /// partitioner: the key's state lives with that other partition, possibly on another
    /// instance, so processing the record here would decide on stale state.
    WrongPartition,
    /// Processing it panicked: a bug, caught so that the record cannot stop its partition
    /// (or crash-loop the process); the panic's message is the error.
    Panicked,
}

impl DlqReason {
    pub fn code(self) -> &'static str {
        match self {
            DlqReason::Undecodable => "undecodable",
            DlqReason::InvalidDocument => "invalid-document",
            DlqReason::KeyMismatch => "key-mismatch",
            DlqReason::Rejected => "rejected",
            DlqReason::WrongPartition => "wrong-partition",
            DlqReason::Panicked => "panicked",
        }
    }
}

/// The dead-letter record for `input`.
pub fn dead_letter(
    input: &InputRecord,
    reason: DlqReason,
    error: &str,
    processor: &str,
) -> OutputRecord {
    let mut headers = input.headers.clone();
    let mut add = |k: &str, v: String| headers.push((k.to_owned(), v.into_bytes()));
    add(HEADER_REASON, reason.code().to_owned());
    add(HEADER_ERROR, bounded(error));
    add(HEADER_TOPIC, input.topic.clone());
    add(HEADER_PARTITION, input.partition.to_string());
    add(HEADER_OFFSET, input.offset.to_string());
    add(
        HEADER_TIMESTAMP,
        input.timestamp.map_or_else(String::new, |t| t.to_string()),
    );
    add(HEADER_PROCESSOR, processor.to_owned());
    // A record near Kafka's limit would, with our headers, be over it: the letter, refused by
    // the producer, would fail its batch on every attempt. Its bytes stay on the input topic.
    let size = input.payload.as_ref().map_or(0, Vec::len);
    let payload = if size > MAX_KEPT_PAYLOAD {
        add(HEADER_PAYLOAD_OMITTED, size.to_string());
        None
    } else {
        input.payload.clone()
    };
    OutputRecord {
        topic: dlq_topic(&input.topic),
        key: input.key.clone().unwrap_or_default(),
        payload,
        headers,
        timestamp: input.timestamp,
    }
}

/// Most characters of an error kept in `dlq.error`: errors quote the value refused, and a
/// hostile record's value may be megabytes (the record itself is in the dead letter).
const MAX_ERROR_CHARS: usize = 2_000;

fn bounded(error: &str) -> String {
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        None => error.to_owned(),
        Some((end, _)) => format!("{}… (cut at {MAX_ERROR_CHARS} characters)", &error[..end]),
    }
}

/// Where a dead letter's record first was (topic, partition, offset), as its headers say.
type Origin = (Option<String>, Option<String>, Option<String>);

/// A dead letter read back from its DLQ topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub dlq_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The original record's headers, then ours (`dlq.*`), in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    pub fn from_message(message: &OwnedMessage) -> DeadLetter {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            dlq_topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Where the record first was: its topic, partition and offset (from our headers).
    fn original(&self) -> Origin {
        (
            self.header(HEADER_TOPIC),
            self.header(HEADER_PARTITION),
            self.header(HEADER_OFFSET),
        )
    }

    /// The record as it first came, to send back to its topic: the same key and payload and
    /// the original record's own headers (ours, `dlq.*`, left behind), plus where it was
    /// replayed from.
    pub fn replay(&self) -> Result<OutputRecord, ReplayError> {
        if let Some(size) = self.header(HEADER_PAYLOAD_OMITTED) {
            return Err(ReplayError::PayloadOmitted {
                dlq_topic: self.dlq_topic.clone(),
                partition: self.partition,
                offset: self.offset,
                size,
            });
        }
        let topic = self
            .header(HEADER_TOPIC)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ReplayError::NoOriginalTopic {
                dlq_topic: self.dlq_topic.clone(),
                partition: self.partition,
                offset: self.offset,
            })?;
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq."))
            .cloned()
            .collect();
        headers.push((
            HEADER_REPLAYED_FROM.to_owned(),
            format!("{}/{}/{}", self.dlq_topic, self.partition, self.offset).into_bytes(),
        ));
        Ok(OutputRecord {
            topic,
            key: self.key.clone().unwrap_or_default(),
            payload: self.payload.clone(),
            headers,
            // Its event time, as it first came.
            timestamp: self.header(HEADER_TIMESTAMP).and_then(|t| t.parse().ok()),
        })
    }
}

/// Which dead letters an operator means: by reason (`dlq.reason`), partition and offset range
/// (inclusive) in the DLQ topic. Nothing set: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqSelection {
    pub reason: Option<String>,
    pub partition: Option<i32>,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
}

impl DlqSelection {
    pub fn selects(&self, letter: &DeadLetter) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|r| letter.header(HEADER_REASON).as_ref() == Some(r))
            && self.partition.is_none_or(|p| p == letter.partition)
            && self.from_offset.is_none_or(|from| letter.offset >= from)
            && self.to_offset.is_none_or(|to| letter.offset <= to)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{dlq_topic}[{partition}]@{offset} names no original topic (header dlq.original.topic)"
    )]
    NoOriginalTopic {
        dlq_topic: String,
        partition: i32,
        offset: i64,
    },
    #[error(
        "{dlq_topic}[{partition}]@{offset} kept no copy of its record ({size} bytes, too large \
         for a dead letter): it is at its original topic, partition and offset"
    )]
    PayloadOmitted {
        dlq_topic: String,
        partition: i32,
        offset: i64,
        size: String,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// The dead letters of `dlq_topic` that `selection` selects, committed so far, in partition and
/// offset order.
pub fn inspect(
    kafka: &KafkaProperties,
    dlq_topic: &str,
    selection: &DlqSelection,
    timeout: Duration,
) -> Result<Vec<DeadLetter>, ReadError> {
    let mut letters: Vec<DeadLetter> = read_topic(kafka, dlq_topic, timeout)?
        .iter()
        .map(DeadLetter::from_message)
        .filter(|l| selection.selects(l))
        .collect();
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

/// The records to send back for `letters`: one per original record, however many processors
/// dead-lettered it (every topology reading a topic refuses a bad record on its own), each
/// marked for the processors whose letters were selected ([`HEADER_REPLAYED_FOR`]), so that
/// a topology that processed it the first time does not process it again.
pub fn replays(letters: &[DeadLetter]) -> Result<Vec<OutputRecord>, ReplayError> {
    let mut records: Vec<OutputRecord> = Vec::new();
    // Each original record's place, and the index of its replay in `records`.
    let mut seen: Vec<(Origin, usize)> = Vec::new();
    for letter in letters {
        let processor = letter.header(HEADER_PROCESSOR).unwrap_or_default();
        let original = letter.original();
        let known = original.1.is_some() && original.2.is_some();
        match seen.iter().find(|(o, _)| known && *o == original) {
            Some((_, i)) => {
                let record = &mut records[*i];
                if let Some((_, processors)) = record
                    .headers
                    .iter_mut()
                    .find(|(k, _)| k == HEADER_REPLAYED_FOR)
                {
                    if !String::from_utf8_lossy(processors)
                        .split(',')
                        .any(|p| p == processor)
                    {
                        processors.push(b',');
                        processors.extend_from_slice(processor.as_bytes());
                    }
                }
            }
            None => {
                let mut record = letter.replay()?;
                record
                    .headers
                    .push((HEADER_REPLAYED_FOR.to_owned(), processor.into_bytes()));
                seen.push((original, records.len()));
                records.push(record);
            }
        }
    }
    Ok(records)
}

/// Sends the selected dead letters of `dlq_topic` back to the topics they came from, in order,
/// keyed as they were (so each lands on its key's partition), each original record once, and
/// returns the letters selected. Every letter is checked before any is sent: one with no
/// original topic sends nothing. The dead letters stay where they are; a replayed record that
/// fails again is dead-lettered again.
pub async fn replay(
    kafka: &KafkaProperties,
    dlq_topic: &str,
    selection: &DlqSelection,
    timeout: Duration,
) -> Result<Vec<DeadLetter>, ReplayError> {
    let letters = inspect(kafka, dlq_topic, selection, timeout)?;
    let records = replays(&letters)?;
    let producer: FutureProducer = producer_config(kafka)
        .set("enable.idempotence", "true")
        // The Java client's partitioner, as the pipeline and its upstreams produce with.
        .set("partitioner", "murmur2_random")
        .create()?;
    for record in &records {
        producer
            .send(record.to_send(), Timeout::After(timeout))
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)], offset: i64) -> DeadLetter {
        DeadLetter {
            dlq_topic: "invoice-events.dlq".into(),
            partition: 1,
            offset,
            key: Some(b"org_1".to_vec()),
            payload: Some(vec![0, 0, 0, 0, 3, 42]),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_replayed_record_goes_back_as_it_came_with_its_own_headers_and_where_it_was_kept() {
        let input = InputRecord {
            topic: "invoice-events".into(),
            partition: 2,
            offset: 17,
            timestamp: Some(5),
            key: Some(b"org_1".to_vec()),
            payload: Some(vec![0, 0, 0, 0, 3, 42]),
            headers: vec![("traceparent".into(), b"00-abc".to_vec())],
        };
        let dead = dead_letter(&input, DlqReason::Rejected, "no such payment", "payment");
        let kept = DeadLetter {
            headers: dead.headers.clone(),
            ..letter(&[], 9)
        };
        assert_eq!(kept.header(HEADER_REASON).as_deref(), Some("rejected"));
        let again = kept.replay().unwrap();
        assert_eq!(again.topic, "invoice-events");
        assert_eq!(again.key, b"org_1".to_vec());
        assert_eq!(again.payload, input.payload);
        assert_eq!(again.timestamp, input.timestamp);
        assert_eq!(
            again.headers,
            vec![
                ("traceparent".to_owned(), b"00-abc".to_vec()),
                (
                    HEADER_REPLAYED_FROM.to_owned(),
                    b"invoice-events.dlq/1/9".to_vec()
                ),
            ]
        );
    }

    fn refused_by(processor: &str, offset: i64) -> DeadLetter {
        let input = InputRecord {
            topic: "po-events".into(),
            partition: 0,
            offset: 4,
            timestamp: Some(5),
            key: Some(b"org_1".to_vec()),
            payload: Some(b"not avro".to_vec()),
            headers: vec![],
        };
        let dead = dead_letter(&input, DlqReason::Undecodable, "not avro", processor);
        DeadLetter {
            headers: dead.headers,
            ..letter(&[], offset)
        }
    }

    #[test]
    fn a_record_refused_by_three_processors_is_replayed_once_for_the_three() {
        let letters = [
            refused_by("match", 10),
            refused_by("procurement", 11),
            refused_by("payment", 12),
        ];
        let records = replays(&letters).unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        let input = InputRecord {
            topic: record.topic.clone(),
            partition: 0,
            offset: 99,
            timestamp: record.timestamp,
            key: Some(record.key.clone()),
            payload: record.payload.clone(),
            headers: record.headers.clone(),
        };
        for processor in ["match", "procurement", "payment"] {
            assert!(meant_for(&input, processor), "{processor}");
        }
        // Only the letters selected: a processor that accepted it passes it over.
        let records = replays(&letters[..1]).unwrap();
        let input = InputRecord {
            headers: records[0].headers.clone(),
            ..input
        };
        assert!(meant_for(&input, "match"));
        assert!(!meant_for(&input, "procurement"));
        assert!(!meant_for(&input, "payment"));
        // A record never dead-lettered is for everyone.
        assert!(meant_for(
            &InputRecord {
                headers: vec![],
                ..input.clone()
            },
            "payment"
        ));
        // A straggler's copy forwarded by one processor is that processor's alone: each
        // reader of the topic forwards (and decides) its own.
        let forwarded = InputRecord {
            headers: vec![(HEADER_FORWARDED_FOR.to_owned(), b"procurement".to_vec())],
            ..input
        };
        assert!(meant_for(&forwarded, "procurement"));
        assert!(!meant_for(&forwarded, "match"));
    }

    #[test]
    fn a_huge_error_is_cut_in_the_header_not_in_the_record() {
        let input = InputRecord {
            topic: "po-events".into(),
            partition: 0,
            offset: 4,
            timestamp: None,
            key: None,
            payload: Some(vec![1; 100_000]),
            headers: vec![],
        };
        let error = format!(
            "field `currency`: {:?} is not a currency",
            "é".repeat(50_000)
        );
        let dead = dead_letter(&input, DlqReason::InvalidDocument, &error, "match");
        let kept = DeadLetter {
            headers: dead.headers,
            ..letter(&[], 1)
        };
        let shown = kept.header(HEADER_ERROR).unwrap();
        assert!(shown.starts_with("field `currency`: \"éé"));
        assert!(shown.ends_with("(cut at 2000 characters)"), "{shown}");
        assert!(shown.chars().count() < 2_100);
        assert_eq!(dead.payload, input.payload, "the record is kept whole");
    }

    #[test]
    fn a_record_too_large_to_keep_is_named_by_its_place_and_never_replayed_empty() {
        let input = InputRecord {
            topic: "invoice-events".into(),
            partition: 2,
            offset: 17,
            timestamp: Some(5),
            key: Some(b"org_1".to_vec()),
            payload: Some(vec![7; 1_000_000]),
            headers: vec![],
        };
        let dead = dead_letter(&input, DlqReason::InvalidDocument, "too large", "match");
        assert_eq!(dead.payload, None);
        let kept = DeadLetter {
            headers: dead.headers,
            ..letter(&[], 3)
        };
        assert_eq!(
            kept.header(HEADER_PAYLOAD_OMITTED).as_deref(),
            Some("1000000")
        );
        assert_eq!(kept.header(HEADER_OFFSET).as_deref(), Some("17"));
        assert!(matches!(
            kept.replay(),
            Err(ReplayError::PayloadOmitted { offset: 3, .. })
        ));
    }

    #[test]
    fn a_dead_letter_without_its_original_topic_is_not_replayed_anywhere() {
        assert!(matches!(
            letter(&[(HEADER_REASON, "undecodable")], 3).replay(),
            Err(ReplayError::NoOriginalTopic { offset: 3, .. })
        ));
    }

    #[test]
    fn a_selection_picks_by_reason_partition_and_inclusive_offset_range() {
        let undecodable = letter(&[(HEADER_REASON, "undecodable")], 10);
        let rejected = letter(&[(HEADER_REASON, "rejected")], 11);
        let by_reason = DlqSelection {
            reason: Some("rejected".into()),
            ..DlqSelection::default()
        };
        assert!(!by_reason.selects(&undecodable) && by_reason.selects(&rejected));
        let range = DlqSelection {
            partition: Some(1),
            from_offset: Some(10),
            to_offset: Some(10),
            ..DlqSelection::default()
        };
        assert!(range.selects(&undecodable) && !range.selects(&rejected));
        let other_partition = DlqSelection {
            partition: Some(0),
            ..DlqSelection::default()
        };
        assert!(!other_partition.selects(&undecodable));
        assert!(DlqSelection::default().selects(&rejected));
    }
}
