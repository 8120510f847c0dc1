//! `p2p bench`: the benchmark. On a real broker it runs, each on topics of its own loaded with
//! the same generated stream:
//! 1. the pass-through baseline (`baseline`), exactly once with the pipeline's settings;
//! 2. the pipeline exactly once, then at least once, from a pre-loaded stream (throughput);
//! 3. the pipeline exactly once fed at a fixed rate, inputs stamped as sent (latency);
//!
//! and audits what each pipeline run wrote against the generator's plan. Every speed figure is
//! a ratio to the baseline measured in the same run: the machines are small and noisy.

use crate::baseline::{pass_through, PassThrough, PassThroughSettings};
use crate::check::{check, AuditFailed};
use crate::generator::OpenPurchaseOrders;
use crate::latency::{spawn_reader, Latencies};
use crate::pipeline::{run_until_processed, Expected, PipelineError, PipelineSettings, Progress};
use crate::produce::{
    erp_producer, produce_at_rate, produce_records, produce_scenario, ProduceError,
};
use crate::{GeneratorConfig, Scenario};
use indicatif::{ProgressBar, ProgressStyle};
use p2p_avro::Codec;
use p2p_topologies::admin::{client_config, count_topic, create_topics, delete_topic_names};
use p2p_topologies::{Guarantee, KafkaProperties, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// What a benchmark run does.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub kafka: KafkaProperties,
    pub codec: Arc<Codec>,
    pub generator: GeneratorConfig,
    pub partitions: i32,
    /// The runtimes' (and the baseline's) batch size and linger: a transaction per batch.
    pub max_batch: usize,
    pub batch_linger: Duration,
    /// Workers per topology runtime.
    pub workers: usize,
    /// Records per second in the latency phase; `None`: half the exactly-once throughput
    /// measured just before (or 200 if that phase did not run).
    pub rate: Option<f64>,
    /// POs issued and left open in the open-POs phase.
    pub open_pos: u64,
    pub phases: Phases,
    /// Where the report goes (report.md, bench.svg).
    pub out_dir: PathBuf,
    /// How long a phase may take before it is given up as failed.
    pub limit: Duration,
    /// Run the pipeline once over a small stream before anything is measured (see
    /// [`WARM_UP`]).
    pub warm_up: bool,
    /// Show progress bars (on a terminal).
    pub progress: bool,
    /// The command line that ran it, for the report.
    pub command: String,
}

/// Which phases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub baseline: bool,
    pub exactly_once: bool,
    pub at_least_once: bool,
    pub latency: bool,
    /// The pipeline's memory with `open_pos` POs in its state.
    pub open_pos: bool,
    /// Instances added and removed (1 -> 3 -> 1) under a fixed-rate stream: the pauses.
    pub scale: bool,
    /// Partitions grown twice (4 -> 8 -> 12 by default) under a fixed-rate stream: the pauses.
    pub grow: bool,
}

impl Phases {
    pub const ALL: Phases = Phases {
        baseline: true,
        exactly_once: true,
        at_least_once: true,
        latency: true,
        open_pos: true,
        scale: true,
        grow: true,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("growing the partitions: {0}")]
    Grow(#[from] p2p_topologies::admin::GrowError),
    #[error("loading the stream: {0}")]
    Produce(#[from] ProduceError),
    #[error("the pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("reading back: {0}")]
    Read(#[from] crate::audit::AuditError),
    #[error("{phase}: within {limit:?} {shortfall}")]
    TooSlow {
        phase: &'static str,
        limit: Duration,
        shortfall: String,
    },
    #[error("{phase}: the pipeline did not get its partitions within {limit:?}")]
    NotReady {
        phase: &'static str,
        limit: Duration,
    },
    #[error("{phase}: audit failed: {failed}:\n  {}", failed.details.join("\n  "))]
    Audit {
        phase: &'static str,
        failed: AuditFailed,
    },
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("drawing the plot: {0}")]
    Plot(String),
    #[error("a thread of the benchmark failed: {0}")]
    Thread(String),
}

/// One throughput phase.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Records of the stream it processed (for the baseline: copied).
    pub records: u64,
    /// From its first record to its last one done.
    pub elapsed: Duration,
    /// Records read by the pipeline's three runtimes together (each reads its inputs, and
    /// procurement and payment read what the match writes); the baseline reads each once.
    pub records_read: u64,
    /// Records written: the pipeline's outputs, dead letters and changelog records; the
    /// baseline's copies.
    pub records_written: u64,
    pub transactions: u64,
    /// CPU time of this process meanwhile.
    pub cpu: Duration,
    /// The rest of the machine's busy CPU time meanwhile (with the broker on this machine: the
    /// work the run gave the broker); `None` where the OS does not say.
    pub other_cpu: Option<Duration>,
    /// Highest resident set size of this process seen meanwhile.
    pub peak_rss: u64,
    /// Records read by the runtimes in each second of the run.
    pub per_second: Vec<u64>,
}

impl Throughput {
    /// Stream records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Records read and written per second: what the broker carried.
    pub fn moved_rate(&self) -> f64 {
        (self.records_read + self.records_written) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The fixed-rate phase.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// Records of the stream fed (of the first [`SAMPLE_ORGS`] orgs).
    pub records: u64,
    pub rate: f64,
    pub achieved: f64,
    pub latencies: Latencies,
    pub peak_rss: u64,
}

/// The open-POs phase: POs issued and never received nor invoiced, pre-loaded, then processed
/// exactly once. They stay in the pipeline's state: what that costs in memory and on disk.
#[derive(Debug, Clone)]
pub struct StateRun {
    pub pos: u64,
    /// Records of the stream (the orgs' settings and suppliers, and the POs).
    pub records: u64,
    /// From the first record read to the last one done.
    pub elapsed: Duration,
    pub cpu: Duration,
    /// This process's resident memory as the pipeline started, and the highest seen after.
    pub rss_before: u64,
    pub peak_rss: u64,
    /// The three runtimes' local state (RocksDB) on disk once done.
    pub state_bytes: u64,
}

impl StateRun {
    /// Stream records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct BenchResults {
    pub machine: Machine,
    pub config: BenchConfig,
    pub stream: StreamSummary,
    pub baseline: Option<Throughput>,
    pub exactly_once: Option<Throughput>,
    pub at_least_once: Option<Throughput>,
    pub latency: Option<LatencyRun>,
    pub open_pos: Option<StateRun>,
    pub scale: Option<crate::scale::ScaleRun>,
    /// The growth phase: the same measures, per growth.
    pub grow: Option<crate::scale::ScaleRun>,
    /// Phases whose outputs were audited and passed.
    pub audited: Vec<&'static str>,
}

/// The generated stream.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub records: u64,
    pub orgs: usize,
    pub pos: usize,
    pub invoices: usize,
    /// POs of the largest org and of the smallest.
    pub largest_org: usize,
    pub smallest_org: usize,
}

/// The machine the run was on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory: u64,
    pub os: String,
    pub librdkafka: String,
    pub build: &'static str,
    pub version: &'static str,
}

