//! The bank connector as it runs: `payment-instructions` in (read committed), one pain.001 per
//! run to the run's bank over HTTPS, the bank's acknowledgement and pain.002 reports back to
//! `payment-status`, exactly once as the bank and the pipeline see it.
//!
//! One task owns the Kafka clients and the ledger (the `Ledger` below): every change to a
//! delivery is one Kafka transaction (the ledger record, the statuses it publishes, dead
//! letters, and the offset of the instruction it consumed), applied to memory only once
//! committed. A run's ledger record is committed before its file is first sent, so after a
//! crash at any instant the connector knows every file that may be at a bank, and sends those
//! the bank has not answered for again: the same file, the same `MsgId`, which the bank
//! dedupes on. Each bank has its own sender task, retrying and sparing it on its own, so one
//! bank that is down holds up no other.

use crate::delivery::{backoff, BankClient, BankConfig, Breaker, BreakerState, Outcome};
use crate::ledger::{DeliveredPayment, Delivery, DeliveryState, StatusUpdate, UpdateStatus};
use crate::pain001::{pain001, Run};
use crate::pain002::{self, ResolveError};
use anyhow::Context;
use p2p_avro::contracts::PAYMENT_STATUS;
use p2p_avro::convert::payment::{BankStatusReport, PaymentInstructionRecord};
use p2p_avro::Codec;
use p2p_processors::payment::BankStatus;
use p2p_processors::{EventTime, InvoiceId, OrgId};
use p2p_topologies::admin::{client_config, producer_config, read_topic};
use p2p_topologies::dlq::{dead_letter, DlqReason};
use p2p_topologies::record::{InputRecord, OutputRecord};
use p2p_topologies::spans::{SpanExport, TracingSection};
use p2p_topologies::trace;
use p2p_topologies::KafkaProperties;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The connector's configuration file (TOML; see `deploy/local/bank-connector.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Its consumer group and transactional id: one active connector per id (a second one
    /// started with it fences the first).
    #[serde(default = "default_connector_id")]
    pub connector_id: String,
    pub schema_registry_url: Option<String>,
    pub kafka: KafkaProperties,
    #[serde(default)]
    pub topics: ConnectorTopics,
    /// Replicas of the topics the connector creates (its ledger, its dead letters): 3 on a
    /// production cluster.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Where the banks' pain.002 webhook (`POST /pain002`), `/metrics` and `/healthz` are
    /// served.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve the webhook over HTTPS with this certificate, and, with `client_ca`, only to
    /// banks presenting a certificate it issued. Without it, plain HTTP (behind a TLS ingress).
    pub webhook_tls: Option<WebhookTls>,
    /// A directory the banks' pain.002 files are dropped into (SFTP, EBICS download): each
    /// file is read, then moved to `done/` or, refused, to `refused/` with its reason beside.
    pub inbox_dir: Option<PathBuf>,
    pub banks: Vec<BankConfig>,
    /// Spans of each send of a file to its bank, in its run's trace, exported over OTLP
    /// (ADR 0027).
    #[serde(default)]
    pub tracing: TracingSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTls {
    /// PEM, the chain after the certificate.
    pub certificate: PathBuf,
    /// PEM (PKCS#8 or the key's own format).
    pub key: PathBuf,
    /// PEM CA(s) whose client certificates are accepted.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorTopics {
    pub payment_instructions: String,
    pub payment_status: String,
    /// The delivery ledger (compacted, keyed by run id); readable by anyone who wants to
    /// see what was sent to which bank and what it answered.
    pub deliveries: String,
    /// Status reports refused (invalid, or naming no file the connector sent).
    pub refused_reports: String,
}

impl Default for ConnectorTopics {
    fn default() -> Self {
        Self {
            payment_instructions: "payment-instructions".into(),
            payment_status: "payment-status".into(),
            deliveries: "bank-deliveries".into(),
            refused_reports: "bank-status-reports.dlq".into(),
        }
    }
}

fn default_connector_id() -> String {
    "p2p-bank-connector".into()
}

fn default_replication() -> i32 {
    1
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9899))
}

