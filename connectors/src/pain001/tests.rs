use super::*;
use chrono::TimeZone;
use rust_decimal_macros::dec;
use std::path::PathBuf;
use std::process::Command;

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

fn payment(invoice: &str, part: u32, amount: Decimal, code: &str) -> RunPayment {
    RunPayment {
        invoice: InvoiceId::parse(invoice).unwrap(),
        part,
        creditor_name: "Müller & Söhne Schraubenwerk GmbH".into(),
        creditor_iban: "DE89 3704 0044 0532 0130 00".into(),
        creditor_bic: Some("COBADEFFXXX".into()),
        amount: Money::new(amount, currency(code)),
        remittance: "Rechnung INV-2026/0042 vom 1.12.2026".into(),
    }
}

fn run(code: &str, payments: Vec<RunPayment>) -> Run {
    let total = payments.iter().map(|p| p.amount.amount()).sum();
    Run {
        run_id: format!(
            "ACME-0262417036447/{code}/DE89370400440532013000/2026-12-04/INV-2026/000021/1"
        ),
        debtor_name: "ACME Industries AG".into(),
        debtor_iban: "GB82WEST12345698765432".into(),
        debtor_bic: None,
        currency: currency(code),
        execution_date: NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
        total: Money::new(total, currency(code)),
        payments,
    }
}

fn created() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 9, 30, 0).unwrap()
}

/// `xmllint --schema` on `xml`: `Ok` if the file is valid against pain.001.001.09.
fn validate(xml: &str) -> Result<(), String> {
    let schema =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/iso20022/pain.001.001.09.xsd");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pain001.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils) is installed");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_sepa_run_is_a_valid_pain001_with_ids_a_bank_takes_and_traces_back() {
    // Printed for whoever wants to see one: `cargo test -p p2p-connectors -- --nocapture`.
    let long_invoice = "INV-2026/000021-FOR-THE-SECOND-DELIVERY-OF-PALLETS";
    let sepa_run = || {
        run(
            "EUR",
            vec![
                payment("INV-2026/0042", 1, dec!(1209.80), "EUR"),
                payment(long_invoice, 2, dec!(0.05), "EUR"),
            ],
        )
    };
    let file = pain001(&sepa_run(), created()).unwrap();
    validate(&file.xml).unwrap();
    // The schema is really checked: the same file without its payments is not valid.
    let start = file.xml.find("<CdtTrfTxInf>").unwrap();
    let end = file.xml.rfind("</CdtTrfTxInf>").unwrap() + "</CdtTrfTxInf>".len();
    let gutted = format!("{}{}", &file.xml[..start], &file.xml[end..]);
    assert!(validate(&gutted).is_err());
    // 2 decimals always, the control sum the sum to the cent, SEPA's service level.
    assert!(
        file.xml
            .contains("<InstdAmt Ccy=\"EUR\">1209.80</InstdAmt>"),
        "{}",
        file.xml
    );
    assert!(file.xml.contains("<InstdAmt Ccy=\"EUR\">0.05</InstdAmt>"));
    assert!(file.xml.contains("<CtrlSum>1209.85</CtrlSum>"));
    assert!(file.xml.contains("<NbOfTxs>2</NbOfTxs>"));
    assert!(file.xml.contains("<Cd>SEPA</Cd>") && file.xml.contains("<ChrgBr>SLEV</ChrgBr>"));
    // Names in SEPA's characters; the debtor's bank unknown: NOTPROVIDED.
    assert!(file
        .xml
        .contains("<Nm>Mueller + Soehne Schraubenwerk GmbH</Nm>"));
    assert!(file.xml.contains("<Id>NOTPROVIDED</Id>"));
    // A short id is itself; a long one is mapped, the same way every time.
    assert_eq!(file.end_to_end[0].0, "INV-2026/0042/1");
    assert_eq!(file.end_to_end[1].0.len(), 32);
    assert_eq!(
        file.end_to_end[1].1,
        InvoiceId::parse(long_invoice).unwrap()
    );
    assert_eq!(file.msg_id.len(), 32);
    let again = pain001(&sepa_run(), created()).unwrap();
    assert_eq!(again, file);
    println!("{}", file.xml);
}

