//! `p2p produce`: the load generator as a plain producer. It writes a generated stream to the
//! topics a running pipeline (`p2p run`) reads, through the same Avro and registry path an
//! ERP uses, at a fixed rate or as fast as the broker takes it.

use crate::config::PipelineConfig;
use crate::stream_args::StreamArgs;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use p2p_loadtest::bench::recent;
use p2p_loadtest::produce::{
    erp_producer, erp_producer_lingering, produce_at_rate, produce_records,
};
use p2p_loadtest::{Planted, Scenario};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The pipeline's configuration, as for `run`: the cluster, the registry and the topic
    /// names come from it (create the topics first with `p2p admin create-topics`).
    #[arg(long, short)]
    config: PathBuf,
    /// Records per second, each stamped with the wall clock as it is sent and the orgs
    /// interleaved; without it, the stream in its order, as fast as the broker takes it.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    #[command(flatten)]
    stream: StreamArgs,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        Ok(_) => Err("a rate is a positive number of records per second".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Orgs in the stream unless `--orgs` says otherwise.
const PRODUCE_ORGS: usize = 20;

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let config = PipelineConfig::load(&args.config)?;
    config.check_cluster(&config.topics.inputs(), &[]).await?;
    // Named before any record is sent: the broker would refuse the first record of a missing
    // topic with a bare UnknownTopicOrPartition.
    let (kafka, topics) = (config.kafka.clone(), config.topics.clone());
    let missing = tokio::task::spawn_blocking(move || {
        p2p_topologies::admin::missing_topics(&kafka, &topics.inputs())
    })
    .await??;
    if !missing.is_empty() {
        anyhow::bail!(
            "input topics missing: {}; create them with `p2p admin create-topics --config {}`",
            missing.join(", "),
            args.config.display()
        );
    }
    let codec = config.codec()?;
    // Dated around now and due at once: a pipeline reading it pays what it matches today.
    let generator = args.stream.generator(PRODUCE_ORGS)?;
    let scenario = Scenario::generate(&recent(&generator));
    let records = &scenario.records;
    let bootstrap = &config.kafka["bootstrap.servers"];
    match args.rate {
        Some(rate) => println!(
            "producing {} records of {} orgs to {bootstrap} at {rate} records/s ({})",
            records.len(),
            generator.orgs,
            codec.describe()
        ),
        None => println!(
            "producing {} records of {} orgs to {bootstrap} ({})",
            records.len(),
            generator.orgs,
            codec.describe()
        ),
    }
    let producer = match args.rate {
        Some(_) => erp_producer(&config.kafka),
        None => erp_producer_lingering(&config.kafka, 0),
    }
    .context("creating the producer")?;
    let started = Instant::now();
    let produced = match args.rate {
        Some(rate) => {
            let bar = progress_bar(records.len() as u64);
            produce_at_rate(&producer, &codec, &config.topics, records, rate, |n| {
                bar.set_position(n as u64)
            })
            .await?;
            bar.finish_and_clear();
            records.len()
        }
        None => produce_records(&producer, &codec, &config.topics, records).await?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "produced {produced} records in {elapsed:.1} s ({:.0} records/s)",
        produced as f64 / elapsed.max(1e-9)
    );
    println!("{}", planted_summary(&scenario));
    Ok(())
}

/// What the pipeline should decide about the stream, for an operator to compare with what it
/// published.
fn planted_summary(scenario: &Scenario) -> String {
    let count = |wanted: fn(&Planted) -> bool| {
        scenario
            .planted
            .iter()
            .filter(|(_, planted)| wanted(planted))
            .count()
    };
    format!(
        "planted: {} invoices to match ({} of them credit memos), {} to hold as exceptions, \
         {} left waiting for goods; {} POs, {} requisitions; {} undecodable records for the \
         dead-letter queues",
        count(|p| *p == Planted::Matched),
        scenario.credit_memos,
        count(|p| matches!(p, Planted::Exception(_))),
        count(|p| *p == Planted::Pending),
        scenario.lifecycles.len(),
        scenario.requisitions.len(),
        scenario
            .records
            .iter()
            .filter(|r| matches!(r.payload, p2p_loadtest::generator::Payload::Garbage(_)))
            .count(),
    )
}

fn progress_bar(length: u64) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