impl Machine {
    pub fn this() -> Machine {
        let mut system = System::new();
        system.refresh_memory();
        system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: system
                .cpus()
                .first()
                .map_or_else(|| "unknown".into(), |c| c.brand().trim().to_owned()),
            memory: system.total_memory(),
            os: format!(
                "{} (kernel {})",
                System::long_os_version().unwrap_or_else(|| "unknown OS".into()),
                System::kernel_version().unwrap_or_else(|| "?".into())
            ),
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// This process's CPU time and resident memory, and the rest of the machine's busy CPU.
struct ProcessMeter {
    system: System,
    pid: Pid,
    peak_rss: u64,
    last: Option<Instant>,
    /// This process's CPU time, and the machine's busy CPU time, when the meter started.
    own_at_start: Duration,
    machine_at_start: Option<Duration>,
}

/// CPU used since a meter started.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    own: Duration,
    /// The rest of the machine: the broker and the registry when they run beside it.
    others: Option<Duration>,
}

impl ProcessMeter {
    fn new() -> ProcessMeter {
        let mut meter = ProcessMeter {
            system: System::new(),
            pid: Pid::from_u32(std::process::id()),
            peak_rss: 0,
            last: None,
            own_at_start: Duration::ZERO,
            machine_at_start: machine_busy(),
        };
        meter.own_at_start = meter.sample();
        meter
    }

    /// CPU time so far; notes the resident memory.
    fn sample(&mut self) -> Duration {
        self.last = Some(Instant::now());
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        match self.system.process(self.pid) {
            Some(process) => {
                self.peak_rss = self.peak_rss.max(process.memory());
                Duration::from_millis(process.accumulated_cpu_time())
            }
            None => Duration::ZERO,
        }
    }

    /// CPU used since the meter started, by this process and by the rest of the machine.
    fn cpu(&mut self) -> CpuUse {
        let own = self.sample().saturating_sub(self.own_at_start);
        let machine = machine_busy()
            .zip(self.machine_at_start)
            .map(|(now, start)| now.saturating_sub(start));
        CpuUse {
            own,
            others: machine.map(|m| m.saturating_sub(own)),
        }
    }

    /// Samples at most four times a second.
    fn tick(&mut self) {
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
        {
            self.sample();
        }
    }
}

/// The machine's busy CPU time since boot, all cores (Linux only: `None` elsewhere).
fn machine_busy() -> Option<Duration> {
    busy_of_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Busy time from `/proc/stat`'s first line: user, nice, system, irq, softirq and steal, in
/// clock ticks of 1/100 s (USER_HZ, which the kernel fixes at 100 for this file).
fn busy_of_proc_stat(stat: &str) -> Option<Duration> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user, nice]
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied())
        .sum::<Option<u64>>()?;
    Some(Duration::from_millis(busy * 10))
}

