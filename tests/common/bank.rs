//! The simulated bank and the bank connector, in the test's process, for end-to-end tests.

use super::{kafka, services};
use p2p_connectors::bank_sim::{self, SimConfig, SimState};
use p2p_connectors::connector::{self, ConnectorConfig, ConnectorTopics};
use p2p_connectors::delivery::{AccountConfig, BankConfig, BreakerConfig, RetryConfig};
use p2p_topologies::Topics;
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// The tests' debtor account, at the simulated bank.
pub const DEBTOR_IBAN: &str = "DE89370400440532013000";

pub struct Bank {
    pub url: String,
}

impl Bank {
    /// A bank posting its reports to `report_url`, rejecting every `reject_every`-th
    /// payment.
    pub async fn start(report_url: String, reject_every: u32) -> Bank {
        Self::with(Some(report_url), reject_every).await
    }

    /// A bank that posts no reports (it delivers them as files, say).
    pub async fn start_silent() -> Bank {
        Self::with(None, 0).await
    }

    async fn with(report_url: Option<String>, reject_every: u32) -> Bank {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = SimConfig {
            report_url,
            report_delay_ms: 300,
            reject_every,
        };
        tokio::spawn(bank_sim::serve(listener, config));
        Bank { url }
    }

    pub async fn faults(&self, faults: serde_json::Value) {
        reqwest::Client::new()
            .post(format!("{}/faults", self.url))
            .body(faults.to_string())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    pub async fn state(&self) -> SimState {
        let body = reqwest::get(format!("{}/state", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

/// A connector id (its group and transactional id) unique to one test.
pub fn connector_id(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// An address the connector under test can listen on once the test has named it to the
/// simulated bank. It lies below the kernel's ephemeral range: a port picked by `bind(0)`
/// and let go was once taken, between the pick and the connector's bind, by the source port
/// of one of the many outbound connections the tests' Kafka clients open ("Address already
/// in use"). Below that range only another explicit bind can take it.
pub fn free_port() -> SocketAddr {
    use rand::Rng;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(10_000..low.max(10_001));
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port between 10000 and {low}")
}

pub fn config(topics: &Topics, id: &str, listen: SocketAddr, bank_url: &str) -> ConnectorConfig {
    let mut kafka = kafka();
    kafka.insert("transaction.timeout.ms".into(), "60000".into());
    let mut bank = BankConfig::new(
        "simulated-bank",
        &format!("{bank_url}/pain001"),
        vec![AccountConfig {
            iban: DEBTOR_IBAN.into(),
            holder: "ACME Industries AG".into(),
            bic: Some("COBADEFFXXX".into()),
        }],
    );
    bank.connect_timeout_ms = 1_000;
    bank.request_timeout_ms = 1_000;
    bank.retry = RetryConfig {
        first_backoff_ms: 50,
        max_backoff_ms: 400,
    };
    bank.breaker = BreakerConfig {
        failures: 3,
        open_ms: 300,
    };
    let mut config = ConnectorConfig::new(id, kafka, listen, vec![bank]);
    config.schema_registry_url = Some(services().registry_url.clone());
    config.topics = ConnectorTopics {
        payment_instructions: topics.payment_instructions.clone(),
        payment_status: topics.payment_status.clone(),
        deliveries: format!("{id}-deliveries"),
        refused_reports: format!("{id}-reports.dlq"),
    };
    config
}

pub struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn start(config: ConnectorConfig) -> Running {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(connector::run(config, async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
