//! Shared setup of the end-to-end tests: a real Apache Kafka broker and a real schema registry
//! (started by the project's scripts under deploy/local if none is running), and per-test
//! topic names and application ids, so tests never share state.
// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use p2p_avro::Codec;
use p2p_loadtest::audit::{read_outputs, Observed};
use p2p_topologies::admin::{create_topics, delete_topics};
use p2p_topologies::spans::SpanExport;
use p2p_topologies::{
    KafkaProperties, MatchConfig, MatchProcessor, MatchRuntime, PaymentProcessor,
    ProcurementProcessor, Runtime, RuntimeConfig, Topics, Topology,
};
pub mod bank;
pub mod otlp;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

pub struct Services {
    pub bootstrap: String,
    pub registry_url: String,
}

/// The broker and registry, started once per test binary if not given by the environment
/// (`P2P_TEST_BOOTSTRAP`, `P2P_TEST_REGISTRY_URL`).
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bootstrap = std::env::var("P2P_TEST_BOOTSTRAP").unwrap_or_else(|_| {
            run_script(&root.join("deploy/local/kafka.sh"));
            "127.0.0.1:9092".into()
        });
        let registry_url = std::env::var("P2P_TEST_REGISTRY_URL").unwrap_or_else(|_| {
            run_script(&root.join("deploy/local/registry.sh"));
            "http://127.0.0.1:8081/apis/ccompat/v7".into()
        });
        Services {
            bootstrap,
            registry_url,
        }
    })
}

fn run_script(script: &Path) {
    let status = Command::new("bash")
        .arg(script)
        .arg("start")
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} start failed", script.display());
}

pub fn kafka() -> KafkaProperties {
    let mut kafka = KafkaProperties::new();
    kafka.insert("bootstrap.servers".into(), services().bootstrap.clone());
    // librdkafka's own debug contexts (`cgrp`, say), to see into a failing test's groups.
    if let Ok(debug) = std::env::var("P2P_TEST_KAFKA_DEBUG") {
        kafka.insert("debug".into(), debug);
    }
    kafka
}

pub fn registry_codec() -> Arc<Codec> {
    Arc::new(Codec::registry(&services().registry_url).expect("registry client"))
}

/// Topic names unique to one test.
pub fn unique_topics(test: &str) -> Topics {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    Topics::named(|base| format!("{base}-{test}-{suffix}"))
}

/// A test's own topics on the real broker, deleted when the test ends, passed or failed: a
/// broker loads every partition it ever had when it starts, and test runs would otherwise
/// pile up thousands of them until it no longer starts in time.
pub struct TestTopics(Topics, KafkaProperties);

impl TestTopics {
    /// Creates topics unique to `test`, each with `partitions` partitions.
    pub async fn create(test: &str, partitions: i32) -> TestTopics {
        Self::create_on(kafka(), test, partitions).await
    }

    /// The same, on the cluster `kafka` points to.
    pub async fn create_on(kafka: KafkaProperties, test: &str, partitions: i32) -> TestTopics {
        let topics = unique_topics(test);
        create_topics(&kafka, &topics, partitions, 1)
            .await
            .expect("topics");
        TestTopics(topics, kafka)
    }
}

impl std::ops::Deref for TestTopics {
    type Target = Topics;
    fn deref(&self) -> &Topics {
        &self.0
    }
}

impl Drop for TestTopics {
    fn drop(&mut self) {
        if std::env::var_os("P2P_KEEP_TOPICS").is_some() {
            eprintln!("kept the test's topics: {:?}", self.0);
            return;
        }
        // Drop cannot await, and blocking inside the test's runtime is not allowed: delete
        // from a thread of its own. A failure only leaves topics behind, so it is logged.
        let (topics, kafka) = (self.0.clone(), self.1.clone());
        let deleted =
            std::thread::spawn(move || futures::executor::block_on(delete_topics(&kafka, &topics)))
                .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the test's topics: {deleted:?}");
        }
    }
}

/// A running topology; stops (finishing its batch) when `stop` is called.
pub struct Pipeline {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<p2p_topologies::StatsSnapshot>,
    _state: tempfile::TempDir,
}

impl Pipeline {
    /// The match topology on `topics`, with its own consumer group and state.
    pub fn start(topics: &Topics, codec: Arc<Codec>) -> Pipeline {
        let (runtime, state) = Self::matching(topics, codec);
        Self::run(runtime, state)
    }