/// Runs the benchmark and writes its report; fails if any audit fails (after the report).
pub async fn run(config: BenchConfig) -> Result<BenchResults, BenchError> {
    let p = config.phases;
    // Only the phases that read the stream (and the report describing it) get it generated:
    // the open-POs phase measures the process's memory, and the documents of a stream no
    // phase reads (hundreds of MiB at 200 orgs) must not count in it.
    let scenario = if p.baseline || p.exactly_once || p.at_least_once || p.latency {
        Scenario::generate(&recent(&config.generator))
    } else {
        Scenario::default()
    };
    let stream = StreamSummary::of(&config.generator, &scenario);
    let tag = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut results = BenchResults {
        machine: Machine::this(),
        stream,
        config: config.clone(),
        baseline: None,
        exactly_once: None,
        at_least_once: None,
        latency: None,
        open_pos: None,
        scale: None,
        grow: None,
        audited: Vec::new(),
    };
    let outcome = run_phases(&config, &scenario, &tag, &mut results).await;
    // Whatever happened, the run's topics go: a broker loads every partition it ever had.
    // `P2P_BENCH_KEEP_FAILED` keeps a failed run's topics, for a post-mortem.
    if outcome.is_ok() || std::env::var_os("P2P_BENCH_KEEP_FAILED").is_none() {
        if let Err(error) = delete_run_topics(&config.kafka, &tag).await {
            tracing::warn!(%error, "could not delete the benchmark's topics");
        }
    }
    std::fs::create_dir_all(&config.out_dir)?;
    crate::report::write(&results, &config.out_dir)?;
    outcome.map(|()| results)
}

async fn run_phases(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
    results: &mut BenchResults,
) -> Result<(), BenchError> {
    let state = tempfile::tempdir()?;
    let p = config.phases;
    let warm_up = config.warm_up && (p.baseline || p.exactly_once || p.at_least_once || p.latency);
    // The stream of the first orgs: the warm-up's, and the latency phase's.
    let sample = (warm_up || p.latency || p.scale || p.grow).then(|| {
        Scenario::generate(&recent(&GeneratorConfig {
            orgs: config.generator.orgs.min(SAMPLE_ORGS),
            ..config.generator.clone()
        }))
    });
    if let (true, Some(sample)) = (warm_up, &sample) {
        let run = pipeline(
            config,
            sample,
            tag,
            WARM_UP,
            Guarantee::ExactlyOnce,
            state.path(),
        )
        .await?;
        results.audited.push(WARM_UP);
        say("warm-up (not measured)", Some(&run), None);
    }
    if config.phases.baseline {
        results.baseline = Some(baseline(config, scenario, tag).await?);
        say("baseline (pass-through)", results.baseline.as_ref(), None);
    }
    for (guarantee, phase) in [
        (Guarantee::ExactlyOnce, "exactly-once"),
        (Guarantee::AtLeastOnce, "at-least-once"),
    ] {
        let wanted = match guarantee {
            Guarantee::ExactlyOnce => config.phases.exactly_once,
            Guarantee::AtLeastOnce => config.phases.at_least_once,
        };
        if !wanted {
            continue;
        }
        let measured = pipeline(config, scenario, tag, phase, guarantee, state.path()).await?;
        results.audited.push(phase);
        say(phase, Some(&measured), results.baseline.as_ref());
        match guarantee {
            Guarantee::ExactlyOnce => results.exactly_once = Some(measured),
            Guarantee::AtLeastOnce => results.at_least_once = Some(measured),
        }
    }
    if let (true, Some(sample)) = (config.phases.latency, &sample) {
        let rate = config.rate.unwrap_or_else(|| {
            results
                .exactly_once
                .as_ref()
                .map_or(200.0, |t| (t.rate() / 2.0).max(1.0))
        });
        let run = latency(config, sample, tag, rate, state.path()).await?;
        results.audited.push("latency");
        println!(
            "latency (exactly once, {:.0} records/s asked, {:.0} sent): p50 {} ms, p99 {} ms, \
             max {} ms over {} outputs",
            run.rate,
            run.achieved,
            run.latencies.all.value_at_quantile(0.5),
            run.latencies.all.value_at_quantile(0.99),
            run.latencies.all.max(),
            run.latencies.all.len()
        );
        results.latency = Some(run);
    }
    if let (true, Some(sample)) = (config.phases.scale, &sample) {
        let run = scale(config, sample, tag).await?;
        results.audited.push(SCALE);
        println!("{}", run.summary(SCALE));
        results.scale = Some(run);
    }
    if let (true, Some(sample)) = (config.phases.grow, &sample) {
        let run = grow(config, sample, tag).await?;
        results.audited.push(GROW);
        println!("{}", run.summary(GROW));
        results.grow = Some(run);
    }
    if config.phases.open_pos {
        let run = open_pos(config, tag).await?;
        results.audited.push(OPEN_POS);
        println!(
            "open POs (exactly once): {} POs in {:.1} s, {:.0} records/s; peak RSS {:.0} MiB \
             ({:.0} MiB as it started), state on disk {:.0} MiB",
            run.pos,
            run.elapsed.as_secs_f64(),
            run.rate(),
            run.peak_rss as f64 / MIB,
            run.rss_before as f64 / MIB,
            run.state_bytes as f64 / MIB
        );
        results.open_pos = Some(run);
    }
    Ok(())
}

