//! Structure-aware fuzzing of every topology: batches of arbitrary values of every input
//! schema (each field's extremes included, ids drawn from small pools so that documents meet
//! each other and reach the state machines, now and then a run of random bytes) are encoded
//! as a producer would and driven through `process`, state applied between batches, with the
//! timers fired at instants up to decades ahead. Nothing may panic: every record either is
//! processed or goes to its dead-letter queue.
//!
//! Bounded here (`PROPTEST_CASES`, 64 cases a topology by default, a few seconds); a long run
//! on demand: `PROPTEST_CASES=20000 cargo test -p p2p-topologies --test fuzz_inputs`. A failing
//! seed is printed and kept by proptest, with the record that panicked.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use futures::executor::block_on;
use futures::FutureExt;
use p2p_avro::contracts::CONTRACTS;
use p2p_avro::{Codec, Contract};
use p2p_state::Store;
use p2p_topologies::record::InputRecord;
use p2p_topologies::{MatchProcessor, PaymentProcessor, ProcurementProcessor, Topics, Topology};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// 2026-01-01.
const T: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

/// The ids a case draws from: two of each kind, so documents refer to each other.
struct Pools {
    orgs: [String; 2],
    ids: Vec<(&'static str, [String; 2])>,
}

impl Pools {
    fn new(rng: &mut StdRng) -> Pools {
        let mut two =
            |prefix: &str| [0, 1].map(|_| format!("{prefix}_{}", uuid_of(rng.random::<u128>())));
        // Who posts an invoice is sometimes who decides on it.
        let clerks = two("usr");
        Pools {
            orgs: two("org"),
            ids: vec![
                ("supplier_id", two("sup")),
                ("po_id", two("po")),
                ("invoice_id", two("inv")),
                ("grn_id", two("grn")),
                ("requisition_id", two("req")),
                ("requester_id", two("usr")),
                ("approver_id", two("usr")),
                ("user_id", two("usr")),
                ("decided_by", clerks.clone()),
                ("posted_by", clerks),
            ],
        }
    }
}

fn uuid_of(bits: u128) -> String {
    let h = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Generates values of one schema, resolving named types by their names.
struct Generator<'a> {
    rng: &'a mut StdRng,
    pools: &'a Pools,
    named: Vec<(String, Schema)>,
    /// Percent of values drawn from the extremes rather than from what the field should hold:
    /// a case is mostly sane, so that records get past decoding and into the state machines.
    wild: u32,
}

impl Generator<'_> {
    fn sane(&mut self) -> bool {
        self.rng.random_range(0..100) >= self.wild
    }

    fn collect_named(schema: &Schema, named: &mut Vec<(String, Schema)>) {
        match schema {
            Schema::Record(RecordSchema { name, fields, .. }) => {
                named.push((name.name().to_owned(), schema.clone()));
                for field in fields {
                    Self::collect_named(&field.schema, named);
                }
            }
            Schema::Enum(e) => named.push((e.name.name().to_owned(), schema.clone())),
            Schema::Array(a) => Self::collect_named(&a.items, named),
            Schema::Map(m) => Self::collect_named(&m.types, named),
            Schema::Union(u) => {
                for variant in u.variants() {
                    Self::collect_named(variant, named);
                }
            }
            _ => {}
        }
    }