impl ConnectorConfig {
    /// A connector `connector_id` on `kafka`, serving its webhook on `listen`, delivering to
    /// `banks`; the rest as a config file leaving it out would have it.
    pub fn new(
        connector_id: &str,
        kafka: KafkaProperties,
        listen: SocketAddr,
        banks: Vec<BankConfig>,
    ) -> Self {
        Self {
            connector_id: connector_id.to_owned(),
            schema_registry_url: None,
            kafka,
            topics: ConnectorTopics::default(),
            replication_factor: default_replication(),
            listen,
            webhook_tls: None,
            inbox_dir: None,
            banks,
            tracing: TracingSection::default(),
        }
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Refuses what would only fail later: no bank, a bank without accounts, an account at
    /// two banks, a bad IBAN or BIC.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.banks.is_empty(),
            "no [[banks]]: nothing to deliver to"
        );
        let mut seen = HashMap::new();
        for bank in &self.banks {
            anyhow::ensure!(
                !bank.accounts.is_empty() || bank.takes_unlisted_accounts,
                "bank {}: no accounts to pay from",
                bank.name
            );
            for account in &bank.accounts {
                let iban = crate::bank_ids::check_iban(&account.iban)
                    .with_context(|| format!("bank {}: account {}", bank.name, account.iban))?;
                if let Some(bic) = &account.bic {
                    crate::bank_ids::check_bic(bic)
                        .with_context(|| format!("bank {}: BIC {bic}", bank.name))?;
                }
                if let Some(other) = seen.insert(iban.clone(), bank.name.clone()) {
                    anyhow::bail!("account {iban} is at two banks: {other} and {}", bank.name);
                }
            }
        }
        Ok(())
    }

    fn codec(&self) -> anyhow::Result<Codec> {
        Ok(match &self.schema_registry_url {
            Some(url) => Codec::registry(url)?,
            None => Codec::Embedded,
        })
    }
}

/// The connector's metrics, per bank.
#[derive(Clone)]
pub struct ConnectorMetrics {
    registry: Registry,
    files_sent: IntCounterVec,
    acknowledged: IntCounterVec,
    rejected: IntCounterVec,
    retries: IntCounterVec,
    breaker: IntGaugeVec,
    delivery_seconds: HistogramVec,
    reports: IntCounterVec,
}

impl ConnectorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let bank = &["bank"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let files_sent = counter(
            "p2p_bank_files_sent_total",
            "pain.001 sends, resends included",
            bank,
        )?;
        let acknowledged = counter(
            "p2p_bank_files_acknowledged_total",
            "files the bank took",
            bank,
        )?;
        let rejected = counter(
            "p2p_bank_files_rejected_total",
            "files the bank refused (4xx)",
            bank,
        )?;
        let retries = counter(
            "p2p_bank_retries_total",
            "sends that failed transiently and are retried",
            bank,
        )?;
        let reports = counter(
            "p2p_bank_status_reports_total",
            "pain.002 reports received, by outcome",
            &["outcome"],
        )?;
        let breaker = IntGaugeVec::new(
            Opts::new("p2p_bank_breaker_state", "0 closed, 1 half-open, 2 open"),
            bank,
        )?;
        registry.register(Box::new(breaker.clone()))?;
        let delivery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "p2p_bank_delivery_seconds",
                "from a file's first send to the bank's answer, retries included",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
            ]),
            bank,
        )?;
        registry.register(Box::new(delivery_seconds.clone()))?;
        Ok(Self {
            registry,
            files_sent,
            acknowledged,
            rejected,
            retries,
            breaker,
            delivery_seconds,
            reports,
        })
    }

    /// Each configured bank's series at 0 (its breaker closed) before it sends anything: an
    /// alert or a panel on a bank's rejections needs the series to exist.
    pub fn declare_banks<'a>(&self, banks: impl IntoIterator<Item = &'a str>) {
        for bank in banks {
            for counter in [
                &self.files_sent,
                &self.acknowledged,
                &self.rejected,
                &self.retries,
            ] {
                counter.with_label_values(&[bank]);
            }
            self.breaker.with_label_values(&[bank]);
        }
    }

    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// A file for a bank's sender.
struct Job {
    run_id: String,
    msg_id: String,
    file: String,
    /// The run's `traceparent`: each send of the file is a span under it, named to the bank.
    trace: Option<String>,
}

/// What the ledger's owner is asked to do.
enum Command {
    /// A bank's final answer for a run's file, after `attempts` sends.
    Answered {
        run_id: String,
        outcome: Outcome,
        attempts: u32,
    },
    /// A pain.002 received (`source`: the webhook, or the inbox file's name), already read
    /// (by whoever received it: checking it against its XSD is no work for the ledger's owner).
    Report {
        xml: String,
        parsed: Result<pain002::StatusReport, pain002::Pain002Error>,
        source: String,
        reply: oneshot::Sender<Result<ReportApplied, ReportRefused>>,
    },
}

/// A report taken: how many payments it moved (0 for one applied before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportApplied {
    pub run_id: String,
    pub statuses_published: usize,
    pub already_applied: bool,
}

/// A report refused, and why (also in its dead letter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefused {
    #[error("{0}")]
    Invalid(#[from] pain002::Pain002Error),
    #[error("the report answers message {0}, which this connector never sent")]
    UnknownMessage(String),
    #[error("the report does not fit file {msg_id}: {error}")]
    DoesNotFit { msg_id: String, error: ResolveError },
    #[error("the connector is stopping")]
    Stopping,
}

/// Runs the connector until `stop` resolves, serving its webhook on `config.listen`.
pub async fn run(
    config: ConnectorConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    run_on(config, listener, stop).await
}

