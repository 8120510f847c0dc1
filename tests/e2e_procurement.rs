//! End-to-end tests of the procurement topology (PO lifecycle and approval routing) on a real
//! Apache Kafka broker and a real schema registry. Submissions, decisions and org settings go
//! in as the ERP, the approval front end and an org's administrator would send them; approval
//! requests, PO status and the audit trail are read back with read_committed.

mod common;

use apache_avro::types::Value;
use common::*;
use p2p_avro::contracts::{APPROVAL_DECISION, ORG_CONFIG, PURCHASE_ORDER_EVENT, REQUISITION_EVENT};
use p2p_avro::convert::procurement::{
    approval_decision_value, org_config_value, requisition_decision_value, requisition_event_value,
    ApprovalRequestRecord, AuditKind, AuditRecord, PoStatusRecord, RequestKind,
};
use p2p_avro::convert::purchase_order_event_value;
use p2p_avro::{Codec, Contract};
use p2p_loadtest::audit::read_topic;
use p2p_loadtest::produce::erp_producer;
use p2p_processors::approval::{ApprovalLevel, Decision};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::procurement::ApprovalDecided;
use p2p_processors::requisition::RequisitionDecided;
use p2p_processors::*;
use p2p_topologies::{dlq, Topics};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> EventTime {
    EventTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

struct Sender {
    producer: FutureProducer,
    codec: std::sync::Arc<Codec>,
}

impl Sender {
    async fn send(&self, topic: &str, key: &OrgId, contract: &Contract, value: Value) {
        let bytes = self.codec.encode(topic, contract, value).await.unwrap();
        self.send_raw(topic, key.as_str(), &bytes).await;
    }

    async fn send_raw(&self, topic: &str, key: &str, bytes: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(bytes),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the broker takes the record");
    }

    async fn po(&self, topics: &Topics, event: PurchaseOrderEvent) {
        let org = event.org().clone();
        let value = purchase_order_event_value(&event, "e", now()).unwrap();
        self.send(&topics.po_events, &org, &PURCHASE_ORDER_EVENT, value)
            .await;
    }

    /// Publishes `org`'s settings: the defaults in EUR, with an approval SLA of `sla_millis`.
    async fn escalating_after(&self, topics: &Topics, org: &OrgId, sla_millis: i64) {
        let mut config = OrgConfig::defaults(org.clone(), eur(), now());
        config.approval.sla_millis = sla_millis;
        let value = org_config_value(&config).unwrap();
        self.send(&topics.org_config, org, &ORG_CONFIG, value).await;
    }

    async fn requisition(&self, topics: &Topics, submitted: &RequisitionSubmitted) {
        let value = requisition_event_value(submitted, "r", now()).unwrap();
        self.send(
            &topics.requisition_events,
            &submitted.org,
            &REQUISITION_EVENT,
            value,
        )
        .await;
    }

    async fn decide_requisition(
        &self,
        topics: &Topics,
        requisition: &RequisitionSubmitted,
        by: &UserId,
        authority: ApprovalLevel,
        approve: bool,
    ) {
        let decided = RequisitionDecided {
            org: requisition.org.clone(),
            requisition: requisition.requisition.clone(),
            decision: Decision {
                approver: by.clone(),
                authority,
                approve,
            },
        };
        let value = requisition_decision_value(&decided, "d", now());
        self.send(
            &topics.approval_decisions,
            &decided.org,
            &APPROVAL_DECISION,
            value,
        )
        .await;
    }

    async fn decide(&self, topics: &Topics, key: &OrgId, decided: ApprovalDecided) {
        let value = approval_decision_value(&decided, "d", now());
        self.send(&topics.approval_decisions, key, &APPROVAL_DECISION, value)
            .await;
    }
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn submitted(
    org: &OrgId,
    requester: &UserId,
    quantity: Decimal,
    price: Decimal,
    currency: Currency,
) -> PurchaseOrderSubmitted {
    PurchaseOrderSubmitted {
        org: org.clone(),
        po: PurchaseOrderId::random(),
        supplier: SupplierId::random(),
        currency,
        lines: vec![PurchaseOrderLine {
            line: LineNumber::new(1).unwrap(),
            description: "forklift".into(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: UnitPrice::new(Money::new(price, currency)).unwrap(),
            receipt_required: true,
            inspection_required: false,
        }],
        requester: requester.clone(),
        requisition: None,
    }
}

fn decided(
    org: &OrgId,
    po: &PurchaseOrderId,
    by: &UserId,
    level: ApprovalLevel,
    approve: bool,
) -> ApprovalDecided {
    ApprovalDecided {
        org: org.clone(),
        po: po.clone(),
        decision: Decision {
            approver: by.clone(),
            authority: level,
            approve,
        },
    }
}

fn stepped(org: &OrgId, po: &PurchaseOrderId, step: PurchaseOrderStep) -> PurchaseOrderEvent {
    PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
        org: org.clone(),
        po: po.clone(),
        step,
    })
}

/// Everything the topology wrote, by PO.
#[derive(Default, Debug)]
struct Seen {
    /// The latest status per PO (what compaction keeps).
    status: BTreeMap<String, PoStatusRecord>,
    requests: BTreeMap<String, Vec<ApprovalRequestRecord>>,
    audit: BTreeMap<String, Vec<AuditRecord>>,
    dead_letters: Vec<BTreeMap<String, String>>,
}

impl Seen {
    async fn read(topics: &Topics, codec: &Codec) -> Seen {
        let mut seen = Seen::default();
        let read = |topic: &str| read_topic(&kafka(), topic, Duration::from_secs(30)).unwrap();
        for message in read(&topics.po_status) {
            let value = codec.decode(message.payload()).await.unwrap();
            let status = PoStatusRecord::from_value(&value).unwrap();
            assert_eq!(
                message.key(),
                Some(status.key().as_bytes()),
                "po-status is keyed per PO"
            );
            seen.status.insert(status.po.to_string(), status);
        }
        for message in read(&topics.approval_requests) {
            let value = codec.decode(message.payload()).await.unwrap();
            let request = ApprovalRequestRecord::from_value(&value).unwrap();
            assert_eq!(message.key(), Some(request.org.as_str().as_bytes()));
            seen.requests
                .entry(request.document.to_string())
                .or_default()
                .push(request);
        }
        for message in read(&topics.audit_events) {
            let value = codec.decode(message.payload()).await.unwrap();
            let entry = AuditRecord::from_value(&value).unwrap();
            seen.audit
                .entry(entry.entity.to_string())
                .or_default()
                .push(entry);
        }
        for input in topics.procurement_inputs() {
            for message in read(&Topics::dlq(input)) {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                seen.dead_letters.push(headers);
            }
        }
        seen
    }

    fn state(&self, po: &PurchaseOrderId) -> Option<(PoState, u64)> {
        self.status.get(po.as_str()).map(|s| (s.state, s.version))
    }

    fn kinds(&self, document: &impl std::fmt::Display) -> Vec<(AuditKind, String)> {
        self.audit
            .get(&document.to_string())
            .map(|entries| entries.iter().map(|e| (e.kind, e.action.clone())).collect())
            .unwrap_or_default()
    }

    fn requests(
        &self,
        document: &impl std::fmt::Display,
    ) -> Vec<(RequestKind, ApprovalLevel, u32, u32)> {
        self.requests
            .get(&document.to_string())
            .map(|rs| {
                rs.iter()
                    .map(|r| (r.kind, r.level, r.step, r.steps))
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn wait_until(
    topics: &Topics,
    codec: &Codec,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    poll(what, || Seen::read(topics, codec), done).await
}

fn kind(kind: AuditKind, action: &str) -> (AuditKind, String) {
    (kind, action.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_orders_are_routed_approved_escalated_refused_and_tracked() {
    let topics = TestTopics::create("procure", 3).await;
    let codec = registry_codec();
    let tx = Sender {
        producer: erp_producer(&kafka()).unwrap(),
        codec: codec.clone(),
    };
    let (acme, globex) = (OrgId::random(), OrgId::random());
    let (requester, approver_1, approver_2) =
        (UserId::random(), UserId::random(), UserId::random());

    // Acme escalates after 1.5 s; Globex has published no settings and runs on the defaults.
    tx.escalating_after(&topics, &acme, 1_500).await;

    let pipeline = Pipeline::procurement(&topics, codec.clone());

    // PO 1 (Acme): 20 x 1,000 EUR = 20,000, so L2: a chain of L1 then L2.
    let po1 = submitted(&acme, &requester, dec!(20), dec!(1000), eur());
    // PO 2 (Globex, USD, no settings): 60,000 USD against the default thresholds is L3.
    let usd = Currency::parse("USD").unwrap();
    let po2 = submitted(&globex, &requester, dec!(3), dec!(20000), usd);
    // PO 3 (Globex): issued by its ERP without asking us: it enters at Issued.
    let po3 = PurchaseOrderIssued {
        org: globex.clone(),
        po: PurchaseOrderId::random(),
        supplier: SupplierId::random(),
        currency: usd,
        lines: po2.lines.clone(),
        requisition: None,
    };
    tx.po(&topics, PurchaseOrderEvent::Submitted(po1.clone()))
        .await;
    tx.po(&topics, PurchaseOrderEvent::Submitted(po2.clone()))
        .await;
    tx.po(&topics, PurchaseOrderEvent::Issued(po3.clone()))
        .await;

    // The requester may not approve their own PO; then L1 approves step 1.
    tx.decide(
        &topics,
        &acme,
        decided(&acme, &po1.po, &requester, ApprovalLevel::L3, true),
    )
    .await;
    tx.decide(
        &topics,
        &acme,
        decided(&acme, &po1.po, &approver_1, ApprovalLevel::L1, true),
    )
    .await;
    // Globex's L1 approver rejects PO 2: it is cancelled.
    tx.decide(
        &topics,
        &globex,
        decided(&globex, &po2.po, &approver_1, ApprovalLevel::L1, false),
    )
    .await;
    // PO 3 cannot be closed before it is paid.
    tx.po(
        &topics,
        stepped(&globex, &po3.po, PurchaseOrderStep::Closed),
    )
    .await;
    // A decision on a PO nobody submitted; a Globex-keyed decision naming Acme's PO; garbage.
    let ghost = PurchaseOrderId::random();
    tx.decide(
        &topics,
        &acme,
        decided(&acme, &ghost, &approver_1, ApprovalLevel::L1, true),
    )
    .await;
    tx.decide(
        &topics,
        &globex,
        decided(&acme, &po1.po, &approver_2, ApprovalLevel::L3, true),
    )
    .await;
    tx.send_raw(
        &topics.approval_decisions,
        acme.as_str(),
        b"{\"approve\": true}",
    )
    .await;

    // Step 2 of PO 1 is not decided within Acme's 1.5 s SLA: it is escalated.
    let seen = wait_until(
        &topics,
        &codec,
        "the escalation of PO 1's second step",
        |s| {
            s.requests(&po1.po)
                .iter()
                .any(|r| r.0 == RequestKind::Escalated)
        },
    )
    .await;
    // The step is escalated again every SLA period: a slow read of the topics may already
    // see the second escalation, so only the first three requests are fixed here.
    let requests = seen.requests(&po1.po);
    assert_eq!(
        requests[..3],
        [
            (RequestKind::Requested, ApprovalLevel::L1, 1, 2),
            (RequestKind::Requested, ApprovalLevel::L2, 2, 2),
            (RequestKind::Escalated, ApprovalLevel::L2, 2, 2),
        ]
    );
    let escalations: Vec<u32> = seen.requests[po1.po.as_str()][2..]
        .iter()
        .map(|r| {
            assert_eq!(
                (r.kind, r.level, r.step),
                (RequestKind::Escalated, ApprovalLevel::L2, 2)
            );
            r.escalations
        })
        .collect();
    let counted: Vec<u32> = (1..=escalations.len() as u32).collect();
    assert_eq!(escalations, counted, "each escalation counts one more");
    let escalated = &seen.requests[po1.po.as_str()][2];
    assert_eq!(escalated.requester, requester);
    assert_eq!(escalated.total, Money::new(dec!(20000), eur()));

    // Now L2 approves; the ERP issues it and the supplier acknowledges.
    tx.decide(
        &topics,
        &acme,
        decided(&acme, &po1.po, &approver_2, ApprovalLevel::L2, true),
    )
    .await;
    tx.po(
        &topics,
        PurchaseOrderEvent::Issued(PurchaseOrderIssued {
            org: acme.clone(),
            po: po1.po.clone(),
            supplier: po1.supplier.clone(),
            currency: eur(),
            lines: po1.lines.clone(),
            requisition: None,
        }),
    )
    .await;
    tx.po(
        &topics,
        stepped(&acme, &po1.po, PurchaseOrderStep::Acknowledged),
    )
    .await;

    let seen = wait_until(&topics, &codec, "PO 1 acknowledged", |s| {
        s.state(&po1.po) == Some((PoState::Acknowledged, 4))
    })
    .await;
    let stats = pipeline.stop().await;

    assert_eq!(seen.state(&po2.po), Some((PoState::Cancelled, 2)));
    assert_eq!(seen.state(&po3.po), Some((PoState::Issued, 1)));
    assert_eq!(seen.status.get(ghost.as_str()), None);

    // The audit trail of PO 1, in order, with the refusal of the requester's own approval.
    let trail = seen.kinds(&po1.po);
    let expected_start = [
        kind(AuditKind::Transitioned, "SUBMIT"),
        kind(AuditKind::ApprovalRequested, "REQUEST_L1"),
        kind(AuditKind::Refused, "APPROVE"),
        kind(AuditKind::StepApproved, "APPROVE_L1"),
        kind(AuditKind::ApprovalRequested, "REQUEST_L2"),
        kind(AuditKind::Escalated, "ESCALATE_L2"),
    ];
    assert_eq!(trail[..6], expected_start[..], "{trail:#?}");
    // Escalations repeat every SLA period until decided; then the approval and the rest.
    let rest: Vec<_> = trail[6..]
        .iter()
        .filter(|k| k.0 != AuditKind::Escalated)
        .cloned()
        .collect();
    assert_eq!(
        rest,
        vec![
            kind(AuditKind::StepApproved, "APPROVE_L2"),
            kind(AuditKind::Transitioned, "APPROVE"),
            kind(AuditKind::Transitioned, "ISSUE"),
            kind(AuditKind::Transitioned, "ACKNOWLEDGE"),
        ]
    );
    let refusal = &seen.audit[po1.po.as_str()][2];
    assert_eq!(refusal.actor.as_ref(), Some(&requester));
    assert_eq!(refusal.from_state.as_deref(), Some("AWAITING_APPROVAL"));
    assert_eq!(refusal.to_state, None);
    assert!(
        refusal.detail.contains("cannot approve their own"),
        "{}",
        refusal.detail
    );

    // PO 2: the default thresholds in its own currency call for L3 (3 steps); rejected at once.
    assert_eq!(
        seen.requests(&po2.po),
        vec![(RequestKind::Requested, ApprovalLevel::L1, 1, 3)]
    );
    assert_eq!(
        seen.kinds(&po2.po),
        vec![
            kind(AuditKind::Transitioned, "SUBMIT"),
            kind(AuditKind::ApprovalRequested, "REQUEST_L1"),
            kind(AuditKind::Transitioned, "REJECT"),
        ]
    );
    // PO 3: adopted at Issued, then a refused close naming where it stands.
    assert_eq!(
        seen.kinds(&po3.po),
        vec![
            kind(AuditKind::Transitioned, "ISSUE"),
            kind(AuditKind::Refused, "CLOSE"),
        ]
    );
    assert_eq!(
        seen.audit[po3.po.as_str()][1].from_state.as_deref(),
        Some("ISSUED")
    );
    // The decision on an unknown PO is a business refusal, not a dead letter.
    assert_eq!(
        seen.kinds(&ghost),
        vec![kind(AuditKind::Refused, "APPROVE")]
    );

    // The forged cross-org decision and the garbage are dead-lettered with their reasons;
    // the forged one never reached Acme's PO (its trail above has no L3 approval).
    let mut reasons: Vec<&str> = seen
        .dead_letters
        .iter()
        .map(|h| h[dlq::HEADER_REASON].as_str())
        .collect();
    reasons.sort();
    assert_eq!(reasons, vec!["key-mismatch", "undecodable"]);
    assert!(seen
        .dead_letters
        .iter()
        .all(|h| h[dlq::HEADER_PROCESSOR] == "procurement"
            && h[dlq::HEADER_TOPIC] == topics.approval_decisions));
    assert!(stats.get("escalations") >= 1);
    assert_eq!(stats.get("org configs"), 1);
}

fn requisition(
    org: &OrgId,
    requester: &UserId,
    quantity: Decimal,
    price: Decimal,
) -> RequisitionSubmitted {
    RequisitionSubmitted {
        org: org.clone(),
        requisition: RequisitionId::random(),
        requester: requester.clone(),
        currency: eur(),
        lines: vec![RequisitionLine {
            line: LineNumber::new(1).unwrap(),
            description: "forklift".into(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: UnitPrice::new(Money::new(price, eur())).unwrap(),
        }],
    }
}

/// A PO for what `requisition` asked for, naming it.
fn po_for(requisition: &RequisitionSubmitted) -> PurchaseOrderIssued {
    PurchaseOrderIssued {
        org: requisition.org.clone(),
        po: PurchaseOrderId::random(),
        supplier: SupplierId::random(),
        currency: requisition.currency,
        lines: requisition
            .lines
            .iter()
            .map(|l| PurchaseOrderLine {
                line: l.line,
                description: l.description.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
                receipt_required: true,
                inspection_required: false,
            })
            .collect(),
        requisition: Some(requisition.requisition.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requisitions_are_routed_escalated_decided_and_converted_into_one_po() {
    let topics = TestTopics::create("requisition", 3).await;
    let codec = registry_codec();
    let tx = Sender {
        producer: erp_producer(&kafka()).unwrap(),
        codec: codec.clone(),
    };
    let acme = OrgId::random();
    let (requester, approver_1, approver_2) =
        (UserId::random(), UserId::random(), UserId::random());
    // Acme escalates after 1.5 s.
    tx.escalating_after(&topics, &acme, 1_500).await;
    let pipeline = Pipeline::procurement(&topics, codec.clone());

    // Requisition 1: 20 x 1,000 EUR = 20,000, so L2: L1 then L2. Requisition 2: 500 EUR, L1.
    let wanted = requisition(&acme, &requester, dec!(20), dec!(1000));
    let frivolous = requisition(&acme, &requester, dec!(1), dec!(500));
    tx.requisition(&topics, &wanted).await;
    tx.requisition(&topics, &frivolous).await;
    // The requester may not approve their own requisition; L1 approves step 1. A PO naming the
    // requisition before it is approved is refused.
    tx.decide_requisition(&topics, &wanted, &requester, ApprovalLevel::L3, true)
        .await;
    tx.decide_requisition(&topics, &wanted, &approver_1, ApprovalLevel::L1, true)
        .await;
    let too_early = po_for(&wanted);
    tx.po(&topics, PurchaseOrderEvent::Issued(too_early.clone()))
        .await;
    // Requisition 2 is rejected; a PO naming it is refused.
    tx.decide_requisition(&topics, &frivolous, &approver_1, ApprovalLevel::L1, false)
        .await;
    let of_rejected = po_for(&frivolous);
    tx.po(&topics, PurchaseOrderEvent::Issued(of_rejected.clone()))
        .await;

    // Step 2 is not decided within the SLA: it is escalated.
    wait_until(&topics, &codec, "the escalation of step 2", |s| {
        s.requests(&wanted.requisition)
            .iter()
            .any(|r| r.0 == RequestKind::Escalated)
    })
    .await;
    // L2 approves; the ERP issues the PO naming it (converted), then a second PO naming it
    // (refused: a requisition becomes one PO).
    tx.decide_requisition(&topics, &wanted, &approver_2, ApprovalLevel::L2, true)
        .await;
    wait_until(&topics, &codec, "requisition 1 approved", |s| {
        s.kinds(&wanted.requisition)
            .contains(&kind(AuditKind::Transitioned, "APPROVE"))
    })
    .await;
    let converted = po_for(&wanted);
    let second = po_for(&wanted);
    tx.po(&topics, PurchaseOrderEvent::Issued(converted.clone()))
        .await;
    tx.po(&topics, PurchaseOrderEvent::Issued(second.clone()))
        .await;
    // po-status is keyed per PO, so its records are on other partitions than the audit trail:
    // wait for both.
    let seen = wait_until(&topics, &codec, "one PO issued, the second refused", |s| {
        !s.kinds(&second.po).is_empty() && s.state(&converted.po).is_some()
    })
    .await;
    pipeline.stop().await;

    // Requisition 1: submitted, in review, refused self-approval, two steps (the second
    // escalated, perhaps more than once), approved, converted.
    let trail: Vec<_> = seen
        .kinds(&wanted.requisition)
        .into_iter()
        .filter(|k| k.0 != AuditKind::Escalated)
        .collect();
    assert_eq!(
        trail,
        vec![
            kind(AuditKind::Transitioned, "SUBMIT"),
            kind(AuditKind::Transitioned, "START_REVIEW"),
            kind(AuditKind::ApprovalRequested, "REQUEST_L1"),
            kind(AuditKind::Refused, "APPROVE"),
            kind(AuditKind::StepApproved, "APPROVE_L1"),
            kind(AuditKind::ApprovalRequested, "REQUEST_L2"),
            kind(AuditKind::StepApproved, "APPROVE_L2"),
            kind(AuditKind::Transitioned, "APPROVE"),
            kind(AuditKind::Transitioned, "CONVERT_TO_PO"),
        ]
    );
    let entries = &seen.audit[wanted.requisition.as_str()];
    // Texts a person reads (issue 22, item 5): words and ISO times, never Rust names or
    // epoch milliseconds.
    for entry in entries {
        let detail = &entry.detail;
        let longest_number = detail
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        // Epoch milliseconds are 13 digits; no group of a UUID is longer than 12.
        assert!(longest_number < 13, "epoch milliseconds in {detail:?}");
        for rust_name in [
            "ManagerReview",
            "ConvertToPo",
            "StartReview",
            "L1)",
            "Approved ->",
        ] {
            assert!(!detail.contains(rust_name), "{rust_name} in {detail:?}");
        }
    }
    let requested = entries
        .iter()
        .find(|e| e.kind == AuditKind::ApprovalRequested)
        .unwrap();
    assert!(
        requested
            .detail
            .contains("needs an approver of level L1, due by 20")
            && requested.detail.ends_with('Z'),
        "{}",
        requested.detail
    );
    assert_eq!(
        entries.last().unwrap().detail,
        "convert to PO: approved -> converted to PO"
    );
    let last = entries.last().unwrap();
    assert_eq!(
        (
            last.from_state.as_deref(),
            last.to_state.as_deref(),
            last.version
        ),
        (Some("APPROVED"), Some("CONVERTED_TO_PO"), 4)
    );
    assert!(entries
        .iter()
        .all(|e| e.entity == DocumentRef::Requisition(wanted.requisition.clone())));
    let requests = seen.requests(&wanted.requisition);
    assert_eq!(
        requests[..3],
        [
            (RequestKind::Requested, ApprovalLevel::L1, 1, 2),
            (RequestKind::Requested, ApprovalLevel::L2, 2, 2),
            (RequestKind::Escalated, ApprovalLevel::L2, 2, 2),
        ]
    );
    let request = &seen.requests[wanted.requisition.as_str()][0];
    assert_eq!(request.requester, requester);
    assert_eq!(request.total, Money::new(dec!(20000), eur()));

    // The converted PO entered at Issued; the others were refused and have no status.
    assert_eq!(seen.state(&converted.po), Some((PoState::Issued, 1)));
    let refusal = |po: &PurchaseOrderId| {
        let entries = &seen.audit[po.as_str()];
        assert_eq!(entries.len(), 1, "{entries:#?}");
        assert_eq!(seen.state(po), None);
        (entries[0].kind, entries[0].detail.clone())
    };
    let (refused, detail) = refusal(&too_early.po);
    assert_eq!(refused, AuditKind::Refused);
    assert!(detail.contains("is manager review"), "{detail}");
    let (_, detail) = refusal(&of_rejected.po);
    assert!(detail.contains("is rejected"), "{detail}");
    let (_, detail) = refusal(&second.po);
    assert!(
        detail.contains(&format!("already converted to {}", converted.po)),
        "{detail}"
    );

    // Requisition 2: rejected at its only step.
    assert_eq!(
        seen.kinds(&frivolous.requisition),
        vec![
            kind(AuditKind::Transitioned, "SUBMIT"),
            kind(AuditKind::Transitioned, "START_REVIEW"),
            kind(AuditKind::ApprovalRequested, "REQUEST_L1"),
            kind(AuditKind::Transitioned, "REJECT"),
        ]
    );
    assert!(seen.dead_letters.is_empty(), "{:#?}", seen.dead_letters);
}