/// The warm-up phase's name: the pipeline, exactly once, over the stream of at most
/// [`SAMPLE_ORGS`] orgs, audited and measured in nothing. A broker that has just started (as in
/// CI) spends 15 to 30% of a core compiling its transactional paths (the JVM's C2) through the
/// first phase that uses them, which would count against whichever phase ran first.
pub const WARM_UP: &str = "warm-up";
/// The orgs of the stream the warm-up and the latency phase run on: the stream's first. The
/// latency phase feeds at a fixed rate, under 1,000 records/s on the benchmark's machine, so
/// a larger stream would only make it longer (12,000 records take a quarter of a minute).
pub const SAMPLE_ORGS: usize = 20;

/// The stream as it would be today: its events spread over the twelve hours that ended twelve
/// hours ago, and its suppliers paid on receipt of the invoice. Fed at a fixed rate, records are
/// stamped as they are sent, and the documents' own dates must agree with that clock: a PO
/// dated months ago would have its pending invoices expire at once, one dated tomorrow its
/// payment wait a day. Due at once, every matched invoice is paid in the run.
pub fn recent(generator: &GeneratorConfig) -> GeneratorConfig {
    const HOUR_MS: i64 = 3_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // About ten records per PO; the gaps average twelve hours over them all.
    let records = (generator.orgs * generator.pos_per_org * 10).max(1) as i64;
    let gap = (12 * HOUR_MS / records).max(1);
    GeneratorConfig {
        start_ms: now - 24 * HOUR_MS,
        // Never 0: two events of an org at the same instant on two topics have no order a
        // consumer could follow.
        gap_ms: 1..2 * gap + 1,
        net_days: Some(0),
        ..generator.clone()
    }
}

fn say(phase: &str, measured: Option<&Throughput>, baseline: Option<&Throughput>) {
    let Some(measured) = measured else { return };
    let ratio = baseline.map_or(String::new(), |b| {
        format!(", {:.2} of the baseline", measured.rate() / b.rate())
    });
    println!(
        "{phase}: {} records in {:.2} s, {:.0} records/s{ratio}",
        measured.records,
        measured.elapsed.as_secs_f64(),
        measured.rate()
    );
}

impl StreamSummary {
    fn of(config: &GeneratorConfig, scenario: &Scenario) -> StreamSummary {
        let sizes = config.org_sizes();
        StreamSummary {
            records: scenario.records.len() as u64,
            orgs: config.orgs,
            pos: scenario.lifecycles.len(),
            invoices: scenario.planted.len(),
            largest_org: sizes.iter().copied().max().unwrap_or(0),
            smallest_org: sizes.iter().copied().min().unwrap_or(0),
        }
    }
}

/// The phase's own topics, created, and (unless `empty`) loaded with the stream.
async fn phase_topics(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
    phase: &str,
    empty: bool,
) -> Result<Topics, BenchError> {
    let topics = Topics::named(|base| format!("{base}-{tag}-{phase}"));
    create_topics(&config.kafka, &topics, config.partitions, 1).await?;
    if !empty {
        let producer = erp_producer(&config.kafka)?;
        produce_scenario(&producer, &config.codec, &topics, scenario).await?;
    }
    Ok(topics)
}

fn bar(config: &BenchConfig, phase: &str, length: u64) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length).with_prefix(phase.to_owned());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn baseline(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
) -> Result<Throughput, BenchError> {
    let topics = phase_topics(config, scenario, tag, "baseline", false).await?;
    let sink = format!("pass-through-{tag}");
    delete_topic_names(&config.kafka, std::slice::from_ref(&sink)).await?;
    create_sink(&config.kafka, &sink, config.partitions).await?;
    let settings = PassThroughSettings {
        application_id: format!("p2p-{tag}-baseline"),
        inputs: topics.inputs().into_iter().map(str::to_owned).collect(),
        sink,
        max_batch: config.max_batch,
        batch_linger: config.batch_linger,
        expected: scenario.records.len() as u64,
        limit: config.limit,
    };
    let bar = bar(config, "baseline", settings.expected);
    let mut meter = ProcessMeter::new();
    let measured = pass_through(&config.kafka, &settings, |n| {
        bar.set_position(n);
        meter.tick();
    })
    .await?;
    let cpu = meter.cpu();
    let peak_rss = meter.peak_rss;
    bar.finish_and_clear();
    let PassThrough {
        records,
        transactions,
        elapsed,
    } = measured;
    if records < scenario.records.len() as u64 {
        return Err(BenchError::TooSlow {
            phase: "baseline",
            limit: config.limit,
            shortfall: format!("it copied {records} of {} records", scenario.records.len()),
        });
    }
    Ok(Throughput {
        records,
        elapsed,
        records_read: records,
        records_written: records,
        transactions,
        cpu: cpu.own,
        other_cpu: cpu.others,
        peak_rss,
        per_second: Vec::new(),
    })
}