/// Runs the connector until `stop` resolves, serving its webhook on a listener bound by the
/// caller: one that had to name the address before the connector started (to a bank, say)
/// keeps it from being taken meanwhile. `config.listen` is not used.
pub async fn run_on(
    config: ConnectorConfig,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let spans = config
        .tracing
        .export("p2p-bank-connector", &config.connector_id)?;
    let metrics = ConnectorMetrics::new()?;
    metrics.declare_banks(config.banks.iter().map(|bank| bank.name.as_str()));
    let codec = config.codec()?;
    let producer = transactional_producer(&config)?;
    create_topics(&config).await?;
    let ledger = restore(&config).with_context(|| "restoring the delivery ledger")?;
    tracing::info!(
        runs = ledger.len(),
        unanswered = ledger.values().filter(|d| !d.is_answered()).count(),
        "delivery ledger restored"
    );
    // Static membership: a restarted connector (same id) takes its partitions back at once,
    // not after the session of the one it replaces (killed, say) times out.
    let consumer: StreamConsumer = client_config(&config.kafka)
        .set("group.id", &config.connector_id)
        .set("group.instance.id", &config.connector_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[config.topics.payment_instructions.as_str()])?;

    let (commands, commands_in) = mpsc::channel::<Command>(1024);
    // The tasks beside the ledger's owner end with it (their handles abort on drop), so a
    // stopped connector leaves nothing listening or sending.
    let mut tasks = Tasks(Vec::new());
    let mut senders = HashMap::new();
    for bank in &config.banks {
        let client = BankClient::new(bank)?;
        let (jobs, jobs_in) = mpsc::unbounded_channel();
        senders.insert(bank.name.clone(), jobs);
        tasks.0.push(tokio::spawn(bank_sender(
            bank.clone(),
            client,
            jobs_in,
            commands.clone(),
            metrics.clone(),
            spans.clone(),
        )));
    }
    let addr = listener.local_addr()?;
    match &config.webhook_tls {
        None => {
            tracing::info!(%addr, "serving POST /pain002, /metrics and /healthz over http");
            tasks.0.push(tokio::spawn(serve_webhook(
                listener,
                commands.clone(),
                metrics.clone(),
            )));
        }
        Some(tls) => {
            let read = |path: &PathBuf| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let client_ca = tls.client_ca.as_ref().map(read).transpose()?;
            let acceptor = crate::tls::acceptor(
                &read(&tls.certificate)?,
                &read(&tls.key)?,
                client_ca.as_deref(),
            )
            .context("the webhook's TLS certificate and key")?;
            tracing::info!(%addr, client_certificates = client_ca.is_some(), "serving POST /pain002, /metrics and /healthz over https");
            tasks.0.push(tokio::spawn(serve_webhook(
                crate::tls::TlsListener::new(listener, acceptor),
                commands.clone(),
                metrics.clone(),
            )));
        }
    }
    if let Some(dir) = &config.inbox_dir {
        tasks
            .0
            .push(tokio::spawn(watch_inbox(dir.clone(), commands.clone())));
    }
    let mut owner = Ledger {
        config,
        codec,
        producer,
        consumer,
        deliveries: ledger,
        by_msg_id: HashMap::new(),
        senders,
        metrics,
    };
    owner.index();
    owner.resend_unanswered();
    drop(commands);
    let result = owner.run(commands_in, stop).await;
    drop(tasks);
    if let Some(spans) = spans {
        // The spans of the last sends, before the connector ends.
        let _ = tokio::task::spawn_blocking(move || spans.flush()).await;
    }
    result
}

struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The ledger's owner: the only writer of the ledger topic, of `payment-status` and of the
/// consumed offsets.
struct Ledger {
    config: ConnectorConfig,
    codec: Codec,
    producer: FutureProducer,
    consumer: StreamConsumer,
    deliveries: HashMap<String, Delivery>,
    by_msg_id: HashMap<String, String>,
    senders: HashMap<String, mpsc::UnboundedSender<Job>>,
    metrics: ConnectorMetrics,
}

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

impl Ledger {
    fn index(&mut self) {
        self.by_msg_id = self
            .deliveries
            .values()
            .map(|d| (d.msg_id.clone(), d.run_id.clone()))
            .collect();
    }

    /// Every file the bank has not answered for goes to its sender again, as it was.
    fn resend_unanswered(&self) {
        for delivery in self.deliveries.values().filter(|d| !d.is_answered()) {
            self.dispatch(delivery);
        }
    }

