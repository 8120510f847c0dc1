//! `p2p`: the operator's binary. `demo` runs the whole pipeline in one process on an
//! in-process Kafka; `run` runs it against a real cluster; `admin` prepares a cluster; `dlq`
//! inspects and replays dead letters; `produce` feeds a cluster generated load; `bench`
//! measures the pipeline on a real broker.

mod bench;
mod config;
mod demo;
mod demo_bank;
mod produce;
mod stream_args;

use anyhow::Context;
use clap::{Parser, Subcommand};
use p2p_topologies::{joined, Metrics, PaymentProcessor, ProcurementProcessor, Runtime};
use std::path::PathBuf;

/// jemalloc for everything the process allocates, RocksDB's and librdkafka's memory too (its
/// symbols replace malloc's): with a million open POs the benchmark ran 36% faster than on
/// glibc's allocator, at about the same peak RSS (ADR 0012).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "p2p",
    version,
    about = "Procure-to-pay stream processing on Apache Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline on an embedded Kafka (librdkafka's mock cluster), fed by the load
    /// generator, and print what it decided. Needs nothing installed.
    Demo(demo::DemoArgs),
    /// Run the pipeline's topologies (procurement, match, payment) against a Kafka cluster
    /// until SIGINT or SIGTERM.
    Run {
        /// TOML configuration (see deploy/local/pipeline.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// For trials: timers (payment runs, escalations) fire by a clock this far ahead of
        /// the wall clock (`7d`, `36h`, `-90m`), to see today what is due next week.
        #[arg(long, value_parser = p2p_topologies::Clock::parse_offset, allow_hyphen_values = true)]
        clock_offset: Option<p2p_topologies::Clock>,
    },
    /// Benchmark on a real broker: a pass-through baseline, then the pipeline exactly once,
    /// at least once, and at a fixed rate for latency; audits every run and writes a report.
    Bench(bench::BenchArgs),
    /// The load generator as a plain producer: a generated stream (orgs, POs, receipts,
    /// invoices, credit memos, anomalies) to the topics `run` reads, at a fixed rate.
    Produce(produce::ProduceArgs),
    /// Cluster administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The bank connector: each run on payment-instructions as a pain.001 file to its bank
    /// (HTTPS, resent until answered, never paid twice), the bank's acknowledgement and its
    /// pain.002 reports (webhook or inbox directory) back to payment-status.
    BankConnector {
        /// TOML configuration (see deploy/local/bank-connector.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// A simulated bank to point the connector at: takes pain.001 files, answers, posts
    /// pain.002 reports back, and injects faults on command (POST /faults).
    BankSim {
        #[arg(long, default_value = "127.0.0.1:9900")]
        listen: std::net::SocketAddr,
        /// The connector's webhook, e.g. http://127.0.0.1:9899/pain002.
        #[arg(long)]
        report_url: Option<String>,
        /// How long after a file each of its two reports (accepted, then settled) is posted.
        #[arg(long, default_value_t = 2_000)]
        report_delay_ms: u64,
        /// Reject every n-th payment (AC04, account closed); 0 rejects none.
        #[arg(long, default_value_t = 0)]
        reject_every: u32,
        /// Serve HTTPS, demanding a client certificate: a fresh CA, server and client
        /// certificate are written here, for the connector's `ca_certificate`,
        /// `client_certificate` and `client_key`.
        #[arg(long)]
        tls_dir: Option<PathBuf>,
    },
    /// Dead-letter queues: see what is in one, send records back to where they came from.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters of a DLQ topic: where each came from, why, and the error.
    Inspect(DlqArgs),
    /// Send dead letters back to their original topic, with their original key and headers
    /// (plus `dlq.replayed.from`). The dead letters stay in the DLQ.
    Replay(DlqArgs),
}

#[derive(clap::Args)]
struct DlqArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// The DLQ topic, e.g. invoice-events.dlq.
    #[arg(long)]
    topic: String,
    /// Only dead letters of this reason: undecodable, invalid-document, key-mismatch, rejected,
    /// wrong-partition.
    #[arg(long)]
    reason: Option<String>,
    /// Only this partition of the DLQ topic.
    #[arg(long)]
    partition: Option<i32>,
    /// Only from this offset of the DLQ topic (inclusive).
    #[arg(long)]
    from_offset: Option<i64>,
    /// Only up to this offset of the DLQ topic (inclusive).
    #[arg(long)]
    to_offset: Option<i64>,
    /// How long reading the topic to its end may take.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