    /// The match topology, reporting to `metrics`.
    pub fn start_measured(
        topics: &Topics,
        codec: Arc<Codec>,
        metrics: Arc<p2p_topologies::Metrics>,
    ) -> Pipeline {
        let (runtime, state) = Self::matching(topics, codec);
        Self::run(runtime.with_metrics(metrics), state)
    }

    fn matching(
        topics: &Topics,
        codec: Arc<Codec>,
    ) -> (Runtime<MatchProcessor>, tempfile::TempDir) {
        let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
        Self::matching_as(&app, topics, codec)
    }

    /// The match topology as application `app` (its consumer group, transactional id and
    /// changelog), on a state directory of its own, empty at first.
    pub fn start_as(app: &str, topics: &Topics, codec: Arc<Codec>) -> Pipeline {
        let (runtime, state) = Self::matching_as(app, topics, codec);
        Self::run(runtime, state)
    }

    /// The match as application `app` with `workers` workers (each a consumer of the group),
    /// on a state directory of its own.
    pub fn start_with_workers(
        app: &str,
        topics: &Topics,
        codec: Arc<Codec>,
        workers: usize,
    ) -> Pipeline {
        let state = tempfile::tempdir().expect("temp dir");
        Self::restart_as(app, topics, codec, state, workers)
    }

    /// The match as application `app` with `workers` workers again, on the state directory
    /// an earlier run of it left ([`Pipeline::stop_keeping_state`]): a restart.
    pub fn restart_as(
        app: &str,
        topics: &Topics,
        codec: Arc<Codec>,
        state: tempfile::TempDir,
        workers: usize,
    ) -> Pipeline {
        let runtime = Self::match_runtime(app, topics, codec, &state, Some(workers));
        Self::run(runtime, state)
    }

    fn matching_as(
        app: &str,
        topics: &Topics,
        codec: Arc<Codec>,
    ) -> (Runtime<MatchProcessor>, tempfile::TempDir) {
        let state = tempfile::tempdir().expect("temp dir");
        let runtime = Self::match_runtime(app, topics, codec, &state, None);
        (runtime, state)
    }

    fn match_runtime(
        app: &str,
        topics: &Topics,
        codec: Arc<Codec>,
        state: &tempfile::TempDir,
        workers: Option<usize>,
    ) -> Runtime<MatchProcessor> {
        let mut config = MatchConfig::new(app, kafka(), state.path().to_path_buf());
        config.topics = topics.clone();
        if let Some(workers) = workers {
            config.runtime.workers = workers;
        }
        MatchRuntime::for_match(config, codec).expect("runtime starts")
    }

    /// The match topology, exporting its spans to `spans`.
    pub fn start_traced(topics: &Topics, codec: Arc<Codec>, spans: SpanExport) -> Pipeline {
        let state = tempfile::tempdir().expect("temp dir");
        let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
        let mut config = MatchConfig::new(&app, kafka(), state.path().to_path_buf());
        config.topics = topics.clone();
        config.runtime.spans = Some(spans);
        let runtime = MatchRuntime::for_match(config, codec).expect("runtime starts");
        Self::run(runtime, state)
    }

    /// The procurement topology on `topics`, looking for due timers every 100 ms.
    pub fn procurement(topics: &Topics, codec: Arc<Codec>) -> Pipeline {
        Self::procurement_traced(topics, codec, None)
    }

    /// The procurement topology, exporting its spans to `spans` if given.
    pub fn procurement_traced(
        topics: &Topics,
        codec: Arc<Codec>,
        spans: Option<SpanExport>,
    ) -> Pipeline {
        let state = tempfile::tempdir().expect("temp dir");
        let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
        let mut config = RuntimeConfig::new(&app, kafka(), state.path().to_path_buf());
        config.timer_interval = Duration::from_millis(100);
        config.spans = spans;
        let processor = ProcurementProcessor::new(topics.clone(), codec);
        let runtime = Runtime::new(config, processor).expect("runtime starts");
        Self::run(runtime, state)
    }

    /// The payment topology on `topics`, looking for due payment runs every 100 ms.
    pub fn payment(topics: &Topics, codec: Arc<Codec>) -> Pipeline {
        Self::payment_by(topics, codec, p2p_topologies::Clock::WALL)
    }

