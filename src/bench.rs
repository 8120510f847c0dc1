//! `p2p bench`: the benchmark harness (loadtest/) on a real broker, from the command line.

use crate::stream_args::StreamArgs;
use clap::Args;
use p2p_avro::Codec;
use p2p_loadtest::bench::{run, BenchConfig, Phases};
use p2p_topologies::{KafkaProperties, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The Kafka cluster (deploy/local/kafka.sh starts one on the default).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// A librdkafka property for every client of the run, the baseline's too, as `[kafka]`
    /// in a run configuration gives it (e.g. `--kafka linger.ms=1`); repeatable.
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = kafka_property)]
    kafka_properties: Vec<(String, String)>,
    /// The schema registry's Confluent-compatible API (deploy/local/registry.sh).
    #[arg(long, default_value = "http://127.0.0.1:8081/apis/ccompat/v7")]
    registry_url: String,
    /// Use the schemas embedded in the binary instead of a registry.
    #[arg(long)]
    embedded_schemas: bool,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Most records in a batch (a transaction); default: the runtime's.
    #[arg(long)]
    max_batch: Option<usize>,
    /// How long a batch waits to fill, in ms; default: the runtime's.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Workers per topology (partitions processed in parallel); default: the runtime's.
    #[arg(long)]
    workers: Option<usize>,
    /// Records per second in the latency phase; default: half the exactly-once throughput.
    #[arg(long)]
    rate: Option<f64>,
    /// Phases to run (comma-separated): baseline, exactly-once, at-least-once, latency, and
    /// open-pos (not by default: it loads `--open-pos` POs, and takes minutes), scale (not by
    /// default: instances 1 -> 3 -> 1 under a fixed-rate stream for about two minutes) and grow
    /// (not by default: every topic grown to twice, then three times `--partitions` under the
    /// same stream).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,exactly-once,at-least-once,latency"
    )]
    phases: Vec<Phase>,
    /// POs issued and left open in the open-pos phase (memory with a large state).
    #[arg(long, default_value_t = 1_000_000)]
    open_pos: u64,
    /// Where report.md and bench.svg go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// How long a phase may take, in seconds, before the run fails.
    #[arg(long, default_value_t = 600)]
    limit_secs: u64,
    /// Skip the warm-up: by default the pipeline first runs, unmeasured, over the stream of
    /// its first 20 orgs, so the broker's JIT compiles its transactional paths before any
    /// phase is timed.
    #[arg(long)]
    no_warm_up: bool,
    // Last: its help heading holds for what follows it.
    #[command(flatten)]
    stream: StreamArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Baseline,
    ExactlyOnce,
    AtLeastOnce,
    Latency,
    OpenPos,
    Scale,
    Grow,
}

fn kafka_property(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{arg:?} is not KEY=VALUE")),
    }
}

/// Orgs in the stream unless `--orgs` says otherwise: about 120,000 records, so that a
/// throughput phase lasts seconds even at batches of 2,000 (with 20 orgs, the baseline was done
/// in a tenth of a second, and a phase's start and end were most of what it measured).
const BENCH_ORGS: usize = 200;

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut kafka = KafkaProperties::new();
    kafka.insert("bootstrap.servers".into(), args.bootstrap.clone());
    kafka.extend(args.kafka_properties.iter().cloned());
    let codec = if args.embedded_schemas {
        Codec::Embedded
    } else {
        Codec::registry(&args.registry_url)?
    };
    let defaults = RuntimeConfig::new("bench", kafka.clone(), PathBuf::new());
    let generator = args.stream.generator(BENCH_ORGS)?;
    println!(
        "benchmark: {} orgs, {} POs on average, on {}; report in {}",
        generator.orgs,
        generator.pos_per_org,
        args.bootstrap,
        args.out.display()
    );
    let config = BenchConfig {
        kafka,
        codec: Arc::new(codec),
        generator,
        partitions: args.partitions,
        max_batch: args.max_batch.unwrap_or(defaults.max_batch),
        workers: args.workers.unwrap_or(defaults.workers).max(1),
        batch_linger: args
            .linger_ms
            .map_or(defaults.batch_linger, Duration::from_millis),
        rate: args.rate,
        open_pos: args.open_pos,
        phases: Phases {
            baseline: args.phases.contains(&Phase::Baseline),
            exactly_once: args.phases.contains(&Phase::ExactlyOnce),
            at_least_once: args.phases.contains(&Phase::AtLeastOnce),
            latency: args.phases.contains(&Phase::Latency),
            open_pos: args.phases.contains(&Phase::OpenPos),
            scale: args.phases.contains(&Phase::Scale),
            grow: args.phases.contains(&Phase::Grow),
        },
        out_dir: args.out.clone(),
        limit: Duration::from_secs(args.limit_secs),
        warm_up: !args.no_warm_up,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let results = run(config).await?;
    for target in results.targets() {
        let met = match target.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "not measured",
        };
        println!("target: {}: {} ({met})", target.name, target.measured);
    }
    println!(
        "audit passed: {}; report: {}",
        results.audited.join(", "),
        args.out.join("report.md").display()
    );
    Ok(())
}
