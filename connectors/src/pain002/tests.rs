//! Every pain.002 in `../shared/iso20022/samples` (real banks' and payment libraries' files),
//! read and resolved as the connector would; and reports of our own files.

use super::*;

fn sample(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/iso20022/samples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file(blocks: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    blocks
        .iter()
        .map(|(id, payments)| {
            (
                id.to_string(),
                payments.iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect()
}

fn answers(report: &StatusReport, blocks: &[(&str, &[&str])]) -> Vec<(String, Answer)> {
    report.resolve(&file(blocks)).unwrap().answers
}

fn rejected(id: &str, reason: &str) -> (String, Answer) {
    (id.into(), Answer::Rejected(reason.into()))
}

#[test]
fn a_bank_of_ireland_report_rejects_four_transactions_across_two_blocks_each_with_its_reason() {
    let report = parse(&sample(
        "pain002-v03-rjct-4tx-2batches__OCA_account-payment.xml",
    ))
    .unwrap();
    assert_eq!(report.version, Pain002Version::V03);
    assert_eq!(report.original_msg_id, "MSGID12345678912");
    assert_eq!(
        answers(
            &report,
            &[
                ("PMTINFID1", &["E2EID1", "E2EID2", "E2EID-PAID"]),
                ("PMTINFID2", &["E2EID3", "E2EID4"]),
            ]
        ),
        vec![
            rejected("E2EID1", "AC01: ACC NUMBER INVALID"),
            rejected("E2EID2", "MS02"),
            rejected("E2EID3", "MD06"),
            rejected("E2EID4", "AM04"),
        ],
        "the payment the report does not list is left as it is"
    );
}

#[test]
fn files_that_break_the_schema_or_name_no_namespace_are_refused_with_the_reason() {
    let wrong_namespace = parse(&sample("pain002-v03-invalid__OCA_account-payment.xml"));
    assert!(
        matches!(&wrong_namespace, Err(Pain002Error::UnknownNamespace(ns)) if ns.contains("other.002.001.03")),
        "{wrong_namespace:?}"
    );
    let missing_element = parse(&sample(
        "pain002-v03-accp-txn-xsdinvalid__svapnil_iso20022.js.xml",
    ));
    match missing_element {
        Err(Pain002Error::SchemaInvalid { schema, errors }) => {
            assert_eq!(schema, Schema::Pain002V03);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("line 13") && e.contains("OrgnlMsgNmId")),
                "{errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    for no_namespace in [
        "pain002-v03-acsp-txn-nonamespace__svapnil_iso20022.js.xml",
        "pain002-v03-rjct-txn-narr-nonamespace__svapnil_iso20022.js.xml",
    ] {
        assert_eq!(parse(&sample(no_namespace)), Err(Pain002Error::NoNamespace));
    }
    for payment_file in [
        "pain001-v09-sepa-eur__php-sepa-xml_php-sepa-xml.xml",
        "pain001-v03-xborder-usd__moov-io_iso20022.xml",
    ] {
        assert!(
            matches!(parse(&sample(payment_file)), Err(Pain002Error::UnknownNamespace(ns)) if ns.contains("pain.001")),
            "a payment file is not a status report"
        );
    }
    assert!(matches!(parse("<Document"), Err(Pain002Error::NotXml(_))));
    assert!(matches!(parse(""), Err(Pain002Error::NotXml(_))));
    assert_eq!(
        parse("<Rpt xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.002.001.03\"/>"),
        Err(Pain002Error::NotADocument("Rpt".into()))
    );
}

#[test]
fn nordea_s_group_rejection_of_a_duplicate_message_id_changes_no_payment() {
    let report = parse(&sample(
        "pain002-v03-rjct-grp-du01__svapnil_iso20022.js.xml",
    ))
    .unwrap();
    let resolution = report
        .resolve(&file(&[("MSGID-PS-TEST-0708-01", &["E2E-1", "E2E-2"])]))
        .unwrap();
    assert!(resolution.answers.is_empty());
    assert!(resolution.duplicate, "a resend the bank already has");
}

#[test]
fn a_rejected_payment_information_block_rejects_every_payment_in_it() {
    let report = parse(&sample(
        "pain002-v03-rjct-pmtinf-narr__svapnil_iso20022.js.xml",
    ))
    .unwrap();
    let reason = "NARR: CAP Invalid code or combinations in CategoryPurpose or ServiceLevel";
    assert_eq!(
        answers(&report, &[("PMTINFID-COM-SCE25-1707-01", &["A", "B"])]),
        vec![rejected("A", reason), rejected("B", reason)]
    );
    let postfinance = parse(&sample(
        "pain002-v10-rjct-pmtinf-ac01__stanisci_libeufin.xml",
    ))
    .unwrap();
    assert_eq!(postfinance.version, Pain002Version::V10);
    assert_eq!(
        answers(&postfinance, &[("PMTINF-02", &["X"])]),
        vec![rejected(
            "X",
            "AC01: 0999;CH7280005000088877766 Lastkonto unbekannt"
        )]
    );
    let listed = parse(&sample(
        "pain002-v03-rjct-txn-narr-2tx__svapnil_iso20022.js.xml",
    ))
    .unwrap();
    assert_eq!(
        answers(
            &listed,
            &[(
                "PMTINFID-950-TEST2-2807-01",
                &[
                    "ENDTOENDID-950-TEST2-2807-01",
                    "ENDTOENDID-950-TEST2-2807-02"
                ]
            )]
        ),
        vec![
            rejected("ENDTOENDID-950-TEST2-2807-01", reason),
            rejected("ENDTOENDID-950-TEST2-2807-02", reason),
        ]
    );
}

#[test]
fn acceptances_accept_and_technical_receipts_or_payee_checks_move_nothing() {
    let goldman = parse(&sample("pain002-v03-accp-pmtinf__svapnil_iso20022.js.xml")).unwrap();
    assert_eq!(
        goldman.original_msg_id, "XXX001_20220315_B_DZSOXXXX",
        "ids read without the bank's padding"
    );
    assert_eq!(
        answers(&goldman, &[("xxx001220315B000XXXX", &["P1", "P2"])]),
        vec![
            ("P1".into(), Answer::Accepted),
            ("P2".into(), Answer::Accepted)
        ]
    );
    let postfinance = parse(&sample("pain002-v10-accp-pmtinf__stanisci_libeufin.xml")).unwrap();
    assert_eq!(
        answers(&postfinance, &[("PMTINF-01", &["P1"])]),
        vec![("P1".into(), Answer::Accepted)]
    );
    for (name, block) in [
        ("pain002-v03-actc-grp__svapnil_iso20022.js.xml", "B"),
        ("pain002-v10-actc-grp__stanisci_libeufin.xml", "B"),
        (
            "pain002-v10-vop-rcvc-grp-pmtinf__hbci4j_hbci4java.xml",
            "2025-11-02T18:33:03:0287",
        ),
    ] {
        let report = parse(&sample(name)).unwrap();
        assert_eq!(
            answers(&report, &[(block, &["P1", "P2"])]),
            vec![],
            "{name}"
        );
    }
}

#[test]
fn a_whole_file_rejected_for_its_control_sum_rejects_every_payment_with_the_reason() {
    let report = parse(&sample("pain002-v10-rjct-grp-am10__stanisci_libeufin.xml")).unwrap();
    assert_eq!(
        answers(&report, &[("ANY", &["P1", "P2"])]),
        vec![
            rejected("P1", "AM10: 904114;ControlSum fehlerhaft"),
            rejected("P2", "AM10: 904114;ControlSum fehlerhaft"),
        ]
    );
}

#[test]
fn partial_answers_reject_only_the_transactions_they_name() {
    // Swiss (PostFinance, SIX namespace): PART at block level, one transaction rejected.
    let swiss = parse(&sample(
        "pain002-v03ch02-part-pmtinf-rjct-txn-ac01__moov-io_iso20022.xml",
    ))
    .unwrap();
    assert_eq!(swiss.version, Pain002Version::V03Ch02);
    assert_eq!(
        answers(
            &swiss,
            &[(
                "PmtInfId-001-03",
                &["EndToEndId-001-03-01", "EndToEndId-001-03-04"]
            )]
        ),
        vec![rejected(
            "EndToEndId-001-03-04",
            "AC01: 1301813;Konto ungültig"
        )]
    );
    // Portuguese: no status anywhere, one transaction listed with a reason, and the counts
    // saying one was rejected.
    let portuguese = parse(&sample(
        "pain002-v03-rjct-txn-ac04-1of3__Gemabit_php-sepa-xml.xml",
    ))
    .unwrap();
    assert_eq!(
        answers(
            &portuguese,
            &[(
                "20111205-00001",
                &["EFG/2011L0987/2011-11-05", "EFG/2011L0987/2011-12-05", "X"]
            )]
        ),
        vec![rejected("EFG/2011L0987/2011-12-05", "AC04")]
    );
}

#[test]
fn a_report_naming_what_the_file_does_not_have_is_refused() {
    let report = parse(&sample(
        "pain002-v03-rjct-4tx-2batches__OCA_account-payment.xml",
    ))
    .unwrap();
    assert_eq!(
        report.resolve(&file(&[("PMTINFID1", &["E2EID1", "E2EID2"])])),
        Err(ResolveError::UnknownPaymentInformation("PMTINFID2".into()))
    );
    assert_eq!(
        report.resolve(&file(&[
            ("PMTINFID1", &["E2EID1"]),
            ("PMTINFID2", &["E2EID3", "E2EID4"])
        ])),
        Err(ResolveError::UnknownEndToEnd("E2EID2".into()))
    );
}

#[test]
fn no_sample_whatever_it_holds_panics_the_reader() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iso20022/samples");
    let mut read = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Ok(report) = parse(&text) {
                let _ = report.resolve(&[]);
            }
            // Cut anywhere, it is refused, never a panic.
            for cut in [1, text.len() / 3, text.len() / 2, text.len() - 1] {
                let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap();
                let _ = parse(&text[..cut]);
            }
            read += 1;
        }
    }
    assert_eq!(read, 21);
}