impl DlqArgs {
    fn selection(&self) -> p2p_topologies::dlq::DlqSelection {
        p2p_topologies::dlq::DlqSelection {
            reason: self.reason.clone(),
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
        }
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create every topic of the pipeline (inputs, outputs, DLQs) that does not exist yet.
    CreateTopics {
        #[arg(long, short)]
        config: PathBuf,
        /// Partitions per topic; all P2P topics share one count (co-partitioning).
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Read a configuration as `run` would, without a broker, and print what it sets: the
    /// consumer groups, topics and state; a configuration `run` would refuse fails here with
    /// the same message (a deployment's check before it rolls out).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Print only the topics it uses, one a line, DLQs included: the names a deployment's
        /// topic manifests must have (the Helm chart's check compares its KafkaTopics).
        #[arg(long)]
        topics: bool,
    },
    /// Grow every P2P topic and changelog to `--to` partitions. With `--dry-run`, reads the
    /// changelogs and prints which key groups and how many orgs would move where, and how
    /// much state; shrinking is refused.
    GrowPartitions {
        #[arg(long, short)]
        config: PathBuf,
        /// The new partition count, more than the topics have.
        #[arg(long)]
        to: u32,
        /// Plan only: print what would move, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo prints a summary; its logs would only interleave with it.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Bench(_) | Command::Produce(_) => "warn",
        _ => "info,rdkafka=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run {
            config,
            clock_offset,
        } => {
            let mut config = config::PipelineConfig::load(&config)?;
            if let Some(clock) = clock_offset {
                config.clock_offset = clock;
            }
            if config.clock_offset != p2p_topologies::Clock::WALL {
                tracing::warn!(
                    offset_ms = config.clock_offset.offset_ms(),
                    "timers fire by a clock offset from the wall clock (a trial, not production)"
                );
            }
            let codec = config.codec()?;
            config
                .check_cluster(&config.topics.inputs(), &config.groups())
                .await?;
            tracing::info!(schemas = %codec.describe(), "starting the procurement, match and payment topologies");
            let metrics = Metrics::new(3)?;
            let serving = metrics.serve(config.metrics_addr).await?;
            tracing::info!(%serving, "serving /metrics, /healthz and /readyz");
            let matching =
                p2p_topologies::MatchRuntime::for_match(config.match_config()?, codec.clone())
                    .context("starting the match runtime")?
                    .with_metrics(metrics.clone());
            let procurement = Runtime::new(
                config.runtime_config("procurement"),
                ProcurementProcessor::new(config.topics.clone(), codec.clone()),
            )
            .context("starting the procurement runtime")?
            .with_metrics(metrics.clone());
            let payment = Runtime::new(
                config.runtime_config("payment"),
                PaymentProcessor::new(config.topics.clone(), codec),
            )
            .context("starting the payment runtime")?
            .with_metrics(metrics);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let until_stopped = || {
                let mut stopped = stopped.clone();
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }
            };
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            // A task each, so what blocks in one runtime holds up no other. One failing
            // runtime stops the process (and with it the others): an operator restarts the
            // whole application, never half of it.
            let (matched, procured, paid) = tokio::try_join!(
                joined(tokio::spawn(matching.run(until_stopped()))),
                joined(tokio::spawn(procurement.run(until_stopped()))),
                joined(tokio::spawn(payment.run(until_stopped())))
            )?;
            if let Some(spans) = config.spans.clone() {
                // The spans of the last batches, before the process ends.
                let _ = tokio::task::spawn_blocking(move || spans.flush()).await;
            }
            tracing::info!(match_stats = ?matched, procurement_stats = ?procured, payment_stats = ?paid, "stopped");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::CreateTopics {
                    config,
                    partitions,
                    replication,
                },
        } => {
            let config = config::PipelineConfig::load(&config)?;
            config.check_cluster(&[], &[]).await?;
            let created = p2p_topologies::admin::create_topics(
                &config.kafka,
                &config.topics,
                partitions,
                replication,
            )
            .await?;
            if created.is_empty() {
                println!("every topic already exists");
            } else {
                println!("created {} topic(s): {}", created.len(), created.join(", "));
            }
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::CheckConfig { config, topics },
        } => {
            let config = config::PipelineConfig::load(&config)?;
            let matching = config.match_config()?;
            if topics {
                for topic in config.topics.all() {
                    println!("{topic}");
                }
                return Ok(());
            }
            let secret: Vec<&String> = config.kafka_env.keys().collect();
            println!(
                "configuration accepted: application {}, instance {}, {} guarantee",
                config.application_id,
                config.instance_id,
                match matching.runtime.guarantee {
                    p2p_topologies::Guarantee::ExactlyOnce => "exactly-once",
                    p2p_topologies::Guarantee::AtLeastOnce => "at-least-once",
                }
            );
            println!(
                "  bootstrap servers {}; from the environment: {secret:?}",
                config.kafka["bootstrap.servers"]
            );
            println!("  consumer groups {}", config.groups().join(", "));
            println!(
                "  {} topics (DLQs included); state in {}, {} MiB, {} workers per topology",
                config.topics.all().len(),
                config.state_dir.display(),
                config.state_memory_mib,
                config.workers
            );
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::GrowPartitions {
                    config,
                    to,
                    dry_run,
                },
        } => {
            let config = config::PipelineConfig::load(&config)?;
            config.check_cluster(&[], &[]).await?;
            let stores = p2p_topologies::admin::topology_stores(&config.topics, |topology| {
                config.runtime_config(topology)
            });
            let kafka = config.kafka.clone();
            let topics = config.topics.clone();
            let report = {
                let (kafka, topics, stores) = (kafka.clone(), topics.clone(), stores.clone());
                tokio::task::spawn_blocking(move || {
                    p2p_topologies::admin::plan_growth(
                        &kafka,
                        &topics,
                        &stores,
                        to,
                        std::time::Duration::from_secs(600),
                    )
                })
                .await??
            };
            println!("{}", p2p_topologies::growth::describe(report.growth));
            for (topology, log) in &report.logs {
                println!("{topology}: {log}");
            }
            for plan in &report.plans {
                print!("{plan}");
            }
            for absent in &report.absent {
                println!("{absent}: not there (no state kept exactly once yet): nothing to move");
            }
            if dry_run {
                return Ok(());
            }
            let grown =
                p2p_topologies::admin::carry_out_growth(&kafka, &topics, &stores, &report).await?;
            println!(
                "grew {} topic(s) to {to} partitions, the inputs last: {}",
                grown.len(),
                grown.join(", ")
            );
            println!(
                "the runtimes decide each old partition's backlog, then move its state out; \
                 `--dry-run` shows what still waits"
            );
            Ok(())
        }
        Command::BankConnector { config } => {
            let config = p2p_connectors::connector::ConnectorConfig::load(&config)?;
            // As `run` does: a broker that does not answer, refuses the credentials or hides
            // the topics is named within seconds, not after a transaction times out.
            let topics = config.topics.clone();
            config::check_cluster(
                &config.kafka,
                &[
                    &topics.payment_instructions,
                    &topics.payment_status,
                    &topics.deliveries,
                ],
                std::slice::from_ref(&config.connector_id),
            )
            .await?;
            p2p_connectors::connector::run(config, shutdown_signal()).await
        }
        Command::BankSim {
            listen,
            report_url,
            report_delay_ms,
            reject_every,
            tls_dir,
        } => {
            use p2p_connectors::{bank_sim, tls};
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let config = bank_sim::SimConfig {
                report_url,
                report_delay_ms,
                reject_every,
            };
            match tls_dir {
                None => {
                    tracing::info!(%listen, "simulated bank on http: POST /pain001, POST /faults, GET /state");
                    Ok(bank_sim::serve(listener, config).await?)
                }
                Some(dir) => {
                    let pki = tls::Pki::generate().context("generating certificates")?;
                    let files = pki.write(&dir).context("writing certificates")?;
                    tracing::info!(%listen, ca = %files.ca.display(), client_certificate = %files.client_certificate.display(), client_key = %files.client_key.display(), "simulated bank on https, client certificates required: POST /pain001, POST /faults, GET /state");
                    let acceptor = pki.acceptor().context("TLS")?;
                    Ok(bank_sim::serve(tls::TlsListener::new(listener, acceptor), config).await?)
                }
            }
        }
        Command::Bench(args) => bench::bench(args).await,
        Command::Produce(args) => produce::produce(args).await,
        Command::Dlq { command } => dlq(command).await,
    }
}