async fn pipeline(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
    phase: &'static str,
    guarantee: Guarantee,
    state: &std::path::Path,
) -> Result<Throughput, BenchError> {
    let topics = phase_topics(config, scenario, tag, phase, false).await?;
    let settings = settings(config, tag, phase, guarantee, state);
    let expected = Expected::of(scenario);
    let bar = bar(config, phase, expected.total());
    let mut meter = ProcessMeter::new();
    let mut timeline = Timeline::default();
    let finished = run_until_processed(
        &config.kafka,
        config.codec.clone(),
        &topics,
        &settings,
        expected,
        config.limit,
        |progress| {
            bar.set_position(progress.records_in());
            timeline.note(progress);
            meter.tick();
        },
    )
    .await?;
    let cpu = meter.cpu();
    bar.finish_and_clear();
    if !finished.completed {
        return Err(BenchError::TooSlow {
            phase,
            limit: config.limit,
            shortfall: expected.shortfall(&finished.progress),
        });
    }
    audit(config, scenario, &topics, phase).await?;
    Ok(Throughput {
        records: scenario.records.len() as u64,
        elapsed: finished.elapsed,
        records_read: finished.progress.records_in(),
        records_written: finished.progress.records_written(),
        transactions: finished.progress.matching.batches
            + finished.progress.procurement.batches
            + finished.progress.payment.batches,
        cpu: cpu.own,
        other_cpu: cpu.others,
        peak_rss: meter.peak_rss,
        per_second: timeline.per_second,
    })
}

fn settings(
    config: &BenchConfig,
    tag: &str,
    phase: &str,
    guarantee: Guarantee,
    state: &std::path::Path,
) -> PipelineSettings {
    PipelineSettings {
        guarantee,
        max_batch: config.max_batch,
        batch_linger: config.batch_linger,
        workers: config.workers,
        ..PipelineSettings::new(
            &format!("p2p-{tag}-{phase}"),
            &config.kafka,
            state.to_path_buf(),
        )
    }
}

async fn audit(
    config: &BenchConfig,
    scenario: &Scenario,
    topics: &Topics,
    phase: &'static str,
) -> Result<(), BenchError> {
    let checked = check(
        &config.kafka,
        &config.codec,
        topics,
        scenario,
        Duration::from_secs(60),
    )
    .await?;
    checked
        .verdict()
        .map_err(|failed| BenchError::Audit { phase, failed })
}

/// Records read per second, from the first batch on.
#[derive(Default)]
struct Timeline {
    started: Option<Instant>,
    /// Records counted into `per_second` so far.
    counted: u64,
    per_second: Vec<u64>,
}

impl Timeline {
    fn note(&mut self, progress: &Progress) {
        let read = progress.records_in();
        if read == 0 {
            return;
        }
        let second = self
            .started
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += read.saturating_sub(self.counted);
        self.counted = read;
    }
}