    fn dispatch(&self, delivery: &Delivery) {
        if let Some(sender) = self.senders.get(&delivery.bank) {
            let _ = sender.send(Job {
                run_id: delivery.run_id.clone(),
                msg_id: delivery.msg_id.clone(),
                file: delivery.file.clone(),
                trace: delivery.trace.clone(),
            });
        } else {
            tracing::error!(run = %delivery.run_id, bank = %delivery.bank, "the run's bank is no longer configured: its file waits until it is");
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    tracing::info!("stopping; unanswered files are sent again at the next start");
                    return Ok(());
                }
                Some(command) = commands.recv() => self.command(command).await?,
                message = self.consumer.recv() => {
                    let input = InputRecord::of(&message.context("consuming payment instructions")?);
                    self.instruction(input).await?;
                }
            }
        }
    }

    /// One instruction consumed: its run recorded (file built, bank chosen) and handed to
    /// its bank's sender, or dead-lettered with why; its offset committed with either.
    async fn instruction(&mut self, input: InputRecord) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(
            &input.topic,
            input.partition,
            Offset::Offset(input.offset + 1),
        )?;
        let now = chrono::Utc::now();
        let prepared = match self.prepare(&input, now).await {
            Ok(Some(delivery)) => {
                // Kafka would refuse the record, the transaction fail, and the restarted
                // connector meet the same run again: refused here, once, with why.
                let record = self.ledger_record(&delivery)?;
                let size = record.payload.as_ref().map_or(0, Vec::len);
                fits_the_ledger(size).map(|()| (delivery, record))
            }
            Ok(None) => {
                // Recorded before (a replayed or re-delivered instruction): nothing to send.
                self.commit(Vec::new(), Some(offsets)).await?;
                return Ok(());
            }
            Err(refusal) => Err(refusal),
        };
        match prepared {
            Ok((delivery, record)) => {
                self.commit(vec![record], Some(offsets)).await?;
                tracing::info!(run = %delivery.run_id, bank = %delivery.bank, msg_id = %delivery.msg_id, payments = delivery.payments.len(), trace = delivery.trace.as_deref().unwrap_or("none"), links = ?delivery.trace_links, "run recorded; sending its file");
                self.by_msg_id
                    .insert(delivery.msg_id.clone(), delivery.run_id.clone());
                self.dispatch(&delivery);
                self.deliveries.insert(delivery.run_id.clone(), delivery);
            }
            Err((reason, error)) => {
                tracing::error!(offset = input.offset, %error, "payment instruction dead-lettered");
                let letter = dead_letter(&input, reason, &error, &self.config.connector_id);
                self.commit(vec![letter], Some(offsets)).await?;
            }
        }
        Ok(())
    }

    async fn prepare(
        &self,
        input: &InputRecord,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Delivery>, (DlqReason, String)> {
        let value = patiently("reading a payment instruction", || {
            self.codec.decode(input.payload.as_deref())
        })
        .await
        .map_err(|e| (DlqReason::Undecodable, e.to_string()))?;
        let instruction = PaymentInstructionRecord::from_value(&value)
            .map_err(|e| (DlqReason::InvalidDocument, e.to_string()))?;
        if self.deliveries.contains_key(&instruction.run_id) {
            return Ok(None);
        }
        let listed = self.config.banks.iter().find_map(|b| {
            b.account(&instruction.debtor_account)
                .map(|a| (b, a.clone()))
        });
        let unlisted = || {
            let bank = self
                .config
                .banks
                .iter()
                .find(|b| b.takes_unlisted_accounts)?;
            let account = crate::delivery::AccountConfig {
                iban: instruction.debtor_account.clone(),
                holder: format!("Org {}", instruction.org),
                bic: None,
            };
            Some((bank, account))
        };
        let (bank, account) = listed.or_else(unlisted).ok_or_else(|| {
            (
                DlqReason::Rejected,
                format!(
                    "no [[banks]] account is {}: configure the bank it is at, then replay this dead letter",
                    instruction.debtor_account
                ),
            )
        })?;
        let mut run = Run::from_instruction(&instruction, &account.holder, account.bic.as_deref());
        let date_moved = crate::delivery::execution_date(run.execution_date, now, bank.cut_off)
            .map(|(to, why)| {
                let moved = crate::ledger::DateMoved {
                    from: run.execution_date,
                    to,
                    why,
                };
                run.execution_date = to;
                moved
            });
        if let Some(moved) = &date_moved {
            tracing::info!(run = %run.run_id, from = %moved.from, to = %moved.to, why = %moved.why, "execution date moved");
        }
        let file = pain001(&run, now).map_err(|e| (DlqReason::Rejected, e.to_string()))?;
        let payments = file
            .end_to_end
            .iter()
            .map(|(id, invoice, part)| DeliveredPayment {
                end_to_end_id: id.clone(),
                invoice_id: invoice.to_string(),
                part: *part,
                published: None,
            })
            .collect();
        Ok(Some(Delivery {
            run_id: instruction.run_id.clone(),
            org_id: instruction.org.to_string(),
            bank: bank.name.clone(),
            payment_information_id: file.msg_id.clone(),
            msg_id: file.msg_id,
            execution_date: run.execution_date,
            date_moved,
            file: file.xml,
            payments,
            state: DeliveryState::Sent,
            attempts: 0,
            reports: Vec::new(),
            updated_at: now.timestamp_millis(),
            trace: p2p_topologies::trace::traceparent_of(&input.headers),
            trace_links: p2p_topologies::trace::links_of(&input.headers),
        }))
    }

    async fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Answered {
                run_id,
                outcome,
                attempts,
            } => {
                let Some(mut delivery) = self.deliveries.get(&run_id).cloned() else {
                    return Ok(());
                };
                let at = chrono::Utc::now().timestamp_millis();
                delivery.attempts += attempts;
                let updates = match &outcome {
                    Outcome::Acknowledged { bank_reference } => {
                        delivery.acknowledge(bank_reference.clone(), at)
                    }
                    Outcome::Rejected { reason } => delivery.reject(reason, at),
                    Outcome::Transient { .. } => return Ok(()),
                };
                let mut records = self.statuses(&delivery, &updates).await?;
                records.push(self.ledger_record(&delivery)?);
                self.commit(records, None).await?;
                tracing::info!(run = %run_id, state = ?delivery.state, statuses = updates.len(), "bank answered");
                self.deliveries.insert(run_id, delivery);
            }
            Command::Report {
                xml,
                parsed,
                source,
                reply,
            } => {
                let result = self.report(&xml, parsed, &source).await?;
                let outcome = match &result {
                    Ok(applied) if applied.already_applied => "repeated",
                    Ok(_) => "applied",
                    Err(_) => "refused",
                };
                self.metrics.reports.with_label_values(&[outcome]).inc();
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// A pain.002: applied to the delivery it answers, or refused and dead-lettered. `Err`
    /// only for Kafka failing.
    async fn report(
        &mut self,
        xml: &str,
        parsed: Result<pain002::StatusReport, pain002::Pain002Error>,
        source: &str,
    ) -> anyhow::Result<Result<ReportApplied, ReportRefused>> {
        let applied = parsed.map_err(ReportRefused::from).and_then(|report| {
            let run_id = self
                .by_msg_id
                .get(&report.original_msg_id)
                .ok_or_else(|| ReportRefused::UnknownMessage(report.original_msg_id.clone()))?;
            let delivery = &self.deliveries[run_id];
            let resolution = report
                .resolve(&delivery.blocks())
                .map_err(|error| ReportRefused::DoesNotFit {
                    msg_id: delivery.msg_id.clone(),
                    error,
                })?;
            let mut delivery = delivery.clone();
            let already = delivery.reports.contains(&report.msg_id);
            let updates = delivery.apply(
                &report.msg_id,
                &resolution,
                chrono::Utc::now().timestamp_millis(),
            );
            if resolution.duplicate {
                tracing::info!(run = %delivery.run_id, "the bank reports a resend as a duplicate: the first file stands");
            }
            Ok((delivery, updates, already))
        });
        match applied {
            Ok((delivery, updates, already)) => {
                if !already {
                    let mut records = self.statuses(&delivery, &updates).await?;
                    records.push(self.ledger_record(&delivery)?);
                    self.commit(records, None).await?;
                }
                let applied = ReportApplied {
                    run_id: delivery.run_id.clone(),
                    statuses_published: if already { 0 } else { updates.len() },
                    already_applied: already,
                };
                tracing::info!(%source, run = %applied.run_id, statuses = applied.statuses_published, repeated = already, "status report applied");
                self.deliveries.insert(delivery.run_id.clone(), delivery);
                Ok(Ok(applied))
            }
            Err(refused) => {
                tracing::warn!(%source, error = %refused, "status report refused");
                let letter = OutputRecord {
                    topic: self.config.topics.refused_reports.clone(),
                    key: source.as_bytes().to_vec(),
                    payload: Some(xml.as_bytes().to_vec()),
                    headers: vec![
                        (
                            p2p_topologies::dlq::HEADER_REASON.into(),
                            b"refused-report".to_vec(),
                        ),
                        (
                            p2p_topologies::dlq::HEADER_ERROR.into(),
                            refused.to_string().into_bytes(),
                        ),
                        (
                            p2p_topologies::dlq::HEADER_PROCESSOR.into(),
                            self.config.connector_id.clone().into_bytes(),
                        ),
                        ("bank.report.source".into(), source.as_bytes().to_vec()),
                    ],
                    timestamp: None,
                };
                self.commit(vec![letter], None).await?;
                Ok(Err(refused))
            }
        }
    }

    async fn statuses(
        &self,
        delivery: &Delivery,
        updates: &[StatusUpdate],
    ) -> anyhow::Result<Vec<OutputRecord>> {
        let org = OrgId::parse(&delivery.org_id).context("the ledger's org id")?;
        let mut records = Vec::with_capacity(updates.len());
        for update in updates {
            let report = BankStatusReport {
                org: org.clone(),
                invoice: InvoiceId::parse(&update.invoice_id).context("the ledger's invoice id")?,
                part: update.part,
                status: match &update.status {
                    UpdateStatus::Accepted => BankStatus::Accepted,
                    UpdateStatus::Settled => BankStatus::Settled,
                    UpdateStatus::Rejected(reason) => BankStatus::Rejected(reason.clone()),
                },
                occurred_at: EventTime(delivery.updated_at),
            };
            let topic = &self.config.topics.payment_status;
            let payload = patiently("writing a payment status", || {
                self.codec.encode(topic, &PAYMENT_STATUS, report.to_value())
            })
            .await?;
            records.push(OutputRecord {
                topic: topic.clone(),
                key: delivery.org_id.as_bytes().to_vec(),
                payload: Some(payload),
                headers: Vec::new(),
                timestamp: Some(delivery.updated_at),
            });
        }
        Ok(records)
    }

    fn ledger_record(&self, delivery: &Delivery) -> anyhow::Result<OutputRecord> {
        let mut headers = vec![("content-type".into(), b"application/json".to_vec())];
        // The entry is in the run's trace, linked to what the run links to (ADR 0027).
        if let Some(trace) = &delivery.trace {
            headers.push((
                p2p_topologies::trace::TRACEPARENT.into(),
                trace.clone().into_bytes(),
            ));
        }
        p2p_topologies::trace::add_links(
            &mut headers,
            delivery.trace_links.iter().map(String::as_str),
        );
        Ok(OutputRecord {
            topic: self.config.topics.deliveries.clone(),
            key: delivery.run_id.as_bytes().to_vec(),
            payload: Some(serde_json::to_vec(delivery)?),
            headers,
            timestamp: Some(delivery.updated_at),
        })
    }

    /// `records` and, if given, the consumed `offsets` in one transaction.
    async fn commit(
        &self,
        records: Vec<OutputRecord>,
        offsets: Option<TopicPartitionList>,
    ) -> anyhow::Result<()> {
        self.producer.begin_transaction()?;
        let sends = records
            .iter()
            .map(|record| self.producer.send(record.to_send(), TRANSACTION_TIMEOUT));
        for sent in futures::future::join_all(sends).await {
            if let Err((error, _)) = sent {
                let _ = tokio::task::block_in_place(|| {
                    self.producer.abort_transaction(TRANSACTION_TIMEOUT)
                });
                return Err(error).context("producing inside the transaction");
            }
        }
        if let Some(offsets) = offsets {
            let group = self
                .consumer
                .group_metadata()
                .context("the consumer's group metadata")?;
            tokio::task::block_in_place(|| {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
            })
            .context("committing the instruction's offset")?;
        }
        tokio::task::block_in_place(|| self.producer.commit_transaction(TRANSACTION_TIMEOUT))
            .context("committing the transaction")?;
        Ok(())
    }
}

/// `attempt` until it succeeds or fails for good: a schema registry that is unavailable is
/// waited for (backing off to 10 s), never a reason to dead-letter an instruction.
async fn patiently<T, F>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, p2p_avro::CodecError>
where
    F: std::future::Future<Output = Result<T, p2p_avro::CodecError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match attempt().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what}: the schema registry is unavailable; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            result => return result,
        }
    }
}