    fn value(&mut self, field: &str, schema: &Schema) -> Value {
        match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(self.rng.random()),
            Schema::Int => Value::Int(self.int()),
            Schema::Date => Value::Date(self.date()),
            Schema::Long => Value::Long(self.long()),
            Schema::TimestampMillis => Value::TimestampMillis(self.timestamp()),
            Schema::String => Value::String(self.string(field)),
            Schema::Bytes => Value::Bytes(self.bytes(24)),
            Schema::Decimal(d) => {
                Value::Decimal(apache_avro::Decimal::from(self.decimal(d.precision)))
            }
            Schema::Enum(e) => {
                let i = self.rng.random_range(0..e.symbols.len());
                Value::Enum(i as u32, e.symbols[i].clone())
            }
            Schema::Array(a) => {
                let n = match self.rng.random_range(0..20) {
                    _ if self.sane() => self.rng.random_range(1..4),
                    0 => 0,
                    1 => 1_001 + self.rng.random_range(0..50),
                    _ => self.rng.random_range(1..4),
                };
                Value::Array((0..n).map(|_| self.value(field, &a.items)).collect())
            }
            Schema::Union(u) => {
                let i = self.rng.random_range(0..u.variants().len());
                let value = self.value(field, &u.variants()[i]);
                Value::Union(i as u32, Box::new(value))
            }
            Schema::Record(r) => Value::Record(
                r.fields
                    .iter()
                    .map(|f| (f.name.clone(), self.value(&f.name, &f.schema)))
                    .collect(),
            ),
            Schema::Ref { name } => {
                let resolved = self
                    .named
                    .iter()
                    .find(|(n, _)| n == name.name())
                    .map(|(_, s)| s.clone())
                    .expect("every reference names a type defined before it");
                self.value(field, &resolved)
            }
            other => panic!("no schema of ours uses {other:?}"),
        }
    }

    fn int(&mut self) -> i32 {
        if self.sane() {
            return self.rng.random_range(1..4);
        }
        let random = self.rng.random();
        *pick(self.rng, &[0, 1, -1, 2, 10, 30, i32::MIN, i32::MAX, random])
    }

    fn date(&mut self) -> i32 {
        let today = (T / DAY_MS) as i32;
        if self.sane() {
            return today + self.rng.random_range(-30..30);
        }
        let (near, random) = (self.rng.random_range(-400..400), self.rng.random());
        *pick(
            self.rng,
            &[
                today,
                today + near,
                i32::MIN,
                i32::MAX,
                -25_567, // 1900-01-01
                84_000,  // past 2199
                random,
            ],
        )
    }

    fn long(&mut self) -> i64 {
        let random = self.rng.random();
        *pick(self.rng, &[0, 1, -1, i64::MIN, i64::MAX, random])
    }

    fn timestamp(&mut self) -> i64 {
        if self.sane() {
            return T + self.rng.random_range(0..DAY_MS);
        }
        let (today, back, random) = (
            self.rng.random_range(0..DAY_MS),
            self.rng.random_range(0..3650),
            self.rng.random(),
        );
        *pick(
            self.rng,
            &[
                T + today,
                T - 40 * 365 * DAY_MS,
                T - back * DAY_MS,
                0,
                -1,
                i64::MIN,
                i64::MAX,
                i64::MAX - 1_000,
                random,
            ],
        )
    }

    fn string(&mut self, field: &str) -> String {
        // Mostly what the field should hold, so records get past decoding.
        if self.sane() {
            if field == "org_id" {
                return self.pools.orgs[self.rng.random_range(0..2)].clone();
            }
            if let Some((_, pool)) = self.pools.ids.iter().find(|(f, _)| *f == field) {
                return pool[self.rng.random_range(0..2)].clone();
            }
            match field {
                "currency" | "threshold_currency" | "base_currency" => {
                    return pick(self.rng, &["EUR", "JPY", "KWD", "USD"]).to_string()
                }
                "payment_terms" | "default_payment_terms" => {
                    return pick(
                        self.rng,
                        &["NET 30", "2/10 NET 30", "NET 0", "99.999/999 NET 999"],
                    )
                    .to_string()
                }
                "iban" => return "DE89370400440532013000".into(),
                _ => {}
            }
        }
        match self.rng.random_range(0..8) {
            0 => String::new(),
            1 => "x".repeat(self.rng.random_range(1_000..20_000)),
            2 => "\u{0}\u{7}\n\r\t\u{1b}[31m".into(),
            3 => "ünïcødé 請求書 🧾 \u{202e}".into(),
            4 => pick(
                self.rng,
                &["XXX", "eur", "E", "EURO", "NET -1", "NET 99999999999"],
            )
            .to_string(),
            5 => format!("{}_{}", field, self.rng.random::<u32>()),
            _ => (0..self.rng.random_range(1..40))
                .map(|_| self.rng.random_range(32u8..127) as char)
                .collect(),
        }
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.random_range(0..=max);
        (0..n).map(|_| self.rng.random()).collect()
    }

    /// A decimal's unscaled bytes: small values, the schema's precision's edges, beyond it,
    /// negative, empty, longer than any 128-bit integer.
    fn decimal(&mut self, precision: usize) -> Vec<u8> {
        let at_edge = 10i128.pow(precision.min(38) as u32) - 1;
        let unscaled: i128 = match self.rng.random_range(0..9) {
            _ if self.sane() => self.rng.random_range(1..100_000_000),
            0 | 1 => {
                // Any bytes at all (the writer refuses none but the empty).
                let mut bytes = self.bytes(24);
                bytes.push(self.rng.random());
                return bytes;
            }
            2 => at_edge,
            3 => at_edge + 1,
            4 => -at_edge,
            5 => i128::MAX,
            6 => -self.rng.random_range(1..1_000_000_000),
            _ => self.rng.random_range(0..1_000_000_000_000),
        };
        let bytes = unscaled.to_be_bytes();
        let skip = bytes
            .windows(2)
            .take_while(|w| (w[0] == 0 && w[1] & 0x80 == 0) || (w[0] == 0xFF && w[1] & 0x80 != 0))
            .count();
        bytes[skip..].to_vec()
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn contract_of(topic: &str) -> &'static Contract {
    CONTRACTS
        .iter()
        .copied()
        .find(|c| c.default_topic == topic)
        .expect("default topics are the contracts' topics")
}