async fn latency(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
    rate: f64,
    state: &std::path::Path,
) -> Result<LatencyRun, BenchError> {
    const PHASE: &str = "latency";
    let topics = phase_topics(config, scenario, tag, PHASE, true).await?;
    let settings = settings(config, tag, PHASE, Guarantee::ExactlyOnce, state);
    let expected = Expected::of(scenario);
    let feeding = Duration::from_secs_f64(scenario.records.len() as f64 / rate);
    let ready = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let running = {
        let (kafka, codec, topics) = (config.kafka.clone(), config.codec.clone(), topics.clone());
        let (ready, peak_rss) = (ready.clone(), peak_rss.clone());
        let limit = config.limit + feeding;
        let mut meter = ProcessMeter::new();
        tokio::spawn(async move {
            run_until_processed(
                &kafka,
                codec,
                &topics,
                &settings,
                expected,
                limit,
                |progress| {
                    ready.store(progress.ready, Ordering::Relaxed);
                    meter.tick();
                    peak_rss.store(meter.peak_rss, Ordering::Relaxed);
                },
            )
            .await
        })
    };
    let waited = Instant::now();
    while !ready.load(Ordering::Relaxed) {
        if waited.elapsed() > Duration::from_secs(60) || running.is_finished() {
            running.abort();
            return Err(BenchError::NotReady {
                phase: PHASE,
                limit: Duration::from_secs(60),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let outputs: Vec<String> = topics.outputs().into_iter().map(str::to_owned).collect();
    let reader = spawn_reader(&config.kafka, outputs, stop.clone());
    let producer = erp_producer(&config.kafka)?;
    let bar = bar(config, PHASE, scenario.records.len() as u64);
    let achieved = produce_at_rate(
        &producer,
        &config.codec,
        &topics,
        &scenario.records,
        rate,
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish_and_clear();
    let finished = running
        .await
        .map_err(|e| BenchError::Thread(e.to_string()))??;
    stop.store(true, Ordering::Relaxed);
    let latencies = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| BenchError::Thread(e.to_string()))?
        .map_err(|_| BenchError::Thread("the latency reader panicked".into()))??;
    if !finished.completed {
        return Err(BenchError::TooSlow {
            phase: PHASE,
            limit: config.limit + feeding,
            shortfall: expected.shortfall(&finished.progress),
        });
    }
    audit(config, scenario, &topics, PHASE).await?;
    Ok(LatencyRun {
        records: scenario.records.len() as u64,
        rate,
        achieved,
        latencies,
        peak_rss: peak_rss.load(Ordering::Relaxed),
    })
}

const OPEN_POS: &str = "open-pos";
const MIB: f64 = 1024.0 * 1024.0;
/// POs drawn, encoded and sent at a time: the loader holds no more than this.
pub(crate) const OPEN_POS_CHUNK: usize = 10_000;

/// Loads `config.open_pos` POs, issued and left open, onto the phase's topics a chunk at a
/// time, runs the pipeline until it has read them all, and audits by counting: one status per
/// PO on po-status, nothing dead-lettered.
async fn open_pos(config: &BenchConfig, tag: &str) -> Result<StateRun, BenchError> {
    let topics = Topics::named(|base| format!("{base}-{tag}-{OPEN_POS}"));
    create_topics(&config.kafka, &topics, config.partitions, 1).await?;
    let orgs = config.generator.orgs.max(1);
    // Dated over the last day, as the other phases' streams are.
    let dated = recent(&GeneratorConfig {
        pos_per_org: usize::try_from(config.open_pos).unwrap_or(usize::MAX) / orgs + 1,
        ..config.generator.clone()
    });
    let mut stream = OpenPurchaseOrders::new(&dated, config.open_pos);
    let expected = Expected::of_open(&stream);
    let records = stream.records();
    let producer = erp_producer(&config.kafka)?;
    let loading = bar(config, "open-pos load", records);
    loop {
        let chunk = stream.next_chunk(OPEN_POS_CHUNK);
        if chunk.is_empty() {
            break;
        }
        produce_records(&producer, &config.codec, &topics, &chunk).await?;
        loading.inc(chunk.len() as u64);
    }
    loading.finish_and_clear();
    drop(producer);

    let state = tempfile::tempdir()?;
    let settings = settings(config, tag, OPEN_POS, Guarantee::ExactlyOnce, state.path());
    let bar = bar(config, OPEN_POS, expected.total());
    let mut meter = ProcessMeter::new();
    let rss_before = meter.peak_rss;
    let finished = run_until_processed(
        &config.kafka,
        config.codec.clone(),
        &topics,
        &settings,
        expected,
        config.limit,
        |progress| {
            bar.set_position(progress.records_in());
            meter.tick();
        },
    )
    .await?;
    let cpu = meter.cpu().own;
    bar.finish_and_clear();
    if !finished.completed {
        return Err(BenchError::TooSlow {
            phase: OPEN_POS,
            limit: config.limit,
            shortfall: expected.shortfall(&finished.progress),
        });
    }
    let state_bytes = dir_bytes(state.path())?;
    audit_open_pos(config, &topics, &finished.progress, stream.pos()).await?;
    Ok(StateRun {
        pos: stream.pos(),
        records,
        elapsed: finished.elapsed,
        cpu,
        rss_before,
        peak_rss: meter.peak_rss,
        state_bytes,
    })
}

/// One status per PO on po-status (each issued once, nothing else happened to it), and no
/// record dead-lettered by any runtime.
async fn audit_open_pos(
    config: &BenchConfig,
    topics: &Topics,
    progress: &Progress,
    pos: u64,
) -> Result<(), BenchError> {
    let dead_lettered = progress.matching.dead_lettered
        + progress.procurement.dead_lettered
        + progress.payment.dead_lettered;
    let (kafka, topic) = (config.kafka.clone(), topics.po_status.clone());
    let statuses =
        tokio::task::spawn_blocking(move || count_topic(&kafka, &topic, Duration::from_secs(600)))
            .await
            .map_err(|e| BenchError::Thread(e.to_string()))?
            .map_err(crate::audit::AuditError::from)?;
    let mut details = Vec::new();
    if statuses != pos {
        details.push(format!(
            "{statuses} PO statuses published for {pos} POs issued"
        ));
    }
    if dead_lettered > 0 {
        details.push(format!("{dead_lettered} records dead-lettered"));
    }
    if details.is_empty() {
        return Ok(());
    }
    Err(BenchError::Audit {
        phase: OPEN_POS,
        failed: AuditFailed {
            headline: "the open POs did not all end issued".into(),
            details,
        },
    })
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += dir_bytes(&entry.path())?;
        } else if kind.is_file() {
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes)
}

/// The pass-through's output topic.
async fn create_sink(
    kafka: &KafkaProperties,
    name: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let sink = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&sink], &AdminOptions::new()).await? {
        result.map_err(|(_, code)| KafkaError::AdminOp(code))?;
    }
    Ok(())
}

/// Deletes every topic named with the run's tag (its phases' topics and changelogs).
async fn delete_run_topics(kafka: &KafkaProperties, tag: &str) -> Result<(), KafkaError> {
    let (config, tag) = (kafka.clone(), tag.to_owned());
    let names = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&config).create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok::<_, KafkaError>(
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|name| name.contains(&tag))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    delete_topic_names(kafka, &names).await
}

/// The scale phase's name.
const SCALE: &str = "scale";
/// The growth phase's name.
const GROW: &str = "grow";
/// The slices a moving phase's feed goes in (each by a producer of its own).
const FEED_SLICES: usize = 40;
/// How long the scale phase's feed lasts unless `--rate` says otherwise: long enough for a
/// move's pauses to show after it.
const SCALE_FEED: Duration = Duration::from_secs(120);

/// Changelog records an instance's runtimes restored so far.
fn restored(progress: &Progress) -> u64 {
    const RESTORED: &str = "changelog records restored";
    progress.matching.get(RESTORED)
        + progress.procurement.get(RESTORED)
        + progress.payment.get(RESTORED)
}

