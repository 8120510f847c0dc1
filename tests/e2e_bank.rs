//! The bank connector on the real broker against the simulated bank: payment runs on
//! `payment-instructions` become pain.001 files at the bank, and the bank's acknowledgements
//! and pain.002 reports come back on `payment-status`, each payment executed once while the
//! bank fails, loses acknowledgements and reports twice.

mod common;

use common::bank::{config, connector_id, free_port, start, Bank, DEBTOR_IBAN};
use common::{kafka, poll, registry_codec, TestTopics};
use p2p_avro::contracts::PAYMENT_INSTRUCTION;
use p2p_avro::convert::payment::{BankStatusReport, InstructedPayment, PaymentInstructionRecord};
use p2p_connectors::bank_sim;
use p2p_connectors::connector::ConnectorConfig;
use p2p_loadtest::audit::read_topic;
use p2p_loadtest::produce::erp_producer;
use p2p_processors::payment::BankStatus;
use p2p_processors::*;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// A run of `n` payments of the SAP-style org `1000`, as the payment topology instructs it.
fn run(sequence: u32, n: u32) -> PaymentInstructionRecord {
    let org = OrgId::parse("1000").unwrap();
    let today = chrono::Utc::now().date_naive();
    let payments: Vec<InstructedPayment> = (1..=n)
        .map(|i| InstructedPayment {
            invoice: InvoiceId::parse(&format!("INV-2026/{sequence:03}{i:03}")).unwrap(),
            part: 1,
            supplier: SupplierId::parse("V100234").unwrap(),
            creditor_name: "Müller & Söhne Schraubenwerk GmbH".into(),
            creditor_iban: "DE02120300000000202051".into(),
            creditor_bic: Some("BYLADEM1001".into()),
            amount: Money::new(dec!(1209.80) + rust_decimal::Decimal::from(i), eur()),
            remittance: format!("Rechnung 5100{sequence:03}{i:03}"),
        })
        .collect();
    let total = payments.iter().map(|p| p.amount.amount()).sum();
    PaymentInstructionRecord {
        run_id: format!("{org}/EUR/{DEBTOR_IBAN}/{today}/{sequence}"),
        org,
        currency: eur(),
        debtor_account: DEBTOR_IBAN.into(),
        execution_date: today,
        total: Money::new(total, eur()),
        payments,
        created_at: EventTime(chrono::Utc::now().timestamp_millis()),
    }
}

/// Publishes payment instructions as the payment topology does (Avro, keyed by org).
#[derive(Clone)]
struct Instructions {
    producer: rdkafka::producer::FutureProducer,
    codec: std::sync::Arc<p2p_avro::Codec>,
    topic: String,
}

impl Instructions {
    fn to(topic: &str) -> Instructions {
        Instructions {
            producer: erp_producer(&kafka()).unwrap(),
            codec: registry_codec(),
            topic: topic.to_owned(),
        }
    }

    async fn send(&self, instruction: &PaymentInstructionRecord) {
        self.send_with(instruction, rdkafka::message::OwnedHeaders::new())
            .await;
    }

    /// The instruction as the payment topology writes it: in its run's trace, linked to its
    /// payments' traces (ADR 0027).
    async fn send_traced(&self, instruction: &PaymentInstructionRecord, trace: &str, links: &str) {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "traceparent",
                value: Some(trace),
            })
            .insert(rdkafka::message::Header {
                key: p2p_topologies::trace::LINKS,
                value: Some(links),
            });
        self.send_with(instruction, headers).await;
    }

    async fn send_with(
        &self,
        instruction: &PaymentInstructionRecord,
        headers: rdkafka::message::OwnedHeaders,
    ) {
        let value = instruction.to_value().unwrap();
        let bytes = self
            .codec
            .encode(&self.topic, &PAYMENT_INSTRUCTION, value)
            .await
            .unwrap();
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(instruction.org.as_str())
                    .payload(&bytes)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}