    /// The payment topology, its payment runs due by `clock`.
    pub fn payment_by(
        topics: &Topics,
        codec: Arc<Codec>,
        clock: p2p_topologies::Clock,
    ) -> Pipeline {
        Self::payment_traced(topics, codec, clock, None)
    }

    /// The payment topology, its runs due by `clock`, exporting its spans to `spans` if given.
    pub fn payment_traced(
        topics: &Topics,
        codec: Arc<Codec>,
        clock: p2p_topologies::Clock,
        spans: Option<SpanExport>,
    ) -> Pipeline {
        let state = tempfile::tempdir().expect("temp dir");
        let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
        let mut config = RuntimeConfig::new(&app, kafka(), state.path().to_path_buf());
        config.timer_interval = Duration::from_millis(100);
        config.clock = clock;
        config.spans = spans;
        let processor = PaymentProcessor::new(topics.clone(), codec);
        let runtime = Runtime::new(config, processor).expect("runtime starts");
        Self::run(runtime, state)
    }

    /// Runs `runtime` on its state directory `state` (kept as long as the pipeline runs).
    pub fn run<T: Topology>(runtime: Runtime<T>, state: tempfile::TempDir) -> Pipeline {
        log_to_file();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            runtime
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("runtime runs")
        });
        Pipeline {
            stop: Some(stop),
            task,
            _state: state,
        }
    }

    pub async fn stop(self) -> p2p_topologies::StatsSnapshot {
        self.stop_keeping_state().await.0
    }

    /// Ends it as a crash would, mid-batch and without leaving the group (a static member
    /// keeps its place until the session timeout), and hands its state directory back.
    pub async fn crash(mut self) -> tempfile::TempDir {
        self.task.abort();
        let _ = (&mut self.task).await;
        self._state
    }

    /// Stops, finishing its batch, and hands its state directory back to start again on.
    pub async fn stop_keeping_state(
        mut self,
    ) -> (p2p_topologies::StatsSnapshot, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stats = (&mut self.task).await.expect("runtime task");
        (stats, self._state)
    }
}

/// With `P2P_TEST_LOG=<file>`, the in-process runtimes' logs (`RUST_LOG` filters them, `info`
/// by default) go to that file: what a failure that does not repeat is read by.
fn log_to_file() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let Some(path) = std::env::var_os("P2P_TEST_LOG") else {
            return;
        };
        let Ok(file) = std::fs::File::create(&path) else {
            eprintln!("could not create the log file {path:?}");
            return;
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
    });
}

/// How long a test waits for an outcome before it fails: the broker is real and the machine
/// small, so this is generous; it bounds a hung test, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Reads with `read` until `done` holds for the reading, and returns it. After [`PATIENCE`] it
/// fails, naming `what` it waited for and the last reading.
pub async fn poll<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let polling = async {
        loop {
            let reading = read().await;
            if done(&reading) {
                return reading;
            }
            last = Some(reading);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    match tokio::time::timeout(PATIENCE, polling).await {
        Ok(reading) => reading,
        Err(_) => panic!("timed out waiting for {what}; last saw {last:#?}"),
    }
}

/// Reads the outputs until every invoice of `planted` is decided as planted (the audit
/// passes), and returns them. A timeout names what the audit disagrees with, not the whole
/// reading: that is what a failure is read for.
pub async fn wait_for_planted(
    topics: &Topics,
    codec: &Codec,
    planted: &[(p2p_processors::InvoiceId, p2p_loadtest::generator::Planted)],
) -> Observed {
    struct Audited(Result<Observed, String>, Vec<String>);
    impl std::fmt::Debug for Audited {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match &self.0 {
                Err(error) => write!(f, "no reading: {error}"),
                Ok(observed) => write!(
                    f,
                    "{} disagreement(s) with the plan, {} dead letter(s): {:#?}",
                    self.1.len(),
                    observed.dead_letters.len(),
                    self.1
                ),
            }
        }
    }
    let read = || async {
        let observed = read_outputs(&kafka(), codec, topics, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string());
        let disagreements = observed.as_ref().map_or_else(
            |_| Vec::new(),
            |o| p2p_loadtest::audit::audit(planted, o).disagreements,
        );
        Audited(observed, disagreements)
    };
    let audited = poll("every invoice as planted", read, |a| {
        a.0.is_ok() && a.1.is_empty()
    })
    .await;
    audited.0.expect("done only holds for a reading")
}