/// What several instances did, added up.
fn sum(parts: &[&Progress]) -> Progress {
    let totals: [p2p_topologies::Stats; 3] = Default::default();
    for part in parts {
        totals[0].add(&part.matching);
        totals[1].add(&part.procurement);
        totals[2].add(&part.payment);
    }
    Progress {
        ready: parts.iter().all(|p| p.ready),
        matching: totals[0].snapshot(),
        procurement: totals[1].snapshot(),
        payment: totals[2].snapshot(),
    }
}

/// One change a moving phase makes while the feed flows.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Instances started or stopped (gracefully) until this many run.
    Instances(usize),
    /// Every P2P topic grown to this many partitions, as `p2p admin grow-partitions` does.
    Partitions(u32),
}

/// Instances added and removed, 1 -> 3 at a fifth of the feed and 3 -> 1 at half of it (the
/// two leave gracefully), while `scenario` is fed at a fixed rate; then audited.
async fn scale(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
) -> Result<crate::scale::ScaleRun, BenchError> {
    moving(
        config,
        scenario,
        tag,
        SCALE,
        [(0.2, Change::Instances(3)), (0.5, Change::Instances(1))],
    )
    .await
}

/// Every topic grown twice under one instance, to twice the partitions at a third of the
/// feed and to three times at two thirds (4 -> 8 -> 12 by default: a multiple, then not one),
/// while `scenario` is fed at a fixed rate; then audited (ADR 0025).
async fn grow(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
) -> Result<crate::scale::ScaleRun, BenchError> {
    let p = config.partitions.max(1) as u32;
    moving(
        config,
        scenario,
        tag,
        GROW,
        [
            (1.0 / 3.0, Change::Partitions(2 * p)),
            (2.0 / 3.0, Change::Partitions(3 * p)),
        ],
    )
    .await
}

