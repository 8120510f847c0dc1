//! Crash tests on the real broker. The whole pipeline runs as operators run it (the `p2p run`
//! binary, all three topologies in one process), fed a generated stream, and is killed with
//! SIGKILL at random instants, restarted, sometimes with its local state directory deleted.
//! At the end a read_committed consumer checks what came out:
//! - every invoice, PO and requisition ended as the generator planted it (what a clean single
//!   run ends in: the demo and the end-to-end tests check that), and every matched invoice was
//!   instructed for payment once, for its exact amount;
//! - nothing was done twice: no outcome revision, PO status version or lifecycle transition
//!   twice, no refusal more than planned, one dead letter per bad record;
//! - each restart replayed only the changelog's tail, unless its state directory was gone.
//!
//! CI runs a few kills. Soak: `P2P_CRASH_KILLS=40 cargo test --test crash -- --nocapture`.
//! `P2P_CRASH_KEEP=<dir>` keeps each run's configurations, logs and state there (and the own
//! broker's data) for a post-mortem.
//! `P2P_CRASH_SEED=<seed>` replays a run's stream and the instants it was killed at (its report
//! names the seed); the machine's timing still differs from run to run.
//! `P2P_CRASH_GUARANTEE=at_least_once` runs the same tests on the weakened runtime (outputs,
//! state and input offsets each committed on their own), which they must catch.

mod common;

use common::{kafka, poll, registry_codec, services, state_left_behind, TestTopics, PATIENCE};
use p2p_avro::convert::procurement::{AuditKind, AuditRecord, PoStatusRecord};
use p2p_avro::Codec;
use p2p_loadtest::audit::{
    audit, audit_lifecycles, audit_payments, audit_requisitions, paid_by_credit, read_outputs,
    read_payments, read_procurement, read_topic,
};
use p2p_loadtest::generator::Payload;
use p2p_loadtest::produce::{erp_producer, produce_records};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_topologies::admin::delete_topic_names;
use p2p_topologies::{KafkaProperties, Topics};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPOLOGIES: [&str; 3] = ["procurement", "match", "payment"];
/// Partitions of every topic of the crash tests.
const PARTITIONS: i32 = 4;