fn transactional_producer(config: &ConnectorConfig) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = producer_config(&config.kafka)
        .set("transactional.id", &config.connector_id)
        .set("transaction.timeout.ms", "60000")
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        .set("message.max.bytes", MAX_LEDGER_RECORD.to_string())
        .create()?;
    // Fences an earlier instance with the same id and aborts what it left open, so the
    // ledger read next holds every committed write and no half one.
    tokio::task::block_in_place(|| producer.init_transactions(TRANSACTION_TIMEOUT))
        .context("initialising transactions (is the broker reachable?)")?;
    Ok(producer)
}

/// The largest ledger record: a run's whole file (about 600 bytes a payment before lz4).
const MAX_LEDGER_RECORD: usize = 16 << 20;

/// Whether a ledger record of `size` bytes fits, with room for its key and headers.
fn fits_the_ledger(size: usize) -> Result<(), (DlqReason, String)> {
    const ROOM: usize = 64 << 10;
    if size + ROOM <= MAX_LEDGER_RECORD {
        Ok(())
    } else {
        Err((
            DlqReason::Rejected,
            format!(
                "the run's file and its ledger record take {size} bytes, more than the \
                 ledger's {} MiB: split the run (fewer payments per run) and replay it",
                MAX_LEDGER_RECORD >> 20
            ),
        ))
    }
}

