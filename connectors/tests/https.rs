//! The connector's HTTPS client against the simulated bank over mutual TLS: a file reaches
//! the bank only with the bank's CA trusted and the connector's client certificate shown.

use chrono::{NaiveDate, TimeZone, Utc};
use p2p_connectors::bank_sim::{self, SimConfig};
use p2p_connectors::delivery::{AccountConfig, BankClient, BankConfig, Outcome};
use p2p_connectors::pain001::{pain001, Run, RunPayment};
use p2p_connectors::tls::{Pki, TlsListener};
use p2p_processors::{Currency, InvoiceId, Money};
use rust_decimal_macros::dec;

fn bank(endpoint: String) -> BankConfig {
    let mut bank = BankConfig::new(
        "tls-bank",
        &endpoint,
        vec![AccountConfig {
            iban: "DE89370400440532013000".into(),
            holder: "ACME Industries AG".into(),
            bic: None,
        }],
    );
    bank.connect_timeout_ms = 2_000;
    bank.request_timeout_ms = 5_000;
    bank
}

fn file() -> (String, String) {
    let eur = Currency::parse("EUR").unwrap();
    let run = Run {
        run_id: "1000/EUR/DE89370400440532013000/2026-12-07/1".into(),
        debtor_name: "ACME Industries AG".into(),
        debtor_iban: "DE89370400440532013000".into(),
        debtor_bic: None,
        currency: eur,
        execution_date: NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(),
        total: Money::new(dec!(1209.80), eur),
        payments: vec![RunPayment {
            invoice: InvoiceId::parse("INV-2026/0042").unwrap(),
            part: 1,
            creditor_name: "Müller & Söhne GmbH".into(),
            creditor_iban: "DE02120300000000202051".into(),
            creditor_bic: None,
            amount: Money::new(dec!(1209.80), eur),
            remittance: "5100000042".into(),
        }],
    };
    let file = pain001(&run, Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap()).unwrap();
    (file.msg_id, file.xml)
}

#[tokio::test]
async fn a_file_reaches_the_bank_over_mutual_tls_and_not_without_the_client_certificate() {
    let pki = Pki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}/pain001", tcp.local_addr().unwrap());
    let listener = TlsListener::new(tcp, pki.acceptor().unwrap());
    tokio::spawn(bank_sim::serve(
        listener,
        SimConfig {
            report_url: None,
            report_delay_ms: 0,
            reject_every: 0,
        },
    ));
    let (msg_id, xml) = file();

    let mut trusted = bank(endpoint.clone());
    trusted.ca_certificate = Some(files.ca.clone());
    trusted.client_certificate = Some(files.client_certificate.clone());
    trusted.client_key = Some(files.client_key.clone());
    let client = BankClient::new(&trusted).unwrap();
    assert!(
        matches!(
            client.send(&msg_id, &xml, None).await,
            Outcome::Acknowledged { bank_reference: Some(ref r) } if r == "SIM-000001"
        ),
        "sent over mutual TLS"
    );
    assert!(
        matches!(
            client.send(&msg_id, &xml, None).await,
            Outcome::Acknowledged { bank_reference: Some(ref r) } if r == "SIM-000001"
        ),
        "the same file again: the bank has it, with its first reference"
    );

    let mut no_certificate = bank(endpoint.clone());
    no_certificate.ca_certificate = Some(files.ca.clone());
    let outcome = BankClient::new(&no_certificate)
        .unwrap()
        .send(&msg_id, &xml, None)
        .await;
    assert!(matches!(outcome, Outcome::Transient { .. }), "{outcome:?}");

    let mut unknown_server = bank(endpoint);
    unknown_server.client_certificate = Some(files.client_certificate.clone());
    unknown_server.client_key = Some(files.client_key.clone());
    let outcome = BankClient::new(&unknown_server)
        .unwrap()
        .send(&msg_id, &xml, None)
        .await;
    assert!(
        matches!(&outcome, Outcome::Transient { reason } if reason.contains("certificate") || reason.contains("connect")),
        "a server the CA did not certify is not trusted: {outcome:?}"
    );

    let mut half = bank("https://127.0.0.1:1/pain001".into());
    half.client_certificate = Some(files.client_certificate.clone());
    assert!(
        BankClient::new(&half).is_err(),
        "a certificate without its key"
    );
}
