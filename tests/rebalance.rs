//! Rebalances under load on the real broker: a second instance joins the group and leaves it
//! again, over and over, while records stream in. Each rebalance takes every partition away
//! from the first instance and hands it (or some of it) back at its committed offset, with
//! whatever the second instance committed meanwhile in the store's changelog.
//!
//! The topology under test only counts: per org, it keeps in its store how many records it has
//! seen, and writes one output per input record carrying the count. With exactly once, each
//! input record has one committed output, and the counts of each org are 1, 2, ... n, each
//! once: a record processed twice repeats a count, and a store that missed the other
//! instance's changes goes back to an old one.

mod common;

use common::{kafka, poll, Pipeline, TestTopics};
use p2p_loadtest::audit::read_topic;
use p2p_loadtest::produce::erp_producer;
use p2p_processors::OrgId;
use p2p_state::{StateKey, Store};
use p2p_topologies::record::{InputRecord, OutputRecord};
use p2p_topologies::topology::{BatchOutput, ProcessError};
use p2p_topologies::{Runtime, RuntimeConfig, Topology};
use rdkafka::producer::FutureRecord;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const ORGS: u128 = 8;
/// Records per input topic: enough to keep both instances busy through every rebalance.
const RECORDS: usize = 3_000;
const JOINS: usize = 4;

/// Counts each org's records: the output of a record is `<topic>/<partition>/<offset> <n>`,
/// `n` being how many records of its org the store has seen with it.
struct Counting {
    inputs: Vec<String>,
    output: String,
}

impl Topology for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn input_topics(&self) -> Vec<String> {
        self.inputs.clone()
    }

    async fn process(
        &self,
        records: &[InputRecord],
        _now: i64,
        store: &Store,
    ) -> Result<BatchOutput, ProcessError> {
        let mut output = BatchOutput::default();
        let mut counts: HashMap<StateKey, u64> = HashMap::new();
        for record in records {
            let key = record.key.clone().expect("keyed by org");
            let org = OrgId::parse(std::str::from_utf8(&key).expect("utf-8")).expect("an org");
            let state_key = StateKey::new(&org, "count");
            let count = match counts.get(&state_key) {
                Some(count) => *count,
                None => store.get::<u64>(&state_key)?.unwrap_or(0),
            } + 1;
            counts.insert(state_key, count);
            output.records.push(OutputRecord {
                topic: self.output.clone(),
                key,
                payload: Some(
                    format!(
                        "{}/{}/{} {count}",
                        record.topic, record.partition, record.offset
                    )
                    .into_bytes(),
                ),
                headers: Vec::new(),
                timestamp: record.timestamp,
            });
        }
        for (key, count) in &counts {
            output.state.put(key, count)?;
        }
        Ok(output)
    }
}

/// Instance `instance` of application `app`, on a state directory of its own. Not a static
/// member: leaving rebalances the group at once.
fn start(app: &str, instance: &str, topology: Counting) -> Pipeline {
    let state = tempfile::tempdir().expect("temp dir");
    let mut config = RuntimeConfig::new(app, kafka(), state.path().to_path_buf());
    config.instance_id = instance.to_owned();
    config.static_membership = false;
    // Batches that gather for long: a rebalance almost always comes while records fetched
    // before it are buffered, and the consumer then fetches them again from the committed
    // offsets.
    config.max_batch = 5_000;
    config.batch_linger = Duration::from_millis(300);
    let runtime = Runtime::new(config, topology).expect("runtime starts");
    Pipeline::run(runtime, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_and_leaving_under_load_changes_nothing_in_what_is_done() {
    let topics = TestTopics::create("rebalance", 4).await;
    let inputs = vec![topics.po_events.clone(), topics.grn_events.clone()];
    let output = topics.invoice_matched.clone();
    let counting = || Counting {
        inputs: inputs.clone(),
        output: output.clone(),
    };
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());

    // The records stream in while the group changes, a slice every 10 ms.
    let producer = erp_producer(&kafka()).expect("producer");
    let orgs: Vec<String> = (1..=ORGS)
        .map(|i| OrgId::from_u128(i).as_str().to_owned())
        .collect();
    let feed = {
        let (inputs, orgs) = (inputs.clone(), orgs.clone());
        tokio::spawn(async move {
            for slice in 0..RECORDS / 10 {
                for i in 0..10 {
                    let n = slice * 10 + i;
                    let org = &orgs[n % orgs.len()];
                    for topic in &inputs {
                        producer
                            .send(
                                FutureRecord::to(topic).key(org).payload("x"),
                                Duration::from_secs(30),
                            )
                            .await
                            .expect("produced");
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let first = start(&app, "first", counting());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for join in 0..JOINS {
        let second = start(&app, &format!("second-{join}"), counting());
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        second.stop().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    feed.await.expect("fed");

    let expected = RECORDS * inputs.len();
    let read = || read_topic(&kafka(), &output, Duration::from_secs(30)).expect("read");
    poll(
        "an output for every input record",
        || async { read().len() },
        |n| *n >= expected,
    )
    .await;
    first.stop().await;
    let outputs = read();

    let mut per_input: BTreeMap<String, usize> = BTreeMap::new();
    let mut counts: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for record in &outputs {
        use rdkafka::Message;
        let text = String::from_utf8(record.payload().expect("payload").to_vec()).expect("text");
        let (input, count) = text.split_once(' ').expect("<input> <count>");
        *per_input.entry(input.to_owned()).or_default() += 1;
        counts
            .entry(record.key().expect("key").to_vec())
            .or_default()
            .push(count.parse().expect("a count"));
    }
    let twice: Vec<_> = per_input.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "input records processed twice: {twice:?}");
    assert_eq!(per_input.len(), expected, "every input record is processed");
    for (org, mut seen) in counts {
        seen.sort_unstable();
        let n = seen.len() as u64;
        assert_eq!(
            seen,
            (1..=n).collect::<Vec<_>>(),
            "org {}: each record counted once, on the state all earlier ones left",
            String::from_utf8_lossy(&org)
        );
    }
}