async fn create_topics(config: &ConnectorConfig) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<_> = client_config(&config.kafka).create()?;
    let max = MAX_LEDGER_RECORD.to_string();
    let instructions_dlq = p2p_topologies::Topics::dlq(&config.topics.payment_instructions);
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&config.topics.deliveries, 1, replication())
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max),
        NewTopic::new(&config.topics.refused_reports, 1, replication())
            .set("max.message.bytes", &max),
        NewTopic::new(&instructions_dlq, 1, replication()),
    ];
    // Only what is missing: a cluster whose ACLs let the connector use its topics but not
    // create them (or the demo's embedded Kafka, which has no admin API) is fine as it is.
    let metadata =
        tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_secs(30)))
            .context("reading the cluster's topics (is the broker reachable?)")?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<&NewTopic> = topics
        .iter()
        .filter(|t| !existing.contains(&t.name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for result in admin.create_topics(missing, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

fn restore(config: &ConnectorConfig) -> anyhow::Result<HashMap<String, Delivery>> {
    let mut kafka = config.kafka.clone();
    kafka.insert("group.id".into(), config.connector_id.clone());
    let mut deliveries = HashMap::new();
    for message in read_topic(&kafka, &config.topics.deliveries, Duration::from_secs(120))? {
        let Some(payload) = message.payload() else {
            continue;
        };
        let delivery: Delivery = serde_json::from_slice(payload).with_context(|| {
            format!(
                "ledger record at offset {} is not a delivery",
                message.offset()
            )
        })?;
        deliveries.insert(delivery.run_id.clone(), delivery);
    }
    Ok(deliveries)
}

/// A bank's sender: its files one at a time, each until the bank answers.
async fn bank_sender(
    bank: BankConfig,
    client: BankClient,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ledger: mpsc::Sender<Command>,
    metrics: ConnectorMetrics,
    spans: Option<SpanExport>,
) {
    let mut breaker = Breaker::new(bank.breaker.clone());
    let label = [bank.name.as_str()];
    let show = |breaker: &Breaker| {
        metrics
            .breaker
            .with_label_values(&label)
            .set(match breaker.state() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open { .. } => 2,
            })
    };
    show(&breaker);
    while let Some(job) = jobs.recv().await {
        let started = Instant::now();
        let run_span = job.trace.as_deref().and_then(trace::parse);
        let mut attempts = 0u32;
        let outcome = loop {
            if let Err(wait) = breaker.permit(Instant::now()) {
                tokio::time::sleep(wait).await;
                continue;
            }
            show(&breaker);
            attempts += 1;
            metrics.files_sent.with_label_values(&label).inc();
            // Each send is a span of the run's trace, and the request names it as its
            // parent: what the bank traces hangs under it.
            let attempt_span = trace::child_of(run_span.as_ref());
            let sent_at = std::time::SystemTime::now();
            let outcome = client
                .send(
                    &job.msg_id,
                    &job.file,
                    Some(&trace::traceparent(&attempt_span)),
                )
                .await;
            if let Some(spans) = &spans {
                spans.export(send_span(
                    spans,
                    (&bank.name, &job, attempts),
                    &outcome,
                    attempt_span,
                    run_span.as_ref(),
                    sent_at,
                ));
            }
            match outcome {
                Outcome::Transient { reason } => {
                    breaker.failed(Instant::now());
                    show(&breaker);
                    metrics.retries.with_label_values(&label).inc();
                    let wait = backoff(attempts - 1, &bank.retry, rand::random::<f64>());
                    tracing::warn!(bank = %bank.name, run = %job.run_id, attempt = attempts, %reason, retry_in_ms = wait.as_millis() as u64, "send failed; the same file goes again");
                    tokio::time::sleep(wait).await;
                }
                answer => {
                    breaker.answered();
                    show(&breaker);
                    break answer;
                }
            }
        };
        metrics
            .delivery_seconds
            .with_label_values(&label)
            .observe(started.elapsed().as_secs_f64());
        match &outcome {
            Outcome::Acknowledged { .. } => metrics.acknowledged.with_label_values(&label).inc(),
            _ => metrics.rejected.with_label_values(&label).inc(),
        }
        let answered = Command::Answered {
            run_id: job.run_id,
            outcome,
            attempts,
        };
        if ledger.send(answered).await.is_err() {
            return;
        }
    }
}

/// The span of one send of `job`'s file to `bank` (its `attempt`-th), with what came of it.
fn send_span(
    spans: &SpanExport,
    (bank, job, attempt): (&str, &Job, u32),
    outcome: &Outcome,
    span: opentelemetry::trace::SpanContext,
    run_span: Option<&opentelemetry::trace::SpanContext>,
    sent_at: std::time::SystemTime,
) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry::KeyValue;
    let mut data = spans.span(
        format!("send pain.001 to {bank}"),
        SpanKind::Client,
        span,
        run_span,
        sent_at,
    );
    let (answer, status) = match outcome {
        Outcome::Acknowledged { .. } => ("acknowledged", Status::Ok),
        Outcome::Rejected { reason } => ("rejected", Status::error(reason.clone())),
        Outcome::Transient { reason } => ("transient", Status::error(reason.clone())),
    };
    data.status = status;
    data.attributes = vec![
        KeyValue::new("p2p.bank", bank.to_owned()),
        KeyValue::new("p2p.run_id", job.run_id.clone()),
        KeyValue::new("p2p.pain001.msg_id", job.msg_id.clone()),
        KeyValue::new("p2p.attempt", i64::from(attempt)),
        KeyValue::new("p2p.answer", answer),
    ];
    data
}

async fn serve_webhook<L>(listener: L, ledger: mpsc::Sender<Command>, metrics: ConnectorMetrics)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    type Shared = (mpsc::Sender<Command>, ConnectorMetrics);
    async fn pain002_in(State((ledger, _)): State<Shared>, body: String) -> (StatusCode, String) {
        match submit(&ledger, body, "webhook".into()).await {
            Ok(applied) => (
                StatusCode::OK,
                serde_json::json!({
                    "run_id": applied.run_id,
                    "statuses_published": applied.statuses_published,
                    "already_applied": applied.already_applied,
                })
                .to_string(),
            ),
            Err(refused) => {
                let status = match refused {
                    ReportRefused::Invalid(_) => StatusCode::BAD_REQUEST,
                    ReportRefused::UnknownMessage(_) | ReportRefused::DoesNotFit { .. } => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    ReportRefused::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                };
                (
                    status,
                    serde_json::json!({ "error": refused.to_string() }).to_string(),
                )
            }
        }
    }
    let app = axum::Router::new()
        .route("/pain002", post(pain002_in))
        .route(
            "/metrics",
            get(|State((_, metrics)): State<Shared>| async move { metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_LEDGER_RECORD))
        .with_state((ledger, metrics));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the webhook stopped serving");
    }
}