async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    use p2p_topologies::dlq;
    let (args, replaying) = match &command {
        DlqCommand::Inspect(args) => (args, false),
        DlqCommand::Replay(args) => (args, true),
    };
    let mut config = config::PipelineConfig::load(&args.config)?;
    // Its reader's group id under the application id, so a prefixed ACL covers it.
    config
        .kafka
        .insert("group.id".into(), config.application_id.clone());
    config.check_cluster(&[args.topic.as_str()], &[]).await?;
    let timeout = std::time::Duration::from_secs(args.timeout_secs);
    let letters = if replaying {
        dlq::replay(&config.kafka, &args.topic, &args.selection(), timeout).await?
    } else {
        dlq::inspect(&config.kafka, &args.topic, &args.selection(), timeout)?
    };
    for letter in &letters {
        let header = |name| letter.header(name).unwrap_or_else(|| "?".into());
        println!(
            "{}[{}]@{} key={} reason={} from {}[{}]@{} processor={}: {}",
            letter.dlq_topic,
            letter.partition,
            letter.offset,
            String::from_utf8_lossy(letter.key.as_deref().unwrap_or_default()),
            header(dlq::HEADER_REASON),
            header(dlq::HEADER_TOPIC),
            header(dlq::HEADER_PARTITION),
            header(dlq::HEADER_OFFSET),
            header(dlq::HEADER_PROCESSOR),
            header(dlq::HEADER_ERROR),
        );
    }
    let verb = if replaying { "replayed" } else { "selected" };
    println!("{verb} {} dead letter(s) of {}", letters.len(), args.topic);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing the batch in hand");
}
