//! Runs the pipeline's three runtimes (match, procurement, payment) in this process, as `p2p
//! run` does, until they have processed a scenario: the demo and the benchmark drive it the
//! same way. What the pipeline decided is read back from its topics, never from here.

use crate::generator::{InputTopic, OpenPurchaseOrders, Scenario};
use crate::Planted;
use p2p_avro::Codec;
use p2p_topologies::metrics::MetricsError;
use p2p_topologies::{
    joined, Guarantee, KafkaProperties, MatchConfig, Metrics, PaymentProcessor,
    ProcurementProcessor, Runtime, RuntimeConfig, RuntimeError, StatsSnapshot, Topics,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many records each runtime reads for a scenario, so when the pipeline is through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub match_inputs: u64,
    /// From the ERPs; procurement also reads what match and payment write.
    pub procurement_inputs: u64,
    /// From the ERPs; payment also reads one match per invoice and credit memo planted to match.
    pub payment_inputs: u64,
    /// Invoices planted to match (credit memos aside): each is scheduled, then released by a
    /// payment run or paid in full by credit.
    pub payable: u64,
}

impl Expected {
    pub fn of(scenario: &Scenario) -> Expected {
        let matched = scenario
            .planted
            .iter()
            .filter(|(_, p)| *p == Planted::Matched)
            .count() as u64;
        Self::counted(
            |topic| scenario.count(topic) as u64,
            matched,
            scenario.credit_memos as u64,
        )
    }

    /// For a stream of POs left open: nothing to match, nothing to pay.
    pub fn of_open(stream: &OpenPurchaseOrders) -> Expected {
        Self::counted(|topic| stream.count(topic), 0, 0)
    }

    /// For a stream of `records_on` records per input topic, of which `matched` invoices and
    /// `credit_memos` credit memos are to match.
    fn counted(
        records_on: impl Fn(InputTopic) -> u64,
        matched: u64,
        credit_memos: u64,
    ) -> Expected {
        use InputTopic as I;
        let count = |topics: &[InputTopic]| -> u64 { topics.iter().map(|t| records_on(*t)).sum() };
        let payable = matched - credit_memos;
        Expected {
            match_inputs: count(&[
                I::PurchaseOrders,
                I::GoodsReceipts,
                I::Invoices,
                I::OrgConfigs,
                I::InvoiceDecisions,
                I::ApprovalDecisions,
            ]),
            procurement_inputs: count(&[
                I::Requisitions,
                I::PurchaseOrders,
                I::ApprovalDecisions,
                I::GoodsReceipts,
                I::OrgConfigs,
            ]),
            payment_inputs: count(&[I::PurchaseOrders, I::OrgConfigs, I::SupplierMasters])
                + matched,
            payable,
        }
    }

    /// About how many records the runtimes read in all (procurement's reads of the match's
    /// exceptions are not counted): the length of a progress bar.
    pub fn total(&self) -> u64 {
        self.match_inputs + self.procurement_inputs + self.payment_inputs + self.payable
    }

    /// Payable invoices paid so far: released into a run, or paid in full by credit.
    fn paid(payment: &StatsSnapshot) -> u64 {
        payment.get(RELEASED) + payment.get(PAID_BY_CREDIT)
    }

    /// Whether every runtime has read all it will read, and every payable invoice is released.
    pub fn reached(&self, topics: &Topics, progress: &Progress) -> bool {
        let Progress {
            matching,
            procurement,
            payment,
            ..
        } = progress;
        matching.records_in >= self.match_inputs
            && payment.records_in >= self.payment_inputs
            && Self::paid(payment) >= self.payable
            && procurement.records_in
                >= self.procurement_inputs
                    + matching.out(&topics.invoice_matched)
                    + payment.out(&topics.payment_schedule)
    }

    /// What is missing, for a run that stopped short.
    pub fn shortfall(&self, progress: &Progress) -> String {
        format!(
            "the pipeline processed {} of {} match and {} of {}+ procurement records, and \
             paid {} of {} invoices",
            progress.matching.records_in,
            self.match_inputs,
            progress.procurement.records_in,
            self.procurement_inputs,
            Self::paid(&progress.payment),
            self.payable,
        )
    }
}

/// The payment runtime's count of payment parts released into a run.
const RELEASED: &str = "parts released";
/// Its count of payment parts credit memos paid in full, with nothing for the bank.
const PAID_BY_CREDIT: &str = "parts paid by credit";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// What each runtime has done so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Every runtime has its partitions and has restored their state (as `/readyz` says).
    pub ready: bool,
    pub matching: StatsSnapshot,
    pub procurement: StatsSnapshot,
    pub payment: StatsSnapshot,
}

impl Progress {
    /// Records read by the three runtimes together.
    pub fn records_in(&self) -> u64 {
        self.matching.records_in + self.procurement.records_in + self.payment.records_in
    }

    /// Records written by the three runtimes together: outputs, dead letters, changelogs.
    pub fn records_written(&self) -> u64 {
        self.matching.records_written()
            + self.procurement.records_written()
            + self.payment.records_written()
    }
}

/// How the runtimes are configured for a run.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Prefix of the three application ids (consumer groups, transactional ids, changelogs).
    pub application_id: String,
    pub state_dir: PathBuf,
    pub guarantee: Guarantee,
    pub max_batch: usize,
    pub batch_linger: Duration,
    pub timer_interval: Duration,
    /// Workers per runtime.
    pub workers: usize,
    /// The instance's id (its transactional ids and static group membership).
    pub instance_id: String,
}