/// Every status published per (invoice, part), in order.
async fn statuses(topic: &str) -> BTreeMap<(String, u32), Vec<BankStatus>> {
    let codec = registry_codec();
    let mut seen: BTreeMap<(String, u32), Vec<BankStatus>> = BTreeMap::new();
    for message in read_topic(&kafka(), topic, Duration::from_secs(30)).unwrap() {
        let value = codec.decode(message.payload()).await.unwrap();
        let report = BankStatusReport::from_value(&value).unwrap();
        seen.entry((report.invoice.to_string(), report.part))
            .or_default()
            .push(report.status);
    }
    seen
}

/// The statuses on `topic` once `payments` payments have each had their final one.
async fn every_payment_ended(
    topic: &str,
    payments: usize,
) -> BTreeMap<(String, u32), Vec<BankStatus>> {
    poll(
        "every payment's final status",
        || statuses(topic),
        |s| s.len() == payments && s.values().all(|h| is_final(h)),
    )
    .await
}

fn is_final(history: &[BankStatus]) -> bool {
    matches!(
        history.last(),
        Some(BankStatus::Settled | BankStatus::Rejected(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_payment_reaches_the_bank_once_and_its_status_comes_back_through_faults() {
    let topics = TestTopics::create("bank", 2).await;
    let id = connector_id("bank-connector");
    let listen = free_port();
    let bank = Bank::start(format!("http://{listen}/pain002"), 4).await;
    // The bank starts badly: two 500s, then an acknowledgement lost past the sender's
    // timeout, then a connection dropped mid-answer; every report is posted twice.
    bank.faults(serde_json::json!({
        "fail_next": 2, "lose_acks": 1, "lost_ack_ms": 2500, "drop_connections": 1,
        "duplicate_reports": true
    }))
    .await;

    let instructions = Instructions::to(&topics.payment_instructions);
    let runs: Vec<PaymentInstructionRecord> = (1..=3).map(|s| run(s, 4)).collect();
    // The last run in a trace of its own, linked to a PO's (ADR 0027).
    let run_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let po_link = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for r in &runs[..2] {
        instructions.send(r).await;
    }
    instructions.send_traced(&runs[2], run_trace, po_link).await;
    // A re-delivered instruction (the same run id) and one for an account at no configured
    // bank.
    instructions.send(&runs[0]).await;
    let mut stranger = run(9, 1);
    stranger.debtor_account = "GB82WEST12345698765432".into();
    stranger.run_id = format!("1000/EUR/GB82WEST12345698765432/x/{}", 9);
    instructions.send(&stranger).await;

    let connector = start(config(&topics, &id, listen, &bank.url));
    let payments = 12;
    let seen = every_payment_ended(&topics.payment_status, payments).await;
    // Reports may still be on their way (each is posted twice): let them land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    connector.stop().await;

    let state = bank.state().await;
    assert_eq!(state.files.len(), 3, "one file per run: {state:#?}");
    assert_eq!(state.executed.len(), payments);
    assert_eq!(
        state.invalid_files, 0,
        "every file valid against the pain.001 XSD"
    );
    assert!(
        state.executed.values().all(|&n| n == 1),
        "a payment executed twice: {state:#?}"
    );
    assert!(state.refused_while_down >= 2, "{state:#?}");
    assert!(
        state.duplicates_answered >= 2,
        "the files whose acknowledgement was lost or cut off were sent again and answered as \
         duplicates: {state:#?}"
    );
    // The traced run's file went to the bank with its trace, and its ledger entry, beside
    // the file, keeps the PO's trace among its links.
    let deliveries = config(&topics, &id, listen, &bank.url).topics.deliveries;
    let entry = read_topic(&kafka(), &deliveries, Duration::from_secs(30))
        .unwrap()
        .into_iter()
        .find(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
                .is_ok_and(|d| d["run_id"] == runs[2].run_id.as_str())
        })
        .expect("the traced run's ledger entry");
    let delivery: serde_json::Value = serde_json::from_slice(entry.payload().unwrap()).unwrap();
    assert_eq!(delivery["trace_links"], serde_json::json!([po_link]));
    let headers = p2p_topologies::record::InputRecord::of(&entry).headers;
    assert_eq!(
        p2p_topologies::trace::links_of(&headers),
        vec![po_link.to_owned()]
    );
    let msg_id = delivery["msg_id"].as_str().unwrap();
    let sent_in: Vec<&str> = state.traces[msg_id].split('-').collect();
    let run: Vec<&str> = run_trace.split('-').collect();
    assert_eq!(sent_in[1], run[1], "the file went in the run's trace");
    assert_ne!(sent_in[2], run[2], "under the span of its send");
    assert_eq!(
        state.traces.len(),
        3,
        "an untraced run's file goes in a trace started for its send"
    );
    let seen_after = statuses(&topics.payment_status).await;
    assert_eq!(
        seen, seen_after,
        "reports posted twice published nothing twice"
    );
    let rejected = seen
        .values()
        .filter(|h| matches!(h.last(), Some(BankStatus::Rejected(_))))
        .count();
    assert_eq!(rejected, state.rejected.len());
    assert_eq!(rejected, 3, "every 4th of 12");
    for ((invoice, _), history) in &seen {
        match history.as_slice() {
            [BankStatus::Accepted, BankStatus::Settled] => {}
            [BankStatus::Accepted, BankStatus::Rejected(reason)]
            | [BankStatus::Rejected(reason)] => {
                assert_eq!(reason, "AC04: Account closed", "{invoice}")
            }
            other => panic!("{invoice}: {other:?}"),
        }
    }
    let dead = read_topic(
        &kafka(),
        &p2p_topologies::Topics::dlq(&topics.payment_instructions),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "the run for an account at no configured bank"
    );

    // Restarted, with the ledger read back: nothing is sent again, and a report about a file
    // the connector never sent is refused with a clear answer.
    let connector = start(config(&topics, &id, listen, &bank.url));
    instructions.send(&runs[1]).await;
    let refused = poll(
        "the webhook",
        || async {
            let xml =
                bank_sim::pain002_report("R-X", "NEVER-SENT", &[("B".into(), "E".into(), "ACSC")]);
            reqwest::Client::new()
                .post(format!("http://{listen}/pain002"))
                .body(xml)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        },
        |s| s.is_some(),
    )
    .await;
    assert_eq!(refused, Some(422));
    tokio::time::sleep(Duration::from_secs(2)).await;
    connector.stop().await;
    assert_eq!(bank.state().await.files.len(), 3, "no file sent twice");
    assert_eq!(statuses(&topics.payment_status).await, seen);
}

/// `config` as the TOML file `p2p bank-connector --config` reads.
fn config_file(config: &ConnectorConfig, dir: &std::path::Path) -> std::path::PathBuf {
    let bank = &config.banks[0];
    let kafka: String = config
        .kafka
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    let text = format!(
        r#"connector_id = "{id}"
schema_registry_url = "{registry}"
listen = "{listen}"

[kafka]
{kafka}
[topics]
payment_instructions = "{instructions}"
payment_status = "{status}"
deliveries = "{deliveries}"
refused_reports = "{refused}"

[[banks]]
name = "{name}"
endpoint = "{endpoint}"
connect_timeout_ms = {connect}
request_timeout_ms = {request}
retry = {{ first_backoff_ms = 50, max_backoff_ms = 400 }}
breaker = {{ failures = 3, open_ms = 300 }}

[[banks.accounts]]
iban = "{iban}"
holder = "ACME Industries AG"
bic = "COBADEFFXXX"
"#,
        id = config.connector_id,
        registry = config.schema_registry_url.as_deref().unwrap(),
        listen = config.listen,
        instructions = config.topics.payment_instructions,
        status = config.topics.payment_status,
        deliveries = config.topics.deliveries,
        refused = config.topics.refused_reports,
        name = bank.name,
        endpoint = bank.endpoint,
        connect = bank.connect_timeout_ms,
        request = bank.request_timeout_ms,
        iban = DEBTOR_IBAN,
    );
    let path = dir.join("bank-connector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The connector as operators run it: the `p2p` binary, its log appended to `log`.
fn spawn_connector(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["bank-connector", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the p2p binary")
}

/// Kills (`P2P_BANK_KILLS`, default 4) of the connector process at random instants
/// (`P2P_BANK_SEED` replays them) while runs arrive, the bank loses acknowledgements and posts
/// every report twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_random_instants_the_connector_pays_nothing_twice_and_loses_nothing() {
    use rand::{Rng, SeedableRng};
    let kills: usize = std::env::var("P2P_BANK_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("P2P_BANK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("P2P_BANK_SEED={seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let topics = TestTopics::create("bank-kill", 2).await;
    let id = connector_id("bank-kill");
    let listen = free_port();
    let bank = Bank::start(format!("http://{listen}/pain002"), 5).await;
    bank.faults(serde_json::json!({
        "lose_acks": 3, "lost_ack_ms": 1500, "duplicate_reports": true
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&config(&topics, &id, listen, &bank.url), dir.path());
    let log = dir.path().join("connector.log");

    let runs = 8u32;
    let per_run = 5u32;
    let producing = {
        let instructions = Instructions::to(&topics.payment_instructions);
        tokio::spawn(async move {
            for sequence in 1..=runs {
                instructions.send(&run(sequence, per_run)).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    for _ in 0..kills {
        let mut child = spawn_connector(&config, &log);
        let after = Duration::from_millis(rng.random_range(300..3_000));
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    producing.await.unwrap();
    let mut child = spawn_connector(&config, &log);
    let payments = (runs * per_run) as usize;
    let seen = every_payment_ended(&topics.payment_status, payments).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let state = bank.state().await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let resent_after_restart = log
        .lines()
        .filter(|l| l.contains("delivery ledger restored") && !l.contains("unanswered=0"))
        .count();
    eprintln!(
        "{kills} kills; restarts finding unanswered files: {resent_after_restart}; duplicates \
         the bank answered: {}",
        state.duplicates_answered
    );
    assert_eq!(state.files.len(), runs as usize, "{state:#?}\n{log}");
    assert_eq!(state.executed.len(), payments);
    assert_eq!(
        state.invalid_files, 0,
        "every file valid against the pain.001 XSD"
    );
    assert!(
        state.executed.values().all(|&n| n == 1),
        "a payment executed twice: {state:#?}"
    );
    for ((invoice, _), history) in &seen {
        assert!(
            matches!(
                history.as_slice(),
                [BankStatus::Accepted, BankStatus::Settled]
                    | [BankStatus::Accepted, BankStatus::Rejected(_)]
                    | [BankStatus::Rejected(_)]
            ),
            "{invoice}: {history:?} (a status published twice, or out of order)"
        );
    }
    let rejected = seen
        .values()
        .filter(|h| matches!(h.last(), Some(BankStatus::Rejected(_))))
        .count();
    assert_eq!(rejected, state.rejected.len());
}

/// Two banks, one of them down: its breaker opens, the other bank's payments flow
/// meanwhile, and once it is back its files go through, each payment once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_that_is_down_holds_up_no_other_and_gets_its_files_when_back() {
    const OTHER_IBAN: &str = "GB82WEST12345698765432";
    let topics = TestTopics::create("bank-down", 2).await;
    let id = connector_id("bank-down");
    let listen = free_port();
    let up = Bank::start(format!("http://{listen}/pain002"), 0).await;
    let down = Bank::start(format!("http://{listen}/pain002"), 0).await;
    down.faults(serde_json::json!({ "down": true })).await;
    let mut config = config(&topics, &id, listen, &up.url);
    let mut other = config.banks[0].clone();
    other.name = "bank-b".into();
    other.endpoint = format!("{}/pain001", down.url);
    other.accounts[0].iban = OTHER_IBAN.into();
    config.banks.push(other);

    let instructions = Instructions::to(&topics.payment_instructions);
    let mut expected = Vec::new();
    for sequence in 1..=4u32 {
        let mut instruction = run(sequence, 2);
        if sequence % 2 == 0 {
            instruction.debtor_account = OTHER_IBAN.into();
            instruction.run_id = instruction.run_id.replace(DEBTOR_IBAN, OTHER_IBAN);
        }
        expected.extend(
            instruction
                .payments
                .iter()
                .map(|p| (p.invoice.to_string(), sequence % 2 == 0)),
        );
        instructions.send(&instruction).await;
    }
    let connector = start(config);
    let at_the_bank_that_is_up = |s: &BTreeMap<(String, u32), Vec<BankStatus>>| {
        expected
            .iter()
            .filter(|(_, at_b)| !at_b)
            .all(|(invoice, _)| s.get(&(invoice.clone(), 1)).is_some_and(|h| is_final(h)))
    };
    let seen = poll(
        "the payments at the bank that is up",
        || statuses(&topics.payment_status),
        at_the_bank_that_is_up,
    )
    .await;
    assert!(
        expected
            .iter()
            .filter(|(_, at_b)| *at_b)
            .all(|(invoice, _)| !seen.contains_key(&(invoice.clone(), 1))),
        "nothing from the bank that is down: {seen:#?}"
    );
    let metrics = poll(
        "bank-b's breaker open",
        || async {
            reqwest::get(format!("http://{listen}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        },
        |m| m.contains("p2p_bank_breaker_state{bank=\"bank-b\"} 2"),
    )
    .await;
    assert!(metrics.contains("p2p_bank_breaker_state{bank=\"simulated-bank\"} 0"));
    // Every bank metric the deployment's alerts and dashboard name is one the connector
    // exports (deploy/helm/p2p-pipeline/files).
    let named = common::metrics_named_by_deploy("p2p_bank_");
    assert!(named.len() >= 6, "{named:?}");
    assert_eq!(common::missing_from(&metrics, &named), Vec::<String>::new());
    assert_eq!(
        common::labels_missing_from(&metrics, &common::queries_of_deploy()),
        Vec::<String>::new()
    );
    assert!(metrics.contains("p2p_bank_files_acknowledged_total{bank=\"simulated-bank\"} 2"));

    down.faults(serde_json::json!({ "down": false })).await;
    let seen = every_payment_ended(&topics.payment_status, expected.len()).await;
    connector.stop().await;
    assert!(seen
        .values()
        .all(|h| h == &[BankStatus::Accepted, BankStatus::Settled]));
    let (up, down) = (up.state().await, down.state().await);
    assert_eq!((up.files.len(), down.files.len()), (2, 2));
    assert_eq!((up.invalid_files, down.invalid_files), (0, 0));
    assert!(up
        .executed
        .values()
        .chain(down.executed.values())
        .all(|&n| n == 1));
    assert!(down.refused_while_down >= 3, "{down:#?}");
}

/// A bank that delivers its pain.002 reports as files (SFTP, EBICS download) into the inbox
/// directory, and has a cut-off already past today.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_dropped_in_the_inbox_are_read_once_and_broken_ones_set_aside_with_why() {
    use p2p_connectors::ledger::Delivery;
    let topics = TestTopics::create("bank-inbox", 2).await;
    let id = connector_id("bank-inbox");
    let listen = free_port();
    let bank = Bank::start_silent().await;
    let inbox = tempfile::tempdir().unwrap();
    let mut config = config(&topics, &id, listen, &bank.url);
    config.inbox_dir = Some(inbox.path().to_owned());
    config.banks[0].cut_off = chrono::NaiveTime::from_hms_opt(0, 0, 0);
    let connector = start(config.clone());

    let instruction = run(1, 3);
    Instructions::to(&topics.payment_instructions)
        .send(&instruction)
        .await;
    let accepted = poll(
        "the acknowledgement",
        || statuses(&topics.payment_status),
        |s| s.len() == 3,
    )
    .await;
    assert!(accepted.values().all(|h| h == &[BankStatus::Accepted]));

    // The ledger says the run was moved past the cut-off to the next business day.
    let ledger = read_topic(&kafka(), &config.topics.deliveries, Duration::from_secs(30)).unwrap();
    let delivery: Delivery =
        serde_json::from_slice(ledger.last().unwrap().payload().unwrap()).unwrap();
    let moved = delivery.date_moved.clone().expect("moved past the cut-off");
    assert_eq!(moved.from, instruction.execution_date);
    assert!(moved.to > moved.from);
    assert!(moved.why.contains("cut-off"), "{}", moved.why);
    assert!(delivery.file.contains(&format!("<Dt>{}</Dt>", moved.to)));

    let statuses_of = |status: &'static str| -> Vec<(String, String, &'static str)> {
        delivery
            .payments
            .iter()
            .map(|p| {
                (
                    delivery.payment_information_id.clone(),
                    p.end_to_end_id.clone(),
                    status,
                )
            })
            .collect()
    };
    let settled = bank_sim::pain002_report("STMT-1", &delivery.msg_id, &statuses_of("ACSC"));
    std::fs::write(inbox.path().join("01-settled.xml"), &settled).unwrap();
    std::fs::write(inbox.path().join("02-settled-again.xml"), &settled).unwrap();
    std::fs::write(
        inbox.path().join("03-cut-off.xml"),
        &settled[..settled.len() / 2],
    )
    .unwrap();
    std::fs::write(
        inbox.path().join("04-someone-elses.xml"),
        bank_sim::pain002_report("STMT-2", "NOT-OURS", &statuses_of("ACSC")),
    )
    .unwrap();
    let done = inbox.path().join("done");
    let refused = inbox.path().join("refused");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    poll(
        "every inbox file read",
        || async { (names(&done), names(&refused)) },
        |(done, refused)| done.len() == 2 && refused.len() == 4,
    )
    .await;
    assert_eq!(names(&done), ["01-settled.xml", "02-settled-again.xml"]);
    let reason = std::fs::read_to_string(refused.join("03-cut-off.xml.reason")).unwrap();
    assert!(reason.contains("well-formed"), "{reason}");
    let reason = std::fs::read_to_string(refused.join("04-someone-elses.xml.reason")).unwrap();
    assert_eq!(
        reason,
        "the report answers message NOT-OURS, which this connector never sent"
    );
    let seen = poll(
        "the settlements",
        || statuses(&topics.payment_status),
        |s| s.values().all(|h| is_final(h)),
    )
    .await;
    connector.stop().await;
    assert!(
        seen.values()
            .all(|h| h == &[BankStatus::Accepted, BankStatus::Settled]),
        "the report dropped twice settled each payment once: {seen:#?}"
    );
    let letters = read_topic(
        &kafka(),
        &config.topics.refused_reports,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        letters.len(),
        2,
        "both refused reports kept, with their text"
    );
}

/// The webhook over HTTPS, taking reports only from a bank with a certificate its CA issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webhook_over_mutual_tls_takes_reports_only_from_a_certified_bank() {
    use p2p_connectors::connector::WebhookTls;
    use p2p_connectors::tls::Pki;
    let topics = TestTopics::create("bank-tls", 1).await;
    let id = connector_id("bank-tls");
    let listen = free_port();
    let pki = Pki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let mut config = config(&topics, &id, listen, "http://127.0.0.1:1");
    config.webhook_tls = Some(WebhookTls {
        certificate: files.server_certificate.clone(),
        key: files.server_key.clone(),
        client_ca: Some(files.ca.clone()),
    });
    let connector = start(config);
    let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pkcs8_pem(
        pki.client_certificate.as_bytes(),
        pki.client_key.as_bytes(),
    )
    .unwrap();
    let report = bank_sim::pain002_report("R-1", "NEVER-SENT", &[("B".into(), "E".into(), "ACSC")]);
    let post = |client: reqwest::Client| {
        let report = report.clone();
        async move {
            client
                .post(format!("https://{listen}/pain002"))
                .body(report)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let certified = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .identity(identity)
        .build()
        .unwrap();
    let answered = poll(
        "the webhook over https",
        || post(certified.clone()),
        |r| r.is_ok(),
    )
    .await;
    assert_eq!(answered.unwrap(), 422, "heard, and refused: no such file");
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    assert!(
        post(anonymous).await.is_err(),
        "no client certificate, no connection"
    );
    connector.stop().await;
}