/// How many times the pipeline is killed (`P2P_CRASH_KILLS`, default: CI's few).
fn kills() -> usize {
    std::env::var("P2P_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(6)
}

/// `exactly_once` unless `P2P_CRASH_GUARANTEE` says otherwise.
fn guarantee() -> String {
    std::env::var("P2P_CRASH_GUARANTEE").unwrap_or_else(|_| "exactly_once".into())
}

/// One application (its id, topics, configuration, state directories and logs), run as
/// separate `p2p run` processes, one per instance.
struct App {
    id: String,
    kafka: KafkaProperties,
    topics: Topics,
    guarantee: String,
    dir: tempfile::TempDir,
    /// `session.timeout.ms` of its consumers.
    session_timeout_ms: u32,
}

/// One `p2p run` process.
struct Process {
    child: Child,
    log: PathBuf,
    instance: String,
    /// Which start of its instance it is.
    run: usize,
    /// Whether its instance's state directory was deleted before it started.
    wiped: bool,
    /// What a full restore would have replayed when it started.
    changelog_records: u64,
}

impl App {
    fn new(kafka: KafkaProperties, topics: &Topics) -> App {
        App {
            id: format!(
                "p2p-crash-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            kafka,
            topics: topics.clone(),
            guarantee: guarantee(),
            dir: tempfile::tempdir().expect("temp dir"),
            // An instance killed for good gives its partitions up this soon (the broker's
            // minimum); restarted sooner, it gets them back with no rebalance (static
            // membership).
            session_timeout_ms: 6_000,
        }
    }

    fn state_dir(&self, instance: &str) -> PathBuf {
        self.dir.path().join(format!("state-{instance}"))
    }

    /// The configuration file of one instance.
    fn config(&self, instance: &str) -> PathBuf {
        let mut kafka = self.kafka.clone();
        kafka.insert(
            "session.timeout.ms".into(),
            self.session_timeout_ms.to_string(),
        );
        if let Ok(debug) = std::env::var("P2P_CRASH_KAFKA_DEBUG") {
            // librdkafka's debug contexts (e.g. `cgrp`), for a post-mortem.
            kafka.insert("debug".into(), debug);
        }
        let mut config = toml::Table::new();
        config.insert("application_id".into(), self.id.clone().into());
        config.insert(
            "state_dir".into(),
            self.state_dir(instance).display().to_string().into(),
        );
        config.insert(
            "schema_registry_url".into(),
            services().registry_url.clone().into(),
        );
        config.insert("metrics_addr".into(), "127.0.0.1:0".into());
        config.insert("instance_id".into(), instance.into());
        config.insert("processing_guarantee".into(), self.guarantee.clone().into());
        config.insert(
            "kafka".into(),
            toml::Value::try_from(&kafka).expect("kafka properties"),
        );
        config.insert(
            "topics".into(),
            toml::Value::try_from(&self.topics).expect("topics"),
        );
        let path = self.dir.path().join(format!("{instance}.toml"));
        std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("config written");
        path
    }

    /// Starts instance `instance` (its `run`-th start), its state directory deleted first if
    /// `wipe`.
    fn start(&self, instance: &str, run: usize, wipe: bool) -> Process {
        if wipe {
            let _ = std::fs::remove_dir_all(self.state_dir(instance));
        }
        let changelog_records = self.changelog_records();
        let log = self.dir.path().join(format!("{instance}-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_p2p"))
            .args(["run", "--config"])
            .arg(self.config(instance))
            .env(
                "RUST_LOG",
                std::env::var("P2P_CRASH_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("p2p run starts");
        Process {
            child,
            log,
            instance: instance.to_owned(),
            run,
            wiped: wipe,
            changelog_records,
        }
    }

    /// The records of every store's changelog (0 for one not created yet).
    fn changelog_records(&self) -> u64 {
        self.changelogs()
            .iter()
            .map(|topic| {
                read_topic(&self.kafka, topic, Duration::from_secs(30))
                    .map_or(0, |r| r.len() as u64)
            })
            .sum()
    }

    /// `p2p admin grow-partitions --to <to>`, run again while the last growth is under way
    /// (it refuses a new one until then).
    async fn grow(&self, to: u32) {
        let started = Instant::now();
        loop {
            let output = Command::new(env!("CARGO_BIN_EXE_p2p"))
                .args(["admin", "grow-partitions", "--config"])
                .arg(self.config("admin"))
                .args(["--to", &to.to_string()])
                .output()
                .expect("p2p admin grow-partitions runs");
            if output.status.success() {
                return;
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("has not finished") && started.elapsed() < PATIENCE,
                "growing to {to}: {stderr}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn changelogs(&self) -> Vec<String> {
        TOPOLOGIES
            .iter()
            .map(|t| format!("{}-{t}-{t}-changelog", self.id))
            .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(keep) = std::env::var("P2P_CRASH_KEEP") {
            // Configurations, logs and state, for a post-mortem.
            let to = Path::new(&keep).join(&self.id);
            let _ = std::fs::create_dir_all(&keep);
            let _ = Command::new("cp")
                .arg("-r")
                .arg(self.dir.path())
                .arg(&to)
                .status();
            eprintln!("kept {} in {}", self.id, to.display());
        }
        if std::env::var_os("P2P_KEEP_TOPICS").is_some() {
            return;
        }
        let mut changelogs = self.changelogs();
        changelogs.extend(TOPOLOGIES.iter().map(|t| format!("{}-{t}-growth", self.id)));
        let kafka = self.kafka.clone();
        let _ = std::thread::spawn(move || {
            futures::executor::block_on(delete_topic_names(&kafka, &changelogs))
        })
        .join();
    }
}

/// What one process did before it ended.
#[derive(Debug)]
struct Ended {
    instance: String,
    run: usize,
    /// The end of its log, for a failure's message.
    log_tail: String,
    wiped: bool,
    /// Changelog records it replayed into its stores when it started.
    restored: u64,
    /// Whether every topology finished restoring (killed before, it leaves work to the next).
    restored_all: bool,
    /// What a full restore would have replayed when it started.
    changelog_records: u64,
    /// Its exit status (`None`: killed).
    exit: Option<std::process::ExitStatus>,
}

impl Process {
    /// SIGKILL: no shutdown, no flush, an open transaction left as it was.
    fn kill(mut self) -> Ended {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.ended(None)
    }

    /// SIGTERM, as an orchestrator stops a pod, and waits for it to finish.
    fn terminate(mut self) -> Ended {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("waiting for p2p run");
        self.ended(Some(status))
    }

    /// Its `/metrics` address, from the line its log starts with.
    fn metrics_url(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let addr = log
            .lines()
            .find_map(|l| l.split("serving=").nth(1))
            .map(|a| a.split_whitespace().next().unwrap_or(a).to_owned())
            .unwrap_or_else(|| panic!("no metrics address in {}:\n{log}", self.log.display()));
        format!("http://{addr}/metrics")
    }

    /// Still running (a process that ended on its own failed).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "p2p run ({}) ended on its own ({status}):\n{}",
                self.instance,
                tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
            );
        }
    }

    fn ended(&self, exit: Option<std::process::ExitStatus>) -> Ended {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Ended {
            instance: self.instance.clone(),
            run: self.run,
            log_tail: tail(&log),
            wiped: self.wiped,
            restored: restored(&log),
            restored_all: restored_all(&log),
            changelog_records: self.changelog_records,
            exit,
        }
    }
}

/// Whether a process's log says every topology restored every partition (its workers each
/// log the partitions they restored: one line per topology is not enough).
fn restored_all(log: &str) -> bool {
    let mut restored: std::collections::HashMap<&str, std::collections::BTreeSet<i32>> =
        std::collections::HashMap::new();
    for line in log.lines().filter(|l| l.contains("store restored")) {
        let Some(topology) = line
            .split("topology=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let partitions = line
            .split("partitions=[")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or("");
        restored.entry(topology).or_default().extend(
            partitions
                .split(',')
                .filter_map(|p| p.trim().parse::<i32>().ok()),
        );
    }
    TOPOLOGIES.iter().all(|topology| {
        restored
            .get(topology)
            .is_some_and(|partitions| (0..PARTITIONS).all(|p| partitions.contains(&p)))
    })
}

/// The changelog records a process's log says it restored.
fn restored(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("store restored"))
        .filter_map(|l| l.split("applied=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The scenario for crash runs: every kind of document and outcome, small enough for CI.
fn scenario(seed: u64) -> Scenario {
    Scenario::generate(&GeneratorConfig {
        seed,
        orgs: 4,
        pos_per_org: 20,
        undecodable_records: 2,
        ..GeneratorConfig::default()
    })
}

/// What every crash run starts with: topics of its own, a scenario seeded at random (the seed
/// is in the report, to replay a failure), and, returned with it, the application to run on
/// them and the random instants it is killed at, drawn from the same seed.
struct CrashRun {
    kafka: KafkaProperties,
    topics: TestTopics,
    codec: Arc<Codec>,
    seed: u64,
    scenario: Scenario,
}

impl CrashRun {
    async fn new(kafka: KafkaProperties, test: &str) -> (CrashRun, App, rand_chacha::ChaCha8Rng) {
        let topics = TestTopics::create_on(kafka.clone(), test, PARTITIONS).await;
        keep_status_history(&kafka, &topics.po_status).await;
        let seed: u64 = std::env::var("P2P_CRASH_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        let app = App::new(kafka.clone(), &topics);
        let run = CrashRun {
            kafka,
            codec: registry_codec(),
            scenario: scenario(seed),
            topics,
            seed,
        };
        (run, app, rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    /// Feeds the scenario as a steady stream (see [`feed`]).
    fn feed(&self, gate: Option<Arc<tokio::sync::Mutex<()>>>) -> tokio::task::JoinHandle<()> {
        feed(
            &self.kafka,
            &self.scenario,
            &self.topics,
            self.codec.clone(),
            gate,
        )
    }

    /// Waits until `running` agrees with the plan, stops them (SIGTERM, in their order), and
    /// reports the run: the processes killed before (`ended`) and these.
    async fn finish(&self, what: &str, mut ended: Vec<Ended>, mut running: Vec<Process>) {
        let mut settling: Vec<&mut Process> = running.iter_mut().collect();
        let outcome = settle(
            &self.kafka,
            &self.scenario,
            &self.topics,
            &self.codec,
            &mut settling,
        )
        .await;
        ended.extend(running.into_iter().map(Process::terminate));
        report(&format!("{what} (seed {})", self.seed), &ended, &outcome);
    }
}

/// Compaction keeps only each PO's latest status: a status version written twice, or an old
/// one written again after a newer, would be gone before the checks look. The crash runs'
/// `po-status` compacts nothing younger than a day, so they see every status committed.
async fn keep_status_history(kafka: &KafkaProperties, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        p2p_topologies::admin::client_config(kafka)
            .create()
            .expect("admin client");
    // AlterConfigs replaces the topic's whole configuration: what topic creation set too.
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("min.compaction.lag.ms", "86400000");
    let results = admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .expect("alter configs");
    for result in results {
        result.expect("po-status keeps its history");
    }
}

/// Feeds `scenario` as a steady stream: a fortieth of it every half second. With a `gate`,
/// each slice is sent holding it, by a producer made for the slice (one that knows the
/// topics' partition counts as they are then).
fn feed(
    kafka: &KafkaProperties,
    scenario: &Scenario,
    topics: &Topics,
    codec: Arc<Codec>,
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
) -> tokio::task::JoinHandle<()> {
    let (slices, pause) = (40, Duration::from_millis(500));
    let records = scenario.records.clone();
    let (kafka, topics) = (kafka.clone(), topics.clone());
    tokio::spawn(async move {
        let mut producer = erp_producer(&kafka).expect("producer");
        let size = records.len().div_ceil(slices);
        for slice in records.chunks(size) {
            let held = match &gate {
                Some(gate) => {
                    let held = gate.clone().lock_owned().await;
                    producer = erp_producer(&kafka).expect("producer");
                    Some(held)
                }
                None => None,
            };
            produce_records(&producer, &codec, &topics, slice)
                .await
                .expect("produced");
            drop(held);
            tokio::time::sleep(pause).await;
        }
    })
}

/// What the pipeline wrote, as a read_committed consumer sees it.
#[derive(Debug)]
struct Outcome {
    /// Every way the run disagrees with the plan.
    disagreements: Vec<String>,
    /// Every output done twice.
    twice: Vec<String>,
}

async fn read_outcome(
    kafka: &KafkaProperties,
    scenario: &Scenario,
    topics: &Topics,
    codec: &Codec,
) -> Outcome {
    let timeout = Duration::from_secs(30);
    let kafka = kafka.clone();
    let observed = read_outputs(&kafka, codec, topics, timeout)
        .await
        .expect("match outputs");
    let procurement = read_procurement(&kafka, codec, topics, timeout)
        .await
        .expect("procurement outputs");
    let payments = read_payments(&kafka, codec, topics, timeout)
        .await
        .expect("payment outputs");
    let mut disagreements = audit(&scenario.planted, &observed).disagreements;
    disagreements.extend(audit_lifecycles(
        &scenario.lifecycles,
        &procurement,
        &paid_by_credit(&observed, &payments),
    ));
    disagreements.extend(audit_requisitions(&scenario.requisitions, &procurement));
    disagreements.extend(audit_payments(&observed, &payments));
    let bad_records = scenario
        .records
        .iter()
        .filter(|r| matches!(r.payload, Payload::Garbage(_)))
        .count();
    if observed.dead_letters.len() < bad_records {
        disagreements.push(format!(
            "{} dead letters, {bad_records} bad records sent",
            observed.dead_letters.len()
        ));
    }

    let mut twice = Vec::new();
    if observed.dead_letters.len() > bad_records {
        twice.push(format!(
            "{} dead letters for {bad_records} bad records",
            observed.dead_letters.len()
        ));
    }
    // An outcome is decided once per revision, whichever topic it is on.
    for invoice in observed.matched.keys().chain(observed.exceptions.keys()) {
        let mut revisions: Vec<u32> = observed
            .matched
            .get(invoice)
            .into_iter()
            .flatten()
            .map(|m| m.revision)
            .chain(
                observed
                    .exceptions
                    .get(invoice)
                    .into_iter()
                    .flatten()
                    .map(|e| e.revision),
            )
            .collect();
        revisions.sort_unstable();
        let distinct = revisions.iter().collect::<BTreeSet<_>>().len();
        if distinct != revisions.len() {
            twice.push(format!("{invoice}: outcome revisions {revisions:?}"));
        }
    }
    let refused = procurement.refusals.len();
    if refused > scenario.refusals {
        twice.push(format!(
            "{refused} refusals, {} planned: {:?}",
            scenario.refusals, procurement.refusals
        ));
    }
    twice.extend(versions_twice(&kafka, codec, topics).await);
    Outcome {
        disagreements,
        twice,
    }
}

/// Every record of `topic` a read_committed consumer sees, decoded with `from_value`, with
/// where it is (partition@offset), in order.
async fn committed<T, E: std::fmt::Debug>(
    kafka: &KafkaProperties,
    codec: &Codec,
    topic: &str,
    from_value: impl Fn(&apache_avro::types::Value) -> Result<T, E>,
) -> Vec<(T, String)> {
    use rdkafka::Message;
    let mut records = Vec::new();
    for message in read_topic(kafka, topic, Duration::from_secs(30)).expect("read") {
        let value = codec.decode(message.payload()).await.expect("decodes");
        let at = format!("{}@{}", message.partition(), message.offset());
        records.push((from_value(&value).expect("a record of the topic"), at));
    }
    records
}

/// PO statuses and lifecycle transitions written more than once for one version, and PO
/// statuses written after a newer one of their PO.
async fn versions_twice(kafka: &KafkaProperties, codec: &Codec, topics: &Topics) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for (status, at) in committed(kafka, codec, &topics.po_status, PoStatusRecord::from_value).await
    {
        // A PO's statuses share its key, so one partition holds them in the order written;
        // once the partitions grow, its later ones go to its new partition (readers take
        // the highest version, README): the order holds per partition.
        let partition = at.split('@').next().unwrap_or_default();
        let before = latest.insert(format!("{}@{partition}", status.key()), status.version);
        if let Some(before) = before.filter(|v| *v >= status.version) {
            out_of_order.push(format!(
                "{} status v{} written after v{before} (at po-status {at})",
                status.po, status.version,
            ));
        }
        *seen
            .entry(format!("{} status v{}", status.po, status.version))
            .or_default() += 1;
    }
    for (entry, _) in committed(kafka, codec, &topics.audit_events, AuditRecord::from_value).await {
        if entry.kind == AuditKind::Transitioned {
            *seen
                .entry(format!("{} transition to v{}", entry.entity, entry.version))
                .or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(what, n)| format!("{what} written {n} times"))
        .chain(out_of_order)
        .collect()
}

/// For the post-mortem, each PO whose status disagrees with the plan: every status and audit
/// event of it committed, where it is (partition@offset), in order.
async fn stale_po_histories(
    kafka: &KafkaProperties,
    scenario: &Scenario,
    topics: &Topics,
    codec: &Codec,
    outcome: &Outcome,
) -> Vec<String> {
    use p2p_processors::DocumentRef;
    let stale: BTreeSet<String> = scenario
        .lifecycles
        .keys()
        .map(|po| po.to_string())
        .filter(|po| {
            let prefix = format!("{po}:");
            outcome.disagreements.iter().any(|d| d.starts_with(&prefix))
        })
        .collect();
    let mut history = Vec::new();
    if stale.is_empty() {
        return history;
    }
    for (status, at) in committed(kafka, codec, &topics.po_status, PoStatusRecord::from_value).await
    {
        if stale.contains(&status.po.to_string()) {
            history.push(format!(
                "history of {}: status {:?} v{} at po-status {at}",
                status.po, status.state, status.version,
            ));
        }
    }
    for (entry, at) in committed(kafka, codec, &topics.audit_events, AuditRecord::from_value).await
    {
        if let DocumentRef::PurchaseOrder(po) = &entry.entity {
            if stale.contains(&po.to_string()) {
                history.push(format!(
                    "history of {po}: {:?} {} {:?} -> {:?} v{} at audit-events {at}",
                    entry.kind, entry.action, entry.from_state, entry.to_state, entry.version,
                ));
            }
        }
    }
    history
}

/// Waits until the run agrees with the plan (or [`PATIENCE`] runs out), with `running` still
/// up, and returns what it wrote.
async fn settle(
    kafka: &KafkaProperties,
    scenario: &Scenario,
    topics: &Topics,
    codec: &Codec,
    running: &mut [&mut Process],
) -> Outcome {
    let started = Instant::now();
    loop {
        for process in running.iter_mut() {
            process.assert_running();
        }
        let mut outcome = read_outcome(kafka, scenario, topics, codec).await;
        if outcome.disagreements.is_empty() {
            return outcome;
        }
        if started.elapsed() > PATIENCE {
            outcome
                .disagreements
                .extend(stale_po_histories(kafka, scenario, topics, codec, &outcome).await);
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The report of a crash run, printed (see it with `--nocapture`) and checked.
fn report(what: &str, ended: &[Ended], outcome: &Outcome) {
    println!("{what}:");
    for e in ended {
        println!(
            "  {} start {}: state {}, replayed {} of {} changelog records{}, {}",
            e.instance,
            e.run,
            if e.wiped { "deleted" } else { "kept" },
            e.restored,
            e.changelog_records,
            if e.restored_all {
                ""
            } else {
                " (restore cut short)"
            },
            match e.exit {
                None => "killed (SIGKILL)".to_owned(),
                Some(status) => format!("stopped by SIGTERM: {status}"),
            }
        );
    }
    // A restart on kept state replays only the tail the crash left: at most the changes
    // the run before it committed, never what that run had restored already (unless it was
    // killed while still restoring).
    for pair in ended.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if after.wiped || !before.restored_all || before.instance != after.instance {
            continue;
        }
        let committed_by_before = after
            .changelog_records
            .saturating_sub(before.changelog_records);
        assert!(
            after.restored <= committed_by_before,
            "{what}: a restart on kept state replayed {} changelog records, more than the \
             {committed_by_before} its predecessor committed: {after:?}",
            after.restored
        );
    }
    assert!(
        outcome.disagreements.is_empty(),
        "{what}: the run does not end as planned: {:#?}\nthe last log:\n{}",
        outcome.disagreements,
        ended.last().map_or("", |e| e.log_tail.as_str())
    );
    assert!(
        outcome.twice.is_empty(),
        "{what}: done twice: {:#?}",
        outcome.twice
    );
    let last = ended.last().expect("a run");
    assert!(
        last.exit.is_some_and(|s| s.success()),
        "{what}: SIGTERM ends the pipeline cleanly: {last:?}"
    );
}

// Twice in CI's full run it ended with two POs' statuses stale (`Issued v1`, planned
// `Invoiced v5`). The same kind of failure, with the history a stale PO now gets printed,
// showed a PO's issue processed before its approvals had been fetched: the partition group
// had not waited for them (ADR 0009). Soak: `P2P_CRASH_KILLS=40`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_instants_the_pipeline_loses_nothing_and_does_nothing_twice() {
    let (run, app, mut rng) = CrashRun::new(kafka(), "crash").await;
    let feeding = run.feed(None);
    let mut ended = Vec::new();
    let exactly_once = app.guarantee == "exactly_once";
    for start in 0..kills() {
        // Every third restart on an empty state directory (a new disk, a new pod): only the
        // changelog holds its state then. At least once keeps no changelog to restore from.
        let wipe = exactly_once && start % 3 == 2;
        let mut process = app.start("a", start, wipe);
        let alive = Duration::from_millis(rng.random_range(2_000..6_000));
        tokio::time::sleep(alive).await;
        process.assert_running();
        ended.push(process.kill());
    }
    feeding.await.expect("fed");
    let last = app.start("a", kills(), false);
    run.finish(&format!("{} kills", kills()), ended, vec![last])
        .await;
}

// This test found a real violation: requisition events processed a second time against state
// that already held their effect. The likely cause, proven by tests/rebalance.rs: a rebalance
// puts every partition it assigns back to its committed offset, and the runtime still held
// records of those partitions fetched before it. It now forgets them (and the partitions'
// restored stores) on every revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_mid_rebalance_leave_nothing_lost_or_done_twice() {
    let (run, app, mut rng) = CrashRun::new(kafka(), "rebalance").await;
    let feeding = run.feed(None);
    let mut pause = |from_ms, to_ms| Duration::from_millis(rng.random_range(from_ms..to_ms));
    let mut ended = Vec::new();

    // a works alone; b joins, and a is killed while the group rebalances to share the
    // partitions with b. b gets them all once a's session times out.
    let a = app.start("a", 0, false);
    tokio::time::sleep(pause(3_000, 6_000)).await;
    let mut b = app.start("b", 0, false);
    tokio::time::sleep(pause(500, 3_000)).await;
    ended.push(a.kill());
    tokio::time::sleep(pause(4_000, 9_000)).await;
    // a comes back (its state kept), and b is killed in that rebalance.
    b.assert_running();
    let mut a = app.start("a", 1, false);
    tokio::time::sleep(pause(500, 3_000)).await;
    ended.push(b.kill());
    tokio::time::sleep(pause(2_000, 6_000)).await;
    // b comes back on an empty disk; both run to the end.
    a.assert_running();
    let b = app.start("b", 1, true);
    feeding.await.expect("fed");
    run.finish("two instances killed mid-rebalance", ended, vec![b, a])
        .await;
}

// Issue 28: a planned stop (SIGTERM, as a scale-in or `kubectl scale` stops a pod) hands the
// instance's partitions over at once. A static member's close keeps its place until its
// session times out (KIP-345; 43 s measured before this), so the runtime leaves its groups
// first (ADR 0026). The moment `b` has exited no group lists it, and `a` goes on with every
// partition: the audit checks that nothing of `b`'s share was lost or done twice. The pause
// itself is measured by `p2p bench --phases scale` (docs/benchmarks.md), never timed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_stopped_gracefully_leaves_its_groups_at_once_and_loses_nothing() {
    let (run, mut app, _) = CrashRun::new(kafka(), "leave").await;
    // librdkafka's default: were b not to leave, the groups would list it this long after.
    app.session_timeout_ms = 45_000;
    let feeding = run.feed(None);
    let a = app.start("a", 0, false);
    let mut b = app.start("b", 0, false);
    let groups: Vec<String> = TOPOLOGIES
        .iter()
        .map(|t| format!("{}-{t}", app.id))
        .collect();
    let kafka = run.kafka.clone();
    poll(
        "both instances in every topology's group",
        || async { members(&kafka, &groups) },
        |members| {
            members.values().all(|m| {
                m.iter().any(|id| id.starts_with("a")) && m.iter().any(|id| id.starts_with("b"))
            })
        },
    )
    .await;
    b.assert_running();
    let stopped = b.terminate();
    assert!(
        stopped.exit.is_some_and(|status| status.success()),
        "b stops cleanly: {}",
        stopped.log_tail
    );
    let left = members(&run.kafka, &groups);
    for (group, members) in &left {
        assert!(
            members.iter().all(|id| !id.starts_with("b")),
            "b exited but {group} still lists it (its partitions would wait for the session \
             timeout): {members:?}\n{}",
            stopped.log_tail
        );
    }
    assert!(
        stopped.log_tail.contains("left the group"),
        "b says it left: {}",
        stopped.log_tail
    );
    feeding.await.expect("fed");
    // Issue 28: every pipeline metric the deployment's alerts and dashboard name is one a
    // running instance exports, once it has processed the stream (bad records included).
    let named = common::metrics_named_by_deploy("p2p_");
    let named: BTreeSet<String> = named
        .into_iter()
        .filter(|n| !n.starts_with("p2p_bank_"))
        .collect();
    let scrape = a.metrics_url();
    poll(
        "every metric the alerts and dashboard name, on a's /metrics",
        || async {
            let text = match reqwest::get(&scrape).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            common::missing_from(&text, &named)
        },
        Vec::is_empty,
    )
    .await;
    // And every label they group, select or print by is one of those metrics' labels.
    let text = reqwest::get(&scrape).await.unwrap().text().await.unwrap();
    let queries = common::queries_of_deploy();
    assert!(queries.len() >= 20, "{queries:#?}");
    assert_eq!(
        common::labels_missing_from(&text, &queries),
        Vec::<String>::new()
    );
    run.finish("b stopped gracefully mid-stream", vec![stopped], vec![a])
        .await;
}

/// The member ids of each of `groups` (a static member's id starts with its instance id).
fn members(kafka: &KafkaProperties, groups: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut config = rdkafka::ClientConfig::new();
    for (key, value) in kafka {
        config.set(key, value);
    }
    let client: rdkafka::consumer::BaseConsumer = config.create().expect("a consumer");
    groups
        .iter()
        .map(|group| {
            let listed = rdkafka::consumer::Consumer::fetch_group_list(
                &client,
                Some(group),
                Duration::from_secs(10),
            )
            .map(|list| {
                list.groups()
                    .iter()
                    .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("(not listed: {e})")]);
            (group.clone(), listed)
        })
        .collect()
}

// Issue 25: the partitions grow twice while ERPs publish, 4 -> 8 (a multiple) and then 8 -> 12
// (not one), under three instances, two of them killed (SIGKILL) at random instants during each
// growth and restarted: every old partition's state moves once, in its transaction, whoever
// holds it when. The ERPs pause while the command runs and learn the new count before they go
// on: records an ERP sends to an org's old partition after the growth (stragglers) are
// forwarded and may be decided after a later record of the org (ADR 0025), which could change
// an outcome; tests/e2e_match.rs forwards one and checks it.
//
// It found records forwarded under an old count and group assignments made on old counts,
// then (its one-instance variant) an org's state lost when the instance that had moved its old
// partition restarted (the signature of an earlier failure here, seed 3639513001144976308: a
// move that moved 0 keys), and an instance started mid-growth refusing its half-grown inputs.
// Then, one run in six to twelve: a partition taken for ready without the state that had
// arrived for it (another read of the growth log had seen it in first: payments never
// instructed, seed 1051886964241388384; invoices decided twice, seed 7734633127419164957),
// grown partitions assigned to nobody after a restart within the session timeout (seed
// 1105292404729639973), and a topology started as the topics grew dead-lettering its backlog.
// All fixed (ADR 0025); both variants then passed 14 runs in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grown_twice_under_three_instances_and_kill_9_lose_nothing() {
    grown_twice_under_kill_9("grow", &["a", "b", "c"]).await;
}

// The same under one instance, killed twice during each growth: every move is made by the
// instance that restarts, from its own store or from the changelog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grown_twice_under_one_instance_and_kill_9_lose_nothing() {
    grown_twice_under_kill_9("grow-one", &["a"]).await;
}

async fn grown_twice_under_kill_9(test: &str, instances: &[&str]) {
    let (run, app, mut rng) = CrashRun::new(kafka(), test).await;
    if app.guarantee != "exactly_once" {
        return; // at least once, a growth stops the runtimes (README)
    }
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let feeding = run.feed(Some(gate.clone()));
    let mut running: Vec<Process> = instances.iter().map(|i| app.start(i, 0, false)).collect();
    let mut starts = vec![1usize; instances.len()];
    let mut ended = Vec::new();
    for to in [8, 12] {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        {
            let _paused = gate.lock().await;
            app.grow(to).await;
        }
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..3_000))).await;
            let victim = rng.random_range(0..instances.len());
            let mut killed = running.remove(victim);
            killed.assert_running();
            ended.push(killed.kill());
            running.insert(victim, app.start(instances[victim], starts[victim], false));
            starts[victim] += 1;
        }
    }
    feeding.await.expect("fed");
    run.finish(
        &format!(
            "grown 4 -> 8 -> 12 under {} instance(s), four kills",
            instances.len()
        ),
        ended,
        running,
    )
    .await;
    for changelog in app.changelogs() {
        let left = state_left_behind(&kafka(), &changelog, 12);
        assert!(left.is_empty(), "{changelog}: state left behind: {left:?}");
    }
}

/// A broker of the test's own (so restarting it disturbs no other test), started by the
/// project's script on other ports, its data deleted when the test ends.
struct OwnBroker {
    port: u16,
}

impl OwnBroker {
    const PORT: u16 = 19092;

    fn script(&self, command: &str) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("bash")
            .arg(root.join("deploy/local/kafka.sh"))
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .status()
            .expect("kafka.sh runs");
        assert!(status.success(), "kafka.sh {command} on port {}", self.port);
    }

    fn start() -> OwnBroker {
        let broker = OwnBroker { port: Self::PORT };
        broker.script("reset");
        broker.script("start");
        broker
    }

    fn kafka(&self) -> KafkaProperties {
        let mut kafka = KafkaProperties::new();
        kafka.insert(
            "bootstrap.servers".into(),
            format!("127.0.0.1:{}", self.port),
        );
        kafka
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if std::env::var("P2P_CRASH_KEEP").is_err() {
            self.script("reset");
        }
    }
}

// It stalled after the broker came back in about one run in three (nothing lost or done twice,
// but no progress). Causes found and fixed: queued consumer errors each waited out with
// backoff; one runtime's restore stuck asking for a partition's end, holding up all three on
// their shared task (ADR 0009: a task each, and a stalled restore starts again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing_and_does_nothing_twice() {
    let broker = OwnBroker::start();
    let kafka = broker.kafka();
    let (run, app, mut rng) = CrashRun::new(kafka.clone(), "broker").await;
    // The first half while the broker is up; the rest once it is back.
    let half = run.scenario.records.len() / 2;
    let (first, rest) = run.scenario.records.split_at(half);
    let producer = erp_producer(&kafka).expect("producer");
    produce_records(&producer, &run.codec, &run.topics, first)
        .await
        .expect("produced");
    let pipeline = app.start("a", 0, false);
    tokio::time::sleep(Duration::from_millis(rng.random_range(4_000..8_000))).await;
    // Stopped and started again under the running pipeline: its transactions fail, its
    // producer may be fenced, its consumers lose the coordinator.
    broker.script("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.script("start");
    produce_records(&producer, &run.codec, &run.topics, rest)
        .await
        .expect("produced");
    run.finish("a broker restart mid-run", Vec::new(), vec![pipeline])
        .await;
}

#[test]
fn a_restore_counts_as_whole_only_when_every_topology_restored_every_partition() {
    let line = |topology: &str, partitions: &str| {
        format!(
            "2026-12-04T21:56:52Z  INFO store restored topology=\"{topology}\" \
             changelog=x-{topology}-changelog partitions=[{partitions}] applied=3 seconds=0.1\n"
        )
    };
    let mut log = String::new();
    for topology in TOPOLOGIES {
        log.push_str(&line(topology, "0, 1"));
    }
    // One worker of each topology done, the other not yet.
    assert!(!restored_all(&log));
    for topology in TOPOLOGIES {
        log.push_str(&line(topology, "2, 3"));
    }
    assert!(restored_all(&log));
    assert_eq!(restored(&log), 18);
}

#[test]
fn a_label_the_deployment_names_but_the_exporter_lacks_is_found() {
    let queries = common::queries_of_deploy();
    let panel = queries
        .iter()
        .find(|q| q.metrics.contains("p2p_records_in_total") && q.labels.contains("topology"))
        .expect("a panel of records in by topology");
    let alert = queries
        .iter()
        .find(|q| q.what == "alert P2PDeadLettersArriving")
        .expect("the dead letters alert");
    assert!(alert.labels.contains("reason") && alert.labels.contains("topology"));
    assert!(!alert.labels.iter().any(|l| l.contains(' ')), "{alert:?}");
    let scraped = |label: &str| {
        format!(
            "# TYPE p2p_records_in_total counter\np2p_records_in_total{{{label}=\"match\",topic=\"x\"}} 3\n"
        )
    };
    assert!(!common::labels_missing_from(&scraped("topology"), &queries)
        .iter()
        .any(|m| m.starts_with(&panel.what)));
    assert!(common::labels_missing_from(&scraped("topolgy"), &queries)
        .contains(&format!("{}: topology", panel.what)));
}