#[test]
fn a_yen_run_has_no_decimals_and_a_dinar_run_three() {
    let yen = pain001(
        &run("JPY", vec![payment("5105600001", 1, dec!(125000), "JPY")]),
        created(),
    )
    .unwrap();
    validate(&yen.xml).unwrap();
    assert!(yen.xml.contains("<InstdAmt Ccy=\"JPY\">125000</InstdAmt>"));
    assert!(!yen.xml.contains("<Cd>SEPA</Cd>"));
    let dinar = pain001(
        &run("KWD", vec![payment("5105600002", 1, dec!(10.5), "KWD")]),
        created(),
    )
    .unwrap();
    validate(&dinar.xml).unwrap();
    assert!(dinar
        .xml
        .contains("<InstdAmt Ccy=\"KWD\">10.500</InstdAmt>"));
}

#[test]
fn what_no_bank_would_pay_is_refused_with_its_reason_before_any_file() {
    let sub_cent = run("EUR", vec![payment("INV-1", 1, dec!(99.9999), "EUR")]);
    assert!(matches!(
        pain001(&sub_cent, created()),
        Err(Pain001Error::NotInMinorUnits { .. })
    ));
    let mut typo = run("EUR", vec![payment("INV-1", 1, dec!(10.00), "EUR")]);
    typo.payments[0].creditor_iban = "DE89370400440532013001".into();
    assert!(matches!(
        pain001(&typo, created()),
        Err(Pain001Error::BankId {
            field: "creditor IBAN",
            source: BankIdError::IbanCheckDigits(_)
        })
    ));
    let mut short = run("EUR", vec![payment("INV-1", 1, dec!(10.00), "EUR")]);
    short.total = Money::new(dec!(10.01), currency("EUR"));
    assert!(matches!(
        pain001(&short, created()),
        Err(Pain001Error::TotalMismatch { .. })
    ));
    assert!(matches!(
        pain001(&run("EUR", vec![]), created()),
        Err(Pain001Error::Empty(_))
    ));
    let mut bad_bic = run("EUR", vec![payment("INV-1", 1, dec!(10.00), "EUR")]);
    bad_bic.payments[0].creditor_bic = Some("COBA".into());
    assert!(matches!(
        pain001(&bad_bic, created()),
        Err(Pain001Error::BankId {
            field: "creditor BIC",
            ..
        })
    ));
}

#[test]
fn text_in_sepa_characters_keeps_what_a_bank_reads() {
    assert_eq!(
        sepa_text("Zürich Straße 5 & Co. <AG>", 70),
        "Zuerich Strasse 5 + Co.  AG"
    );
    assert_eq!(sepa_text(&"x".repeat(200), 140).len(), 140);
    assert_eq!(short_id("INV-2026/0042/1"), "INV-2026/0042/1");
    assert_ne!(short_id("A B"), "A B");
    assert_eq!(short_id(&"9".repeat(36)), short_id(&"9".repeat(36)));
}

#[test]
fn a_run_the_payment_topology_instructed_becomes_a_valid_file() {
    use p2p_avro::convert::payment::{InstructedPayment, PaymentInstructionRecord};
    use p2p_processors::{EventTime, OrgId, SupplierId};
    let eur = currency("EUR");
    let instruction = PaymentInstructionRecord {
        run_id: "1000/EUR/DE89370400440532013000/2026-12-04/INV-2026/0042/1".into(),
        org: OrgId::parse("1000").unwrap(),
        currency: eur,
        debtor_account: "DE89370400440532013000".into(),
        execution_date: NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
        total: Money::new(dec!(1000.00), eur),
        payments: vec![InstructedPayment {
            invoice: InvoiceId::parse("INV-2026/0042").unwrap(),
            part: 1,
            supplier: SupplierId::parse("V100234").unwrap(),
            creditor_name: "Acme Bolts GmbH".into(),
            creditor_iban: "DE02120300000000202051".into(),
            creditor_bic: Some("BYLADEM1001".into()),
            amount: Money::new(dec!(1000.00), eur),
            remittance: "0042".into(),
        }],
        created_at: EventTime(1_796_516_885_791),
    };
    let run = Run::from_instruction(&instruction, "ACME Industries AG", Some("COBADEFF"));
    let file = pain001(&run, created()).unwrap();
    validate(&file.xml).unwrap();
    assert!(file.xml.contains("<BICFI>COBADEFF</BICFI>"));
    assert_eq!(
        file.end_to_end,
        vec![(
            "INV-2026/0042/1".to_owned(),
            InvoiceId::parse("INV-2026/0042").unwrap(),
            1
        )]
    );
}