/// Reads the outputs until `done` holds for them. Right after topic creation a busy broker may
/// not have elected every leader yet: a read that fails is retried like any transient fault.
pub async fn wait_for(
    topics: &Topics,
    codec: &Codec,
    what: &str,
    done: impl Fn(&Observed) -> bool,
) -> Observed {
    let read = || async {
        read_outputs(&kafka(), codec, topics, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())
    };
    poll(what, read, |r| r.as_ref().is_ok_and(&done))
        .await
        .expect("done only holds for a reading")
}

/// A pipeline configuration file in `dir` for `topics` on the test broker and registry, with
/// `application_id` if given: what an operator passes to `p2p ... --config`.
pub fn pipeline_toml(
    dir: &Path,
    topics: &Topics,
    application_id: Option<&str>,
) -> std::path::PathBuf {
    let mut config = toml::Table::new();
    if let Some(id) = application_id {
        config.insert("application_id".into(), id.into());
    }
    config.insert("state_dir".into(), dir.display().to_string().into());
    config.insert(
        "schema_registry_url".into(),
        services().registry_url.clone().into(),
    );
    config.insert("kafka".into(), toml::Value::try_from(kafka()).unwrap());
    config.insert("topics".into(), toml::Value::try_from(topics).unwrap());
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// The live state keys of `changelog` (the newest record per partition and key, not a
/// tombstone) that are not on their owner's partition of `partitions`: state a growth left
/// behind (issue 25). Each as "owner on p, home q".
#[allow(dead_code)]
pub fn state_left_behind(kafka: &KafkaProperties, changelog: &str, partitions: u32) -> Vec<String> {
    use rdkafka::Message;
    let mut live: std::collections::BTreeMap<(i32, Vec<u8>), bool> = Default::default();
    for message in p2p_loadtest::audit::read_topic(kafka, changelog, Duration::from_secs(60))
        .expect("the changelog reads")
    {
        if let Some(key) = message.key() {
            live.insert(
                (message.partition(), key.to_vec()),
                message.payload().is_some(),
            );
        }
    }
    live.iter()
        .filter(|(_, alive)| **alive)
        .filter_map(|((partition, key), _)| {
            let owner = p2p_state::owner_of_raw_key(key)?;
            let home = p2p_state::murmur2::partition_for(owner, partitions) as i32;
            (home != *partition).then(|| {
                format!(
                    "{} on {partition}, home {home}",
                    String::from_utf8_lossy(owner)
                )
            })
        })
        .collect()
}

/// Every metric the deployment's alert rules and dashboard name
/// (`deploy/helm/p2p-pipeline/files/`), whose prefix is `prefix`: a rule or panel on a metric
/// that does not exist would stay silent forever (issue 28).
#[allow(dead_code)]
pub fn metrics_named_by_deploy(prefix: &str) -> std::collections::BTreeSet<String> {
    let files = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/p2p-pipeline/files"
    );
    let mut names = std::collections::BTreeSet::new();
    for file in ["alerts.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(Path::new(files).join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("p2p_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            if name.starts_with(prefix) {
                names.insert(name);
            }
        }
    }
    names
}

/// Of `names`, those no metric family of `scraped` (a `/metrics` text) is: a histogram's
/// `_bucket`, `_sum` and `_count` are its family's.
#[allow(dead_code)]
pub fn missing_from(scraped: &str, names: &std::collections::BTreeSet<String>) -> Vec<String> {
    let families: std::collections::BTreeSet<&str> = scraped
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    names
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| families.contains(family))
                .unwrap_or(name);
            !families.contains(family)
        })
        .cloned()
        .collect()
}

/// One alert rule or dashboard panel of the deployment: the metrics its expressions name,
/// and the label names it groups, selects or prints by.
#[derive(Debug)]
#[allow(dead_code)]
pub struct DeployQuery {
    pub what: String,
    pub metrics: std::collections::BTreeSet<String>,
    pub labels: std::collections::BTreeSet<String>,
}

/// Labels Prometheus gives every series at scrape time (the ServiceMonitor's target labels),
/// and the histogram bucket's: never the exporter's to have.
#[allow(dead_code)]
const SCRAPE_LABELS: &[&str] = &["pod", "namespace", "instance", "job", "service", "le"];

