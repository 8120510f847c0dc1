//! The demo's last leg: the payment runs the pipeline instructed go through the bank connector
//! to a simulated bank, and its answers come back until the payments are settled and their POs
//! paid and closed, all on the same embedded Kafka.

use anyhow::{bail, Context};
use p2p_avro::convert::payment::{BankStatusReport, PaymentInstructionRecord};
use p2p_avro::convert::procurement::PoStatusRecord;
use p2p_avro::Codec;
use p2p_connectors::bank_sim::{self, SimConfig, SimState};
use p2p_connectors::connector::{self, ConnectorConfig, ConnectorTopics};
use p2p_connectors::delivery::{AccountConfig, BankConfig};
use p2p_loadtest::audit::{read_payments, read_topic};
use p2p_loadtest::pipeline::PipelineSettings;
use p2p_processors::payment::BankStatus;
use p2p_processors::PoState;
use p2p_topologies::{
    joined, KafkaProperties, PaymentProcessor, ProcurementProcessor, Runtime, Topics,
};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ: Duration = Duration::from_secs(30);

/// What the bank leg did.
pub struct Settled {
    pub files: usize,
    pub executed: usize,
    pub statuses: BTreeMap<&'static str, usize>,
    pub remitted_parts: usize,
    pub settled_invoices: usize,
    pub pos: BTreeMap<String, usize>,
    pub example_file: Option<String>,
}

pub async fn through_the_bank(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    kafka: &KafkaProperties,
    codec: Arc<Codec>,
    topics: &Topics,
    settings: &PipelineSettings,
) -> anyhow::Result<Settled> {
    // The accounts the runs are paid from, each the org's at the simulated bank.
    let mut holders = BTreeMap::new();
    let mut parts = BTreeSet::new();
    for message in read_topic(kafka, &topics.payment_instructions, READ)? {
        let value = codec.decode(message.payload()).await?;
        let run = PaymentInstructionRecord::from_value(&value)?;
        holders.insert(run.debtor_account.clone(), format!("Org {}", run.org));
        parts.extend(run.payments.iter().map(|p| (p.invoice.to_string(), p.part)));
    }
    let connector_topics = ConnectorTopics {
        payment_instructions: topics.payment_instructions.clone(),
        payment_status: topics.payment_status.clone(),
        ..ConnectorTopics::default()
    };
    for topic in [
        &connector_topics.deliveries,
        &connector_topics.refused_reports,
        &Topics::dlq(&topics.payment_instructions),
    ] {
        cluster.create_topic(topic, 1, 1)?;
    }
    // Bound now and handed to the connector, so the address the bank posts to stays ours.
    let webhook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let webhook = webhook_listener.local_addr()?;
    let bank_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bank_url = format!("http://{}", bank_listener.local_addr()?);
    let bank = tokio::spawn(bank_sim::serve(
        bank_listener,
        SimConfig {
            report_url: Some(format!("http://{webhook}/pain002")),
            report_delay_ms: 50,
            reject_every: 0,
        },
    ));
    let accounts = holders
        .iter()
        .map(|(iban, holder)| AccountConfig {
            iban: iban.clone(),
            holder: holder.clone(),
            bic: None,
        })
        .collect();
    let simulated = BankConfig::new("simulated-bank", &format!("{bank_url}/pain001"), accounts);
    let mut config = ConnectorConfig::new(
        "p2p-demo-bank-connector",
        kafka.clone(),
        webhook,
        vec![simulated],
    );
    config.topics = connector_topics;
    config.check().context("the demo's bank accounts")?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let connector = tokio::spawn(connector::run_on(config, webhook_listener, until_stopped()));
    // The payment and procurement topologies again, from where they stopped, to take the
    // bank's statuses: payments remitted and settled, POs paid and closed.
    let payment = Runtime::new(
        settings.runtime("payment", kafka),
        PaymentProcessor::new(topics.clone(), codec.clone()),
    )?;
    let procurement = Runtime::new(
        settings.runtime("procurement", kafka),
        ProcurementProcessor::new(topics.clone(), codec.clone()),
    )?;
    let runtimes = (
        tokio::spawn(payment.run(until_stopped())),
        tokio::spawn(procurement.run(until_stopped())),
    );
    let started = Instant::now();
    let remitted = loop {
        let payments = read_payments(kafka, &codec, topics, READ).await?;
        let remitted = payments.events.get("Remitted").copied().unwrap_or(0);
        if remitted >= parts.len() {
            break remitted;
        }
        if connector.is_finished() || runtimes.0.is_finished() || runtimes.1.is_finished() {
            break remitted;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "within two minutes the bank settled {remitted} of {} payments",
                parts.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Settled invoices reach their POs through one more hop: let it land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    connector.await?.context("the bank connector")?;
    joined(runtimes.0).await?;
    joined(runtimes.1).await?;
    if remitted < parts.len() {
        bail!("a runtime stopped before the bank settled every payment");
    }

    let at_the_bank: SimState = {
        let state = reqwest::get(format!("{bank_url}/state"))
            .await?
            .text()
            .await?;
        serde_json::from_str(&state)?
    };
    bank.abort();
    let twice: Vec<&String> = at_the_bank
        .executed
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(id, _)| id)
        .collect();
    if !twice.is_empty() || at_the_bank.executed.len() != parts.len() {
        bail!(
            "the bank executed {} payments for {} instructed; executed more than once: {twice:?}",
            at_the_bank.executed.len(),
            parts.len()
        );
    }
    let mut statuses = BTreeMap::new();
    for message in read_topic(kafka, &topics.payment_status, READ)? {
        let value = codec.decode(message.payload()).await?;
        let status = match BankStatusReport::from_value(&value)?.status {
            BankStatus::Accepted => "accepted",
            BankStatus::Settled => "settled",
            BankStatus::Rejected(_) => "rejected",
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    let payments = read_payments(kafka, &codec, topics, READ).await?;
    let mut latest = BTreeMap::new();
    for message in read_topic(kafka, &topics.po_status, READ)? {
        let value = codec.decode(message.payload()).await?;
        let status = PoStatusRecord::from_value(&value)?;
        latest.insert(status.po.to_string(), status.state);
    }
    let mut pos = BTreeMap::new();
    for state in latest.values() {
        if matches!(state, PoState::Paid | PoState::Closed) {
            *pos.entry(format!("{state:?}")).or_insert(0) += 1;
        }
    }
    let example_file = read_topic(kafka, &ConnectorTopics::default().deliveries, READ)?
        .first()
        .and_then(|m| m.payload().map(<[u8]>::to_vec))
        .and_then(|p| serde_json::from_slice::<p2p_connectors::ledger::Delivery>(&p).ok())
        .map(|d| d.file);
    Ok(Settled {
        files: at_the_bank.files.len(),
        executed: at_the_bank.executed.len(),
        statuses,
        remitted_parts: remitted,
        settled_invoices: payments.events.get("Settled").copied().unwrap_or(0),
        pos,
        example_file,
    })
}