impl PipelineSettings {
    /// The runtimes' defaults, under `application_id`.
    pub fn new(application_id: &str, kafka: &KafkaProperties, state_dir: PathBuf) -> Self {
        let defaults = RuntimeConfig::new(application_id, kafka.clone(), state_dir.clone());
        PipelineSettings {
            application_id: application_id.to_owned(),
            state_dir,
            guarantee: defaults.guarantee,
            max_batch: defaults.max_batch,
            batch_linger: defaults.batch_linger,
            timer_interval: defaults.timer_interval,
            workers: defaults.workers,
            instance_id: defaults.instance_id,
        }
    }

    /// The configuration of the runtime of `role` (`match`, `procurement`, `payment`).
    pub fn runtime(&self, role: &str, kafka: &KafkaProperties) -> RuntimeConfig {
        RuntimeConfig {
            guarantee: self.guarantee,
            max_batch: self.max_batch,
            batch_linger: self.batch_linger,
            timer_interval: self.timer_interval,
            workers: self.workers,
            instance_id: self.instance_id.clone(),
            ..RuntimeConfig::new(
                &format!("{}-{role}", self.application_id),
                kafka.clone(),
                self.state_dir.clone(),
            )
        }
    }
}

/// A run of the pipeline over a scenario.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Whether it processed everything before the time limit.
    pub completed: bool,
    /// From the first batch any runtime processed (joining the group and restoring are not
    /// counted) to the last one needed.
    pub elapsed: Duration,
    pub progress: Progress,
}

/// One instance of the pipeline in this process: its three runtimes, running until stopped.
pub struct Instance {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: [tokio::task::JoinHandle<Result<StatsSnapshot, RuntimeError>>; 3],
    stats: [Arc<p2p_topologies::Stats>; 3],
    metrics: Arc<Metrics>,
}

impl Instance {
    /// Starts the three runtimes on `topics` with `settings` (their instance id and state
    /// directory among them).
    pub fn start(
        kafka: &KafkaProperties,
        codec: Arc<Codec>,
        topics: &Topics,
        settings: &PipelineSettings,
    ) -> Result<Instance, PipelineError> {
        let mut matching = MatchConfig::new(
            &format!("{}-match", settings.application_id),
            kafka.clone(),
            settings.state_dir.clone(),
        );
        matching.runtime = settings.runtime("match", kafka);
        matching.topics = topics.clone();
        let matching = p2p_topologies::MatchRuntime::for_match(matching, codec.clone())?;
        let procurement = Runtime::new(
            settings.runtime("procurement", kafka),
            ProcurementProcessor::new(topics.clone(), codec.clone()),
        )?;
        let payment = Runtime::new(
            settings.runtime("payment", kafka),
            PaymentProcessor::new(topics.clone(), codec),
        )?;
        // As `p2p run` has them: measured with the metrics it always keeps.
        let metrics = Metrics::new(3)?;
        let matching = matching.with_metrics(metrics.clone());
        let procurement = procurement.with_metrics(metrics.clone());
        let payment = payment.with_metrics(metrics.clone());
        let stats = [matching.stats(), procurement.stats(), payment.stats()];
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let tasks = [
            tokio::spawn(matching.run(until_stopped())),
            tokio::spawn(procurement.run(until_stopped())),
            tokio::spawn(payment.run(until_stopped())),
        ];
        Ok(Instance {
            stop,
            tasks,
            stats,
            metrics,
        })
    }

    /// What its runtimes have done so far.
    pub fn progress(&self) -> Progress {
        Progress {
            ready: self.metrics.ready(),
            matching: self.stats[0].snapshot(),
            procurement: self.stats[1].snapshot(),
            payment: self.stats[2].snapshot(),
        }
    }

    /// Whether a runtime has ended (failed, since none was asked to stop).
    pub fn ended(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }

    /// Stops the runtimes (each finishes its batch in hand) and returns what they did.
    pub async fn stop(self) -> Result<Progress, PipelineError> {
        let _ = self.stop.send(true);
        let [matching, procurement, payment] = self.tasks;
        let (matching, procurement, payment) =
            tokio::try_join!(joined(matching), joined(procurement), joined(payment))?;
        Ok(Progress {
            ready: false,
            matching,
            procurement,
            payment,
        })
    }
}

/// Runs the three runtimes on `topics` until `expected` is reached or `limit` has passed,
/// then stops them (each finishes its batch in hand). `watch` sees the progress as it goes.
pub async fn run_until_processed(
    kafka: &KafkaProperties,
    codec: Arc<Codec>,
    topics: &Topics,
    settings: &PipelineSettings,
    expected: Expected,
    limit: Duration,
    mut watch: impl FnMut(&Progress),
) -> Result<Finished, PipelineError> {
    let instance = Instance::start(kafka, codec, topics, settings)?;
    let started = Instant::now();
    let mut first_batch = None;
    let mut completed = false;
    while started.elapsed() < limit {
        let last = instance.progress();
        watch(&last);
        if first_batch.is_none() && last.records_in() > 0 {
            first_batch = Some(Instant::now());
        }
        if expected.reached(topics, &last) {
            completed = true;
            break;
        }
        // A runtime that failed ends the run now, with its error.
        if instance.ended() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = first_batch.map_or(started.elapsed(), |t| t.elapsed());
    Ok(Finished {
        completed,
        elapsed,
        progress: instance.stop().await?,
    })
}