/// Grows every topic of the phase to `to` partitions, again while the growth before is still
/// under way (one growth at a time), until `limit`.
async fn grow_topics(
    config: &BenchConfig,
    topics: &Topics,
    settings: &PipelineSettings,
    to: u32,
    limit: Duration,
) -> Result<(), BenchError> {
    use p2p_topologies::admin::{carry_out_growth, plan_growth, topology_stores, GrowError};
    let stores = topology_stores(topics, |role| settings.runtime(role, &config.kafka));
    let started = Instant::now();
    loop {
        let report = {
            let (kafka, topics, stores) = (config.kafka.clone(), topics.clone(), stores.clone());
            tokio::task::spawn_blocking(move || {
                plan_growth(&kafka, &topics, &stores, to, Duration::from_secs(60))
            })
            .await
            .map_err(|e| BenchError::Thread(e.to_string()))??
        };
        match carry_out_growth(&config.kafka, topics, &stores, &report).await {
            Err(GrowError::UnderWay { .. }) if started.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// A phase of changes under load: one instance, exactly once, fed `scenario` at a fixed rate;
/// each of `changes` made once its share of the feed has gone; every output read back for its
/// latency; then the audit. Per change: each partition's pause, the changelog records
/// restored, the p99.
async fn moving(
    config: &BenchConfig,
    scenario: &Scenario,
    tag: &str,
    phase: &'static str,
    changes: [(f64, Change); 2],
) -> Result<crate::scale::ScaleRun, BenchError> {
    use crate::pipeline::Instance;
    use crate::scale::{pauses, percentiles, ScaleMove, ScaleRun};
    let topics = phase_topics(config, scenario, tag, phase, true).await?;
    let records = scenario.records.len() as u64;
    let rate = config
        .rate
        .unwrap_or(records as f64 / SCALE_FEED.as_secs_f64())
        .max(1.0);
    let feeding = Duration::from_secs_f64(records as f64 / rate);
    let expected = Expected::of(scenario);
    let states = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let settings_of = |i: usize| PipelineSettings {
        instance_id: format!("{phase}-{i}"),
        ..settings(config, tag, phase, Guarantee::ExactlyOnce, states[i].path())
    };
    let instance = |i: usize| {
        Instance::start(
            &config.kafka,
            config.codec.clone(),
            &topics,
            &settings_of(i),
        )
    };
    let mut running = vec![instance(0)?];
    let waited = Instant::now();
    while !running[0].progress().ready {
        if waited.elapsed() > Duration::from_secs(60) || running[0].ended() {
            return Err(BenchError::NotReady {
                phase,
                limit: Duration::from_secs(60),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the instances stopped during the phase did, to add to the running ones'.
    let mut left: Vec<Progress> = Vec::new();
    let restored_so_far = |running: &[Instance], left: &[Progress]| -> u64 {
        running.iter().map(|i| restored(&i.progress())).sum::<u64>()
            + left.iter().map(restored).sum::<u64>()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let outputs: Vec<String> = topics.outputs().into_iter().map(str::to_owned).collect();
    let reader = spawn_reader(&config.kafka, outputs, stop.clone());
    let clock = Instant::now();
    // The feed goes in slices, each sent holding `gate` by a producer made for it: a growth
    // holds the gate, so the ERPs pause while the command runs and learn the new count before
    // they go on, as the README asks of operators (an ERP that goes on partitioning by the old
    // count has its records of an org decided out of order for as long).
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let feed = {
        let (kafka, codec, topics) = (config.kafka.clone(), config.codec.clone(), topics.clone());
        // Every org active from the first slice: sliced in the scenario's (time) order, the
        // sample's orgs came one after the other, and the partitions that joiners took at a
        // fifth of the feed had no state yet (their restores counted 0).
        let records = crate::produce::interleaved_by_org(&scenario.records);
        let gate = gate.clone();
        tokio::spawn(async move {
            let slice = records.len().div_ceil(FEED_SLICES).max(1);
            for part in records.chunks(slice) {
                let _held = gate.lock().await;
                let producer = erp_producer(&kafka)?;
                produce_at_rate(&producer, &codec, &topics, part, rate, |_| {}).await?;
            }
            Ok::<_, ProduceError>(())
        })
    };
    let bar = bar(config, phase, 3);
    let limit = config.limit + feeding;
    let mut partitions = config.partitions.max(1) as u32;
    // Per change: its label, when it was made, and the records restored until then.
    let mut made: Vec<(String, Duration, u64)> = Vec::new();
    for (share, change) in changes {
        tokio::time::sleep_until((clock + feeding.mul_f64(share)).into()).await;
        let at = clock.elapsed();
        let before = restored_so_far(&running, &left);
        let label = match change {
            Change::Instances(n) => {
                let from = running.len();
                while running.len() < n {
                    running.push(instance(running.len())?);
                }
                while running.len() > n {
                    if let Some(leaving) = running.pop() {
                        left.push(leaving.stop().await?);
                    }
                }
                format!("{from} -> {n} instances")
            }
            Change::Partitions(to) => {
                let _paused = gate.lock().await;
                grow_topics(config, &topics, &settings_of(0), to, limit).await?;
                let label = format!("{partitions} -> {to} partitions");
                partitions = to;
                label
            }
        };
        made.push((label, at, before));
        bar.inc(1);
    }
    feed.await
        .map_err(|e| BenchError::Thread(e.to_string()))??;
    let mut completed = false;
    while clock.elapsed() < limit && !running.iter().any(Instance::ended) {
        let now: Vec<Progress> = running.iter().map(Instance::progress).collect();
        let all: Vec<&Progress> = now.iter().chain(&left).collect();
        if expected.reached(&topics, &sum(&all)) {
            completed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restored_at_end = restored_so_far(&running, &left);
    for instance in running {
        left.push(instance.stop().await?);
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let latencies = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| BenchError::Thread(e.to_string()))?
        .map_err(|_| BenchError::Thread(format!("the {phase} phase's reader panicked")))??;
    if !completed {
        return Err(BenchError::TooSlow {
            phase,
            limit,
            shortfall: expected.shortfall(&sum(&left.iter().collect::<Vec<_>>())),
        });
    }
    audit(config, scenario, &topics, phase).await?;
    let mut changelog_records = 0;
    for role in ["match", "procurement", "payment"] {
        let changelog = settings_of(0)
            .runtime(role, &config.kafka)
            .changelog_topic(role);
        let kafka = config.kafka.clone();
        changelog_records += tokio::task::spawn_blocking(move || {
            count_topic(&kafka, &changelog, Duration::from_secs(60))
        })
        .await
        .map_err(|e| BenchError::Thread(e.to_string()))?
        .map_err(crate::audit::AuditError::from)?;
    }
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let end = millis(clock.elapsed());
    let steady_gap_ms = pauses(&latencies, 0, millis(made[0].1))
        .into_values()
        .max()
        .unwrap_or(0);
    let moves = made
        .iter()
        .enumerate()
        .map(|(i, (change, at, before))| {
            let (to, restored_after) = match made.get(i + 1) {
                Some((_, next, next_before)) => (millis(*next), *next_before),
                None => (end, restored_at_end),
            };
            let (p99_ms, max_ms) =
                percentiles(&latencies, at.as_secs() as usize, (to / 1000 + 1) as usize);
            ScaleMove {
                change: change.clone(),
                at: *at,
                pauses: pauses(&latencies, millis(*at), to),
                restored: restored_after - before,
                p99_ms,
                max_ms,
            }
        })
        .collect();
    Ok(ScaleRun {
        records,
        rate,
        steady_gap_ms,
        changelog_records,
        moves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_cpu_counts_user_system_interrupts_and_steal_but_not_idle_or_io_wait() {
        let stat = "cpu  100 20 30 5000 400 6 7 8 50 0\ncpu0 50 10 15 2500 200 3 3 4 25 0\n";
        // 100 + 20 + 30 + 6 + 7 + 8 ticks of 10 ms; guest time is already in user.
        assert_eq!(busy_of_proc_stat(stat), Some(Duration::from_millis(1_710)));
    }

    #[test]
    fn an_unreadable_proc_stat_gives_no_figure_rather_than_a_wrong_one() {
        assert_eq!(busy_of_proc_stat(""), None);
        assert_eq!(busy_of_proc_stat("intr 1 2 3"), None);
        assert_eq!(busy_of_proc_stat("cpu 1 2 x 4"), None);
        assert_eq!(busy_of_proc_stat("cpu 1 2"), None);
    }
}