async fn submit(
    ledger: &mpsc::Sender<Command>,
    xml: String,
    source: String,
) -> Result<ReportApplied, ReportRefused> {
    let parsed = {
        let xml = xml.clone();
        tokio::task::spawn_blocking(move || pain002::parse(&xml))
            .await
            .map_err(|_| ReportRefused::Stopping)?
    };
    let (reply, answer) = oneshot::channel();
    ledger
        .send(Command::Report {
            xml,
            parsed,
            source,
            reply,
        })
        .await
        .map_err(|_| ReportRefused::Stopping)?;
    answer.await.map_err(|_| ReportRefused::Stopping)?
}

/// Reads the pain.002 files dropped into `dir`, oldest name first.
async fn watch_inbox(dir: PathBuf, ledger: mpsc::Sender<Command>) {
    let (done, refused) = (dir.join("done"), dir.join("refused"));
    for d in [&done, &refused] {
        if let Err(e) = std::fs::create_dir_all(d) {
            tracing::error!(dir = %d.display(), error = %e, "cannot create the inbox's folders");
            return;
        }
    }
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read an inbox file yet");
                    continue;
                }
            };
            let result = submit(&ledger, text, format!("inbox:{name}")).await;
            let moved = match &result {
                Ok(_) => std::fs::rename(&path, done.join(&name)),
                Err(ReportRefused::Stopping) => return,
                Err(refusal) => {
                    std::fs::write(refused.join(format!("{name}.reason")), refusal.to_string())
                        .and_then(|_| std::fs::rename(&path, refused.join(&name)))
                }
            };
            if let Err(e) = moved {
                tracing::error!(file = %path.display(), error = %e, "cannot move an inbox file");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> ConnectorConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/local/bank-connector.toml");
        ConnectorConfig::load(&path).unwrap()
    }

    #[test]
    fn a_run_too_large_for_the_ledger_is_refused_with_why_not_retried_forever() {
        assert_eq!(fits_the_ledger(4 << 20), Ok(()));
        let (reason, why) = fits_the_ledger(MAX_LEDGER_RECORD).unwrap_err();
        assert_eq!(reason, DlqReason::Rejected);
        assert!(why.contains("split the run"), "{why}");
    }

    #[test]
    fn the_local_configuration_reads_and_what_would_only_fail_later_is_refused_now() {
        let config = local();
        assert_eq!(config.banks[0].accounts[0].holder, "ACME Industries AG");
        assert_eq!(
            config.banks[0].cut_off,
            chrono::NaiveTime::from_hms_opt(15, 0, 0)
        );
        let refused = |config: ConnectorConfig| config.check().unwrap_err().to_string();

        let mut two_banks = local();
        let mut other = two_banks.banks[0].clone();
        other.name = "other".into();
        two_banks.banks.push(other);
        assert_eq!(
            refused(two_banks),
            "account DE89370400440532013000 is at two banks: simulated-bank and other"
        );
        let mut typo = local();
        typo.banks[0].accounts[0].iban = "DE89370400440532013001".into();
        assert!(refused(typo).contains("DE89370400440532013001"));
        let mut nothing = local();
        nothing.banks[0].accounts.clear();
        nothing.banks[0].takes_unlisted_accounts = false;
        assert_eq!(
            refused(nothing),
            "bank simulated-bank: no accounts to pay from"
        );
        let mut none = local();
        none.banks.clear();
        assert_eq!(refused(none), "no [[banks]]: nothing to deliver to");
    }
}