/// Every alert rule (`files/alerts.yaml`) and dashboard panel (`files/dashboard.json`) with
/// the metrics and labels it names: a label misspelt in a `by (...)`, a selector or a
/// summary would group, select or print nothing, silently (issue 28).
#[allow(dead_code)]
pub fn queries_of_deploy() -> Vec<DeployQuery> {
    let files = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/p2p-pipeline/files"
    ));
    let mut queries = Vec::new();
    let alerts = std::fs::read_to_string(files.join("alerts.yaml")).unwrap();
    for block in alerts.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap_or_default().trim().to_owned();
        // The expression and the summary; the runbook is prose.
        let (rule, annotations) = block.split_once("annotations:").unwrap_or((block, ""));
        let summary = annotations
            .lines()
            .find(|l| l.trim_start().starts_with("summary:"))
            .unwrap_or_default();
        queries.push(query_of(
            &format!("alert {name}"),
            &format!("{rule}\n{summary}"),
        ));
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(files.join("dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let mut text = String::new();
        for target in panel["targets"].as_array().into_iter().flatten() {
            for field in ["expr", "legendFormat"] {
                text.push_str(target[field].as_str().unwrap_or_default());
                text.push('\n');
            }
        }
        if !text.trim().is_empty() {
            let title = panel["title"].as_str().unwrap_or_default();
            queries.push(query_of(&format!("panel {title:?}"), &text));
        }
    }
    queries
}

/// The metrics and labels `text` (PromQL with its summary or legend) names.
fn query_of(what: &str, text: &str) -> DeployQuery {
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut metrics = std::collections::BTreeSet::new();
    let mut labels = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("p2p_") {
        let name = word(&rest[at..]);
        rest = &rest[at + name.len().max(1)..];
        metrics.insert(name);
    }
    // by (a, b) / without (a) / on (a) / ignoring (a) / group_left (a)
    for keyword in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut rest = text;
        while let Some(at) = rest.find(keyword) {
            let before = rest[..at].chars().last();
            let after = rest[at + keyword.len()..].trim_start();
            rest = &rest[at + keyword.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(list) = after.strip_prefix('(') {
                let list = &list[..list.find(')').unwrap_or(0)];
                labels.extend(
                    list.split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty()),
                );
            }
        }
    }
    // {label="v", other=~"w"} selectors
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let inner = &rest[open + 1..];
        rest = inner;
        if inner.starts_with('{') {
            continue; // a template's {{ }}
        }
        let inner = &inner[..inner.find('}').unwrap_or(0)];
        for matcher in inner.split(',') {
            let name = word(matcher.trim());
            if !name.is_empty()
                && matcher.trim()[name.len()..]
                    .trim_start()
                    .starts_with(['=', '!'])
            {
                labels.insert(name);
            }
        }
    }
    // {{ $labels.x }} in summaries, {{x}} in legends
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let inner = rest[open + 2..].trim_start();
        rest = &rest[open + 2..];
        let inner = inner.strip_prefix("$labels.").unwrap_or(inner);
        let name = word(inner);
        if !name.is_empty() && !inner.starts_with("$value") {
            labels.insert(name);
        }
    }
    DeployQuery {
        what: what.to_owned(),
        metrics,
        labels,
    }
}

/// For each query naming a metric of `scraped` (a `/metrics` text), the labels it names that
/// no scraped series of its metrics has: `query: label`. A query whose metrics have no series
/// yet says nothing.
#[allow(dead_code)]
pub fn labels_missing_from(scraped: &str, queries: &[DeployQuery]) -> Vec<String> {
    // Each scraped series' family (a histogram's parts are its family's) and label names.
    let mut labels_of: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in scraped.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let entry = labels_of.entry(family.to_owned()).or_default();
        entry.insert(name.to_owned());
        if let Some(inner) = line[name_end..].strip_prefix('{') {
            let inner = &inner[..inner.rfind('}').unwrap_or(0)];
            for pair in inner.split("\",") {
                if let Some((label, _)) = pair.split_once('=') {
                    entry.insert(format!("label:{}", label.trim()));
                }
            }
        }
    }
    let mut missing = Vec::new();
    for query in queries {
        let families: Vec<&std::collections::BTreeSet<String>> = query
            .metrics
            .iter()
            .filter_map(|m| {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s))
                    .unwrap_or(m);
                labels_of.get(family)
            })
            .collect();
        if families.is_empty() {
            continue;
        }
        for label in &query.labels {
            if SCRAPE_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !families
                .iter()
                .any(|f| f.contains(&format!("label:{label}")))
            {
                missing.push(format!("{}: {label}", query.what));
            }
        }
    }
    missing
}