/// A batch of `n` records for `topics`, at offsets from `offset`.
fn batch(
    rng: &mut StdRng,
    pools: &Pools,
    topics: &[String],
    n: usize,
    offset: &mut i64,
    wild: u32,
) -> Vec<InputRecord> {
    (0..n)
        .map(|_| {
            let topic = pick(rng, topics).clone();
            let contract = contract_of(&topic);
            let mut named = Vec::new();
            Generator::collect_named(contract.schema(), &mut named);
            let mut key_org = pools.orgs[rng.random_range(0..2)].clone();
            let payload = if rng.random_range(0..30) == 0 {
                // Not Avro at all, or a truncated frame.
                let n = rng.random_range(0..16);
                (0..n).map(|_| rng.random()).collect()
            } else {
                let value = Generator {
                    rng: &mut *rng,
                    pools,
                    named,
                    wild,
                }
                .value("", contract.schema());
                // Keyed by its org_id, as a producer would, but now and then not.
                if let (Value::Record(fields), true) = (&value, rng.random_range(0..20) > 0) {
                    if let Some((_, Value::String(org))) =
                        fields.iter().find(|(f, _)| f == "org_id")
                    {
                        key_org = org.clone();
                    }
                }
                match block_on(Codec::Embedded.encode(&topic, contract, value)) {
                    Ok(payload) => payload,
                    // A value the schema's writer refuses cannot reach the pipeline either.
                    Err(_) => vec![0, 0, 0, 0, contract.embedded_id as u8],
                }
            };
            *offset += 1;
            InputRecord {
                topic,
                partition: 0,
                offset: *offset,
                timestamp: Some(*pick(rng, &[T + *offset, 0, -1, T - 30 * 365 * DAY_MS])),
                key: Some(key_org.into_bytes()),
                payload: Some(payload),
                headers: vec![],
            }
        })
        .collect()
}

/// Runs a case: three batches through `topology`, state applied after each.
fn run<T: Topology>(topology: &T, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pools = Pools::new(&mut rng);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path(), topology.name()).expect("a store");
    let topics = topology.input_topics();
    let mut offset = 0;
    let wild = *pick(&mut rng, &[1, 3, 10, 30]);
    for _ in 0..3 {
        let n = rng.random_range(1..25);
        let records = batch(&mut rng, &pools, &topics, n, &mut offset, wild);
        let now = T + *pick(&mut rng, &[0, DAY_MS, 400 * DAY_MS, 50 * 365 * DAY_MS]);
        let processed = AssertUnwindSafe(topology.process(&records, now, &store)).catch_unwind();
        let output = match block_on(processed) {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => {
                return Err(TestCaseError::fail(format!(
                    "{}: processing failed for good: {error}",
                    topology.name()
                )))
            }
            Err(_) => {
                // Which record: the shortest prefix that panics ends with it.
                let culprit = (1..=records.len())
                    .find(|&k| {
                        block_on(
                            AssertUnwindSafe(topology.process(&records[..k], now, &store))
                                .catch_unwind(),
                        )
                        .is_err()
                    })
                    .map(|k| {
                        let r = &records[k - 1];
                        let value = block_on(Codec::Embedded.decode(r.payload.as_deref()));
                        let shown = format!("{} record {value:?}", r.topic);
                        shown.chars().take(4_000).collect::<String>()
                    });
                return Err(TestCaseError::fail(format!(
                    "{} panicked (seed {seed}); culprit: {culprit:?}",
                    topology.name()
                )));
            }
        };
        let refused = output.stats.dead_lettered as usize;
        prop_assert!(refused <= records.len());
        store
            .write(output.state)
            .expect("the batch's state applies");
    }
    Ok(())
}

fn codec() -> Arc<Codec> {
    Arc::new(Codec::Embedded)
}

proptest! {
    // The seed of a failing case is printed with its culprit; nothing is written to disk.
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_input_panics_the_match_topology(seed in any::<u64>()) {
        let topology = MatchProcessor::new(Topics::default(), Default::default(), codec());
        run(&topology, seed)?;
    }

    #[test]
    fn no_input_panics_the_procurement_topology(seed in any::<u64>()) {
        run(&ProcurementProcessor::new(Topics::default(), codec()), seed)?;
    }

    #[test]
    fn no_input_panics_the_payment_topology(seed in any::<u64>()) {
        run(&PaymentProcessor::new(Topics::default(), codec()), seed)?;
    }
}
