//! A deterministic P2P stream: orgs, suppliers, POs with several lines, partial receipts,
//! invoices (some over tolerance, some before their receipt, some against cancelled POs),
//! credit memos and a few undecodable records. Every invoice carries the outcome it should end in.

use apache_avro::types::Value;
use p2p_avro::contracts::{
    Contract, APPROVAL_DECISION, GOODS_RECEIPT_EVENT, INVOICE_DECISION, INVOICE_EVENT, ORG_CONFIG,
    PURCHASE_ORDER_EVENT, REQUISITION_EVENT, SUPPLIER_MASTER,
};
use p2p_avro::convert;
use p2p_connectors::bank_ids::iban_of;
use p2p_processors::approval::{ApprovalLevel, ApprovalPolicy, Decision};
use p2p_processors::decisions::{DecisionAction, InvoiceDecision};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::payment::{Payee, PaymentTerms};
use p2p_processors::procurement::ApprovalDecided;
use p2p_processors::requisition::RequisitionDecided;
use p2p_processors::tolerance_keys::ToleranceKeys;
use p2p_processors::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashSet};

/// Which input topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputTopic {
    Requisitions,
    PurchaseOrders,
    GoodsReceipts,
    Invoices,
    ApprovalDecisions,
    OrgConfigs,
    SupplierMasters,
    /// People's decisions on held invoices.
    InvoiceDecisions,
}

impl InputTopic {
    pub const ALL: [InputTopic; 8] = [
        InputTopic::Requisitions,
        InputTopic::PurchaseOrders,
        InputTopic::GoodsReceipts,
        InputTopic::Invoices,
        InputTopic::ApprovalDecisions,
        InputTopic::OrgConfigs,
        InputTopic::SupplierMasters,
        InputTopic::InvoiceDecisions,
    ];
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// A well-formed document and the contract it is written with.
    Document(Value, &'static Contract),
    /// Bytes that are not a valid record (as a misconfigured producer would send).
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct ScenarioRecord {
    pub topic: InputTopic,
    /// The org_id, the record key.
    pub key: String,
    pub payload: Payload,
    pub timestamp: EventTime,
}

/// The outcome an invoice was generated to end in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planted {
    Matched,
    /// An exception with (at least) these reasons.
    Exception(Vec<ReasonKind>),
    /// Still waiting for goods at the end of the stream.
    Pending,
}

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub orgs: usize,
    /// POs per org on average.
    pub pos_per_org: usize,
    /// Zipf exponent of the org sizes: the org ranked k has POs in proportion to 1/k^s (0:
    /// all the same size). Real tenants are skewed, and a big one makes its partition hot.
    pub org_size_skew: f64,
    /// Share of POs (in percent) for each anomaly; the rest are clean.
    pub price_over_tolerance_pct: u32,
    pub price_within_tolerance_pct: u32,
    pub quantity_over_pct: u32,
    pub invoice_before_receipt_pct: u32,
    pub short_receipt_pct: u32,
    pub cancelled_pct: u32,
    /// A clean invoice sent again by the supplier under a new id.
    pub duplicate_pct: u32,
    /// A clean invoice, then a credit memo from the supplier giving back part of its first
    /// line (goods found damaged and kept at the supplier's cost). Half the memos come before
    /// the invoice they credit, and wait for it.
    pub credit_memo_pct: u32,
    /// An invoice the AP clerk blocks by hand in the ERP (`payment_block`); half of them are
    /// released later (sent again without it) and end matched.
    pub held_pct: u32,
    /// POs converted from a requisition the pipeline approved: the requisition is submitted,
    /// decided step by step, and the ERP issues the PO naming it.
    pub requisition_pct: u32,
    /// Of the other POs, those submitted to the pipeline for approval before they are issued;
    /// the rest are issued straight from the ERP (approved there).
    pub routed_pct: u32,
    /// Routed requisitions and POs whose requester first tries to approve them (refused:
    /// segregation of duties).
    pub self_approval_pct: u32,
    /// Requisitions per org that an approver rejects (no PO comes of them).
    pub rejected_requisitions_per_org: usize,
    pub undecodable_records: usize,
    /// When the first event happens (ms since the epoch), and the range of the gap to the
    /// next one: document dates, wait limits and due dates follow from them.
    pub start_ms: i64,
    pub gap_ms: std::ops::Range<i64>,
    /// The suppliers' payment terms: net this many days (`None`: the default terms).
    pub net_days: Option<u32>,
}

/// A generator configuration that cannot describe a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorConfigError {
    #[error("a stream needs at least one org and one PO per org")]
    Empty,
    /// Each PO takes one shape: the anomalies' shares are parts of one hundred.
    #[error("the anomaly shares add up to {0}% of the POs; they can take at most 100%")]
    AnomaliesOverAll(u32),
    #[error("{field} is a share of POs in percent: {value} is over 100")]
    ShareOverAll { field: &'static str, value: u32 },
}

impl GeneratorConfig {
    /// Whether this configuration describes a stream (the generator would otherwise quietly
    /// drop the shapes past 100%).
    pub fn check(&self) -> Result<(), GeneratorConfigError> {
        if self.orgs == 0 || self.pos_per_org == 0 {
            return Err(GeneratorConfigError::Empty);
        }
        let anomalies = self
            .anomaly_shares(false)
            .iter()
            .map(|(pct, _)| pct)
            .sum::<u32>();
        if anomalies > 100 {
            return Err(GeneratorConfigError::AnomaliesOverAll(anomalies));
        }
        for (field, value) in [
            ("requisition_pct", self.requisition_pct),
            ("routed_pct", self.routed_pct),
            ("self_approval_pct", self.self_approval_pct),
        ] {
            if value > 100 {
                return Err(GeneratorConfigError::ShareOverAll { field, value });
            }
        }
        Ok(())
    }

    /// Each anomaly's share of the POs (percent), and the shape it gives a PO (`early`: the
    /// variant sent ahead of its invoice, for the shapes that have one).
    fn anomaly_shares(&self, early: bool) -> [(u32, Shape); 9] {
        [
            (self.price_over_tolerance_pct, Shape::PriceOver),
            (self.price_within_tolerance_pct, Shape::PriceWithin),
            (self.quantity_over_pct, Shape::QuantityOver),
            (self.invoice_before_receipt_pct, Shape::InvoiceFirst),
            (self.short_receipt_pct, Shape::ShortReceipt),
            (self.cancelled_pct, Shape::Cancelled),
            (self.duplicate_pct, Shape::Duplicated),
            (self.credit_memo_pct, Shape::Credited(early)),
            (self.held_pct, Shape::Held(early)),
        ]
    }

    /// POs of each org, in generation order: `orgs * pos_per_org` in all, shared by Zipf's law
    /// with exponent `org_size_skew` (every org has at least one).
    pub fn org_sizes(&self) -> Vec<usize> {
        let total = self.orgs * self.pos_per_org;
        let weights: Vec<f64> = (1..=self.orgs)
            .map(|rank| (rank as f64).powf(-self.org_size_skew))
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut sizes: Vec<usize> = weights
            .iter()
            .map(|w| ((total as f64 * w / sum).floor() as usize).max(1))
            .collect();
        // What rounding down left over goes to the largest orgs, one each.
        let left = total.saturating_sub(sizes.iter().sum());
        for size in sizes.iter_mut().take(left) {
            *size += 1;
        }
        sizes
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            orgs: 5,
            pos_per_org: 40,
            org_size_skew: 0.0,
            price_over_tolerance_pct: 10,
            price_within_tolerance_pct: 5,
            quantity_over_pct: 5,
            invoice_before_receipt_pct: 15,
            short_receipt_pct: 5,
            cancelled_pct: 5,
            duplicate_pct: 5,
            credit_memo_pct: 5,
            held_pct: 4,
            requisition_pct: 40,
            routed_pct: 60,
            self_approval_pct: 10,
            rejected_requisitions_per_org: 1,
            undecodable_records: 1,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            gap_ms: 1_000..60_000,
            net_days: None,
        }
    }
}

/// A generated stream, in production order, with the plan for every invoice.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub records: Vec<ScenarioRecord>,
    pub planted: Vec<(InvoiceId, Planted)>,
    /// Where each PO's lifecycle should end: state and version.
    pub lifecycles: BTreeMap<PurchaseOrderId, (PoState, u64)>,
    /// Where each requisition's lifecycle should end: state and version.
    pub requisitions: BTreeMap<RequisitionId, (RequisitionState, u64)>,
    /// Each PO converted from a requisition, and that requisition.
    pub converted: BTreeMap<PurchaseOrderId, RequisitionId>,
    /// Inputs the procurement topology must refuse (an audit event each, never a dead letter).
    pub refusals: usize,
    /// Credit memos among the planted invoices (every one planted to match).
    pub credit_memos: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Clean,
    PriceOver,
    PriceWithin,
    QuantityOver,
    InvoiceFirst,
    ShortReceipt,
    Cancelled,
    Duplicated,
    /// Credited in part; `true`: the memo comes before the invoice.
    Credited(bool),
    /// Blocked by hand; `true`: released later.
    Held(bool),
}

const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "SAR"];

impl Scenario {
    pub fn generate(config: &GeneratorConfig) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut ids = IdSource::new(rng.random());
        let mut records = Vec::new();
        let mut planted = Vec::new();
        let mut lifecycles = BTreeMap::new();
        let mut requisitions = BTreeMap::new();
        let mut converted = BTreeMap::new();
        let mut refusals = 0;
        let mut credit_memos = 0;
        // What the default duplicate rule compares, of every document not planted as a
        // duplicate: another one equal on all of it would be a duplicate no plan foresaw.
        let mut fingerprints = Fingerprints::default();
        let mut clock = config.start_ms;
        let mut tick = |rng: &mut ChaCha8Rng| {
            clock += rng.random_range(config.gap_ms.clone());
            EventTime(clock)
        };

        for (index, org_pos) in config.org_sizes().into_iter().enumerate() {
            // Every other org publishes its ERP's own ids (ADR 0014), the rest UUIDs.
            let erp = index % 2 == 1;
            let OrgSetup {
                org,
                currency,
                suppliers,
                ..
            } = OrgSetup::draw(config, &mut rng, &mut ids, &mut records, &mut tick, erp);
            // Requesters, and one approver per level (authority L1, L2, L3).
            let requesters: Vec<UserId> = (0..3).map(|_| ids.mint::<UserId>(erp)).collect();
            let approvers: Vec<UserId> = (0..3).map(|_| ids.mint::<UserId>(erp)).collect();
            // The AP manager who decides on held invoices: never one who requested or approved
            // the PO (segregation of duties), with authority for any amount.
            let ap_manager: UserId = ids.mint(erp);
            for n in 0..org_pos {
                let shape = pick_shape(&mut rng, config);
                let po = ids.mint::<PurchaseOrderId>(erp);
                let supplier = suppliers[rng.random_range(0..suppliers.len())].clone();
                let lines = po_lines(&mut rng, currency);
                let requester = requesters[rng.random_range(0..requesters.len())].clone();
                // From a requisition the pipeline approves (step by step, as a PO would be),
                // then issued by the ERP naming it: the requisition is converted.
                let requisition = if rng.random_range(0..100u32) < config.requisition_pct {
                    let submitted = RequisitionSubmitted {
                        org: org.clone(),
                        requisition: ids.mint::<RequisitionId>(erp),
                        requester: requester.clone(),
                        currency,
                        lines: lines
                            .iter()
                            .map(|l| RequisitionLine {
                                line: l.line,
                                description: l.description.clone(),
                                quantity: l.quantity,
                                unit_price: l.unit_price,
                            })
                            .collect(),
                    };
                    let total = submitted.total().expect("one currency");
                    let (decisions, refused) =
                        decisions(&mut rng, config, &requester, &approvers, total, true);
                    refusals += refused;
                    records.extend(ScenarioRecord::requisition_decided(
                        &submitted,
                        decisions,
                        || tick(&mut rng),
                    ));
                    // Submitted, in review, approved, converted.
                    requisitions.insert(
                        submitted.requisition.clone(),
                        (RequisitionState::ConvertedToPo, 4),
                    );
                    converted.insert(po.clone(), submitted.requisition.clone());
                    Some(submitted.requisition)
                } else {
                    None
                };
                let issued = PurchaseOrderIssued {
                    org: org.clone(),
                    po: po.clone(),
                    supplier: supplier.clone(),
                    currency,
                    lines: lines.clone(),
                    requisition: requisition.clone(),
                };
                let mut version = 1;
                if requisition.is_none() && rng.random_range(0..100u32) < config.routed_pct {
                    let submitted = PurchaseOrderSubmitted {
                        org: org.clone(),
                        po: po.clone(),
                        supplier: supplier.clone(),
                        currency,
                        lines: lines.clone(),
                        requester: requester.clone(),
                        requisition: None,
                    };
                    let total = submitted.total().expect("one currency");
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::purchase_order(
                        &PurchaseOrderEvent::Submitted(submitted),
                        at,
                    ));
                    let (decisions, refused) =
                        decisions(&mut rng, config, &requester, &approvers, total, true);
                    refusals += refused;
                    for decision in decisions {
                        let decided = ApprovalDecided {
                            org: org.clone(),
                            po: po.clone(),
                            decision,
                        };
                        let at = tick(&mut rng);
                        records.push(ScenarioRecord::decision(&decided, at));
                    }
                    // Submitted, approved, then issued below.
                    version = 3;
                }
                let at = tick(&mut rng);
                records.push(ScenarioRecord::purchase_order(
                    &PurchaseOrderEvent::Issued(issued),
                    at,
                ));
                lifecycles.insert(
                    po.clone(),
                    if shape == Shape::Cancelled {
                        (PoState::Cancelled, version + 1)
                    } else {
                        (PoState::Issued, version)
                    },
                );

                // Receipts: everything that needs one, sometimes split in two deliveries.
                let received: Vec<ReceiptLine> = lines
                    .iter()
                    .filter(|l| l.receipt_required)
                    .map(|l| ReceiptLine {
                        line: l.line,
                        received: if shape == Shape::ShortReceipt {
                            Quantity::new((l.quantity.value() / Decimal::TWO).floor())
                                .expect("positive")
                        } else {
                            l.quantity
                        },
                        returned: Quantity::ZERO,
                        expected: None,
                        accepted: Quantity::ZERO,
                    })
                    .collect();
                let split = received.len() > 1 && rng.random_bool(0.3);
                let receipts: Vec<GoodsReceived> = if received.is_empty() {
                    vec![]
                } else if split {
                    let (a, b) = received.split_at(received.len() / 2);
                    vec![a.to_vec(), b.to_vec()]
                        .into_iter()
                        .map(|lines| GoodsReceived {
                            org: org.clone(),
                            grn: ids.mint::<GoodsReceiptId>(erp),
                            po: po.clone(),
                            lines,
                            resolves: None,
                        })
                        .collect()
                } else {
                    vec![GoodsReceived {
                        org: org.clone(),
                        grn: ids.mint::<GoodsReceiptId>(erp),
                        po: po.clone(),
                        lines: received,
                        resolves: None,
                    }]
                };

                // The invoice bills every line in full, at the PO price unless planted otherwise.
                let mut billed: Vec<InvoiceLine> = lines
                    .iter()
                    .map(|l| InvoiceLine {
                        line: l.line,
                        quantity: l.quantity,
                        unit_price: l.unit_price,
                    })
                    .collect();
                let mut expect = Planted::Matched;
                match shape {
                    Shape::PriceOver => {
                        billed[0].unit_price = scaled(billed[0].unit_price, 110);
                        expect = Planted::Exception(vec![ReasonKind::PriceVariance]);
                    }
                    Shape::PriceWithin => billed[0].unit_price = scaled(billed[0].unit_price, 101),
                    Shape::QuantityOver => {
                        let q = billed[0].quantity.value();
                        billed[0].quantity =
                            Quantity::new(q + (q / Decimal::TEN).ceil() + Decimal::ONE)
                                .expect("positive");
                        expect = Planted::Exception(vec![ReasonKind::QuantityVariance]);
                    }
                    Shape::ShortReceipt if lines.iter().any(|l| l.receipt_required) => {
                        expect = Planted::Pending;
                    }
                    Shape::Cancelled => {
                        expect = Planted::Exception(vec![ReasonKind::PoCancelled]);
                    }
                    Shape::Held(false) => {
                        expect = Planted::Exception(vec![ReasonKind::ManualHold]);
                    }
                    _ => {}
                }
                // Every other invoice held for price or by hand is resolved by the org's AP
                // manager (accepted, released: look-alikes below); every other one over-billing the quantity is
                // rejected (chosen by position, not drawn).
                let decision = match shape {
                    Shape::PriceOver if n % 2 == 0 => Some(DecisionAction::AcceptVariance),
                    Shape::Held(false) if n % 2 == 0 => {
                        Some(DecisionAction::Release(Some(ReasonKind::ManualHold)))
                    }
                    Shape::QuantityOver if n % 2 == 0 => Some(DecisionAction::Reject),
                    _ => None,
                };
                match decision {
                    Some(DecisionAction::Reject) => {
                        expect = Planted::Exception(vec![ReasonKind::Rejected]);
                    }
                    Some(_) => expect = Planted::Matched,
                    None => {}
                }
                let total = billed.iter().fold(Decimal::ZERO, |sum, l| {
                    sum + l.quantity.value() * l.unit_price.money().amount()
                });
                let invoice = InvoiceReceived {
                    org: org.clone(),
                    invoice: ids.mint::<InvoiceId>(erp),
                    kind: DocumentKind::Invoice,
                    supplier,
                    number: InvoiceNumber::parse(&format!("SI-{}-{n:05}", org_tag(&org)))
                        .expect("non-empty"),
                    po: po.clone(),
                    currency,
                    lines: billed,
                    total: Money::new(total.round_dp(4), currency),
                    invoice_date: (at.0 / 86_400_000) as i32,
                    payment_block: matches!(shape, Shape::Held(_))
                        .then(|| "price under negotiation with the supplier".to_owned()),
                    // The AP clerk who posts it: one of the org's requesters.
                    posted_by: Some(requesters[n % requesters.len()].clone()),
                };
                let planted_outcome = expect.clone();
                planted.push((invoice.invoice.clone(), expect));
                fingerprints.issue(&invoice);
                let memo = match shape {
                    Shape::Credited(early) => {
                        let memo =
                            credit_memo(&invoice, &mut rng, ids.mint(erp), n, &mut fingerprints);
                        planted.push((memo.invoice.clone(), Planted::Matched));
                        credit_memos += 1;
                        Some((memo, early))
                    }
                    _ => None,
                };

                let invoice_first = shape == Shape::InvoiceFirst;
                if invoice_first {
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(&invoice, at));
                }
                if shape == Shape::Cancelled {
                    // Cancelled before the goods came: the invoice must never be payable.
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(&invoice, at));
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::purchase_order(
                        &PurchaseOrderEvent::Cancelled(PurchaseOrderCancelled {
                            org: org.clone(),
                            po: po.clone(),
                        }),
                        at,
                    ));
                    continue;
                }
                for receipt in &receipts {
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::goods_receipt(receipt, at));
                }
                // The first receipt acknowledges the PO, each one is a step (partial until
                // every line is in), and a matched invoice on a received PO invoices it.
                if !receipts.is_empty() {
                    let received = if shape == Shape::ShortReceipt {
                        PoState::PartiallyReceived
                    } else {
                        PoState::Received
                    };
                    let mut steps = 1 + receipts.len() as u64;
                    let invoiced =
                        received == PoState::Received && planted_outcome == Planted::Matched;
                    if invoiced {
                        steps += 1;
                    }
                    let state = if invoiced {
                        PoState::Invoiced
                    } else {
                        received
                    };
                    lifecycles.insert(po.clone(), (state, version + steps));
                }
                if let Some((memo, true)) = &memo {
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(memo, at));
                }
                if !invoice_first {
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(&invoice, at));
                }
                if let Some((memo, false)) = &memo {
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(memo, at));
                    // Every other such supplier credits the same again the same day under
                    // another number: a look-alike, held for review until the AP manager
                    // finds it is not a duplicate; then it credits as well.
                    let room = invoice.lines[0].quantity.value()
                        >= memo.lines[0].quantity.value() * Decimal::TWO;
                    if n % 2 == 0 && room {
                        let again = InvoiceReceived {
                            invoice: ids.mint::<InvoiceId>(erp),
                            number: InvoiceNumber::parse(&format!("{}-R", memo.number))
                                .expect("non-empty"),
                            ..memo.clone()
                        };
                        planted.push((again.invoice.clone(), Planted::Matched));
                        credit_memos += 1;
                        let decided = decided_by(
                            &ap_manager,
                            &again,
                            DecisionAction::NotADuplicate,
                            "SECOND_RETURN",
                            "two deliveries found damaged",
                        );
                        let at = tick(&mut rng);
                        records.push(ScenarioRecord::invoice(&again, at));
                        let at = tick(&mut rng);
                        records.push(ScenarioRecord::invoice_decision(&org, &decided, at));
                    }
                }
                if let Some(action) = decision {
                    let decided = decided_by(
                        &ap_manager,
                        &invoice,
                        action,
                        "REVIEWED",
                        "checked with the buyer and the supplier",
                    );
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice_decision(&org, &decided, at));
                }
                if shape == Shape::Held(true) {
                    // The clerk releases it: the ERP sends the invoice again, unblocked.
                    let released = InvoiceReceived {
                        payment_block: None,
                        ..invoice.clone()
                    };
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(&released, at));
                }
                if shape == Shape::Duplicated {
                    // The supplier sends the same invoice again; the buyer's ERP registers it
                    // under a new id. It must never be paid.
                    let copy = InvoiceReceived {
                        invoice: ids.mint::<InvoiceId>(erp),
                        ..invoice.clone()
                    };
                    planted.push((
                        copy.invoice.clone(),
                        Planted::Exception(vec![ReasonKind::Duplicate]),
                    ));
                    let at = tick(&mut rng);
                    records.push(ScenarioRecord::invoice(&copy, at));
                }
            }
            // Requisitions an approver turns down: rejected in review, no PO comes of them.
            for _ in 0..config.rejected_requisitions_per_org {
                let requester = requesters[rng.random_range(0..requesters.len())].clone();
                let submitted = RequisitionSubmitted {
                    org: org.clone(),
                    requisition: ids.mint::<RequisitionId>(erp),
                    requester: requester.clone(),
                    currency,
                    lines: vec![RequisitionLine {
                        line: LineNumber::new(1).expect("1-based"),
                        description: "gold-plated stapler".into(),
                        quantity: Quantity::new(Decimal::ONE).expect("positive"),
                        unit_price: UnitPrice::new(Money::new(Decimal::from(900), currency))
                            .expect("positive"),
                    }],
                };
                let total = submitted.total().expect("one currency");
                let (mut decisions, refused) =
                    decisions(&mut rng, config, &requester, &approvers, total, false);
                refusals += refused;
                let last = decisions.last_mut().expect("a chain has a step");
                last.approve = false;
                records.extend(ScenarioRecord::requisition_decided(
                    &submitted,
                    decisions,
                    || tick(&mut rng),
                ));
                requisitions.insert(submitted.requisition, (RequisitionState::Rejected, 3));
            }
        }

        // Undecodable records land in the middle of the stream: the partition must keep going.
        for i in 0..config.undecodable_records {
            let at_index = rng.random_range(0..=records.len());
            let key = records
                .get(at_index.saturating_sub(1))
                .map(|r| r.key.clone())
                .unwrap_or_else(|| OrgId::from_u128(ids.next()).to_string());
            records.insert(
                at_index,
                ScenarioRecord {
                    topic: InputTopic::Invoices,
                    key,
                    payload: Payload::Garbage(
                        format!("{{\"invoice\": \"not avro\", \"n\": {i}}}").into_bytes(),
                    ),
                    timestamp: EventTime(clock),
                },
            );
        }
        Scenario {
            records,
            planted,
            lifecycles,
            requisitions,
            converted,
            refusals,
            credit_memos,
        }
    }

    pub fn count(&self, topic: InputTopic) -> usize {
        self.records.iter().filter(|r| r.topic == topic).count()
    }
}

/// An org as the generator sets it up: its settings and its suppliers, published first.
struct OrgSetup {
    org: OrgId,
    currency: Currency,
    suppliers: Vec<SupplierId>,
    /// Its documents carry its ERP's own ids, not UUIDs.
    erp_ids: bool,
}

impl OrgSetup {
    /// Draws an org, and adds its settings and supplier master records to `records`.
    fn draw(
        config: &GeneratorConfig,
        rng: &mut ChaCha8Rng,
        ids: &mut IdSource,
        records: &mut Vec<ScenarioRecord>,
        tick: &mut impl FnMut(&mut ChaCha8Rng) -> EventTime,
        erp_ids: bool,
    ) -> OrgSetup {
        let org = ids.mint::<OrgId>(erp_ids);
        let currency = Currency::parse(CURRENCIES[rng.random_range(0..CURRENCIES.len())])
            .expect("listed codes are ISO 4217");
        let suppliers: Vec<SupplierId> = (0..3).map(|_| ids.mint(erp_ids)).collect();
        // The org pays from one account in its currency; its suppliers are paid net 30.
        // Accounts a bank takes (check digits and length right), so runs go the whole way
        // through the bank connector.
        let debtor = iban_of("DE", &format!("{:018}", ids.next() % 10u128.pow(18)));
        let mut settings = OrgConfig::defaults(org.clone(), currency, tick(rng));
        settings.payment.debtor_accounts.insert(currency, debtor);
        records.push(ScenarioRecord::org_config(&settings));
        for (i, supplier) in suppliers.iter().enumerate() {
            let payee = Payee {
                supplier: supplier.clone(),
                name: format!("Supplier {i} of {}", org_tag(&org)),
                terms: config
                    .net_days
                    .map_or(PaymentTerms::DEFAULT, |days| PaymentTerms::Net { days }),
                blocked: false,
                iban: Some(iban_of(
                    "GB",
                    &format!("NWBK{:014}", ids.next() % 10u128.pow(14)),
                )),
                bic: None,
                bank_account_changed_on: None,
            };
            let at = tick(rng);
            records.push(ScenarioRecord::supplier_master(&org, &payee, None, at));
        }
        OrgSetup {
            org,
            currency,
            suppliers,
            erp_ids,
        }
    }
}

/// One to four lines in `currency`; now and then the first is a service, never received.
fn po_lines(rng: &mut ChaCha8Rng, currency: Currency) -> Vec<PurchaseOrderLine> {
    let line_count = rng.random_range(1..=4);
    (1..=line_count)
        .map(|l| PurchaseOrderLine {
            line: LineNumber::new(l).expect("1-based"),
            description: format!("item {l}"),
            quantity: Quantity::new(Decimal::from(rng.random_range(1..=200u32))).expect("positive"),
            unit_price: UnitPrice::new(Money::new(
                Decimal::new(rng.random_range(100..50_000i64), 2),
                currency,
            ))
            .expect("positive"),
            // A service line now and then: two-way matched, never received.
            receipt_required: l > 1 || line_count == 1 || !rng.random_bool(0.2),
            inspection_required: false,
        })
        .collect()
}

/// POs issued and then left open (nothing received, nothing invoiced), as many as asked, of
/// `orgs` orgs in turn: state that only grows, to measure what a large state costs. Drawn a
/// chunk at a time, so a stream of millions is never held whole.
pub struct OpenPurchaseOrders {
    rng: ChaCha8Rng,
    ids: IdSource,
    clock: i64,
    gap_ms: std::ops::Range<i64>,
    orgs: Vec<OrgSetup>,
    /// The orgs' settings and suppliers, still to be handed out.
    preamble: Vec<ScenarioRecord>,
    issued: u64,
    total: u64,
}

impl OpenPurchaseOrders {
    /// `total` POs of `config.orgs` orgs (the config's seed, clock and terms; its shares and
    /// sizes do not apply).
    pub fn new(config: &GeneratorConfig, total: u64) -> OpenPurchaseOrders {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut ids = IdSource::new(rng.random());
        let mut clock = config.start_ms;
        let gap_ms = config.gap_ms.clone();
        let mut tick = |rng: &mut ChaCha8Rng| {
            clock += rng.random_range(gap_ms.clone());
            EventTime(clock)
        };
        let mut preamble = Vec::new();
        let orgs = (0..config.orgs.max(1))
            .map(|index| {
                let erp_ids = index % 2 == 1;
                OrgSetup::draw(
                    config,
                    &mut rng,
                    &mut ids,
                    &mut preamble,
                    &mut tick,
                    erp_ids,
                )
            })
            .collect();
        OpenPurchaseOrders {
            rng,
            ids,
            clock,
            gap_ms,
            orgs,
            preamble,
            issued: 0,
            total,
        }
    }

    /// Records in all: the orgs' settings and suppliers, then one per PO.
    pub fn records(&self) -> u64 {
        InputTopic::ALL.iter().map(|t| self.count(*t)).sum()
    }

    /// Records in all on `topic`.
    pub fn count(&self, topic: InputTopic) -> u64 {
        match topic {
            InputTopic::OrgConfigs => self.orgs.len() as u64,
            InputTopic::SupplierMasters => self.orgs.iter().map(|o| o.suppliers.len() as u64).sum(),
            InputTopic::PurchaseOrders => self.total,
            _ => 0,
        }
    }

    /// POs in all.
    pub fn pos(&self) -> u64 {
        self.total
    }

    /// The next records, at most `most` (empty once all are out).
    pub fn next_chunk(&mut self, most: usize) -> Vec<ScenarioRecord> {
        let mut chunk: Vec<ScenarioRecord> = self
            .preamble
            .drain(..self.preamble.len().min(most))
            .collect();
        while chunk.len() < most && self.issued < self.total {
            let setup = &self.orgs[(self.issued % self.orgs.len() as u64) as usize];
            let issued = PurchaseOrderIssued {
                org: setup.org.clone(),
                po: self.ids.mint(setup.erp_ids),
                supplier: setup.suppliers[self.rng.random_range(0..setup.suppliers.len())].clone(),
                currency: setup.currency,
                lines: po_lines(&mut self.rng, setup.currency),
                requisition: None,
            };
            self.clock += self.rng.random_range(self.gap_ms.clone());
            chunk.push(ScenarioRecord::purchase_order(
                &PurchaseOrderEvent::Issued(issued),
                EventTime(self.clock),
            ));
            self.issued += 1;
        }
        chunk
    }
}

fn pick_shape(rng: &mut ChaCha8Rng, c: &GeneratorConfig) -> Shape {
    let roll = rng.random_range(0..100u32);
    let mut edge = 0;
    for (pct, shape) in c.anomaly_shares(roll % 2 == 0) {
        edge += pct;
        if roll < edge {
            return shape;
        }
    }
    Shape::Clean
}

/// The decisions on a document of `total` routed by the default policy: sometimes its
/// requester first tries to approve it (refused: segregation of duties, counted in the
/// second value), then one approver per step of the chain (with `all_steps`; else only the
/// first step, for a decision that ends the chain early, such as a rejection).
fn decisions(
    rng: &mut ChaCha8Rng,
    config: &GeneratorConfig,
    requester: &UserId,
    approvers: &[UserId],
    total: Money,
    all_steps: bool,
) -> (Vec<Decision>, usize) {
    let level = ApprovalPolicy::defaults(total.currency())
        .level_for(total)
        .expect("defaults in the document currency need no rate");
    let mut decisions = Vec::new();
    let mut refused = 0;
    if rng.random_range(0..100u32) < config.self_approval_pct {
        decisions.push(Decision {
            approver: requester.clone(),
            authority: ApprovalLevel::L3,
            approve: true,
        });
        refused += 1;
    }
    let steps = if all_steps { level.chain().len() } else { 1 };
    for (step, approver) in level.chain().into_iter().zip(approvers).take(steps) {
        decisions.push(Decision {
            approver: approver.clone(),
            authority: step,
            approve: true,
        });
    }
    (decisions, refused)
}

/// The supplier, kind, currency, gross amount and date of documents issued: what the
/// pipeline's default duplicate rule compares (besides the reference, unique per document).
#[derive(Default)]
struct Fingerprints(HashSet<(SupplierId, DocumentKind, Currency, Decimal, i32)>);

impl Fingerprints {
    fn of(document: &InvoiceReceived) -> (SupplierId, DocumentKind, Currency, Decimal, i32) {
        (
            document.supplier.clone(),
            document.kind,
            document.currency,
            document.total.amount().normalize(),
            document.invoice_date,
        )
    }

    fn is_taken(&self, document: &InvoiceReceived) -> bool {
        self.0.contains(&Self::of(document))
    }

    fn issue(&mut self, document: &InvoiceReceived) {
        self.0.insert(Self::of(document));
    }
}

/// A credit memo from the supplier of `invoice` giving back up to a quarter (at least one) of
/// its first line's quantity at the billed price: goods found damaged and kept, numbered as
/// the supplier numbers its credit notes. Its amount is one no other document of the supplier
/// has on that date, or it would be a duplicate by the pipeline's rule (two memos of one
/// supplier and day crediting one unit of the same item were: a stream of 300 orgs had them).
fn credit_memo(
    invoice: &InvoiceReceived,
    rng: &mut ChaCha8Rng,
    id: InvoiceId,
    n: usize,
    fingerprints: &mut Fingerprints,
) -> InvoiceReceived {
    let first = &invoice.lines[0];
    let billed = first.quantity.value().to_u32().expect("generated as a u32");
    let drawn = rng.random_range(1..=billed.div_ceil(4));
    let memo = |credited: u32| {
        let credited = Decimal::from(credited);
        let line = InvoiceLine {
            quantity: Quantity::new(credited).expect("at least one"),
            ..first.clone()
        };
        let total = (credited * line.unit_price.money().amount()).round_dp(4);
        InvoiceReceived {
            invoice: id.clone(),
            kind: DocumentKind::CreditMemo,
            number: InvoiceNumber::parse(&format!("CN-{}-{n:05}", org_tag(&invoice.org)))
                .expect("non-empty"),
            lines: vec![line],
            total: Money::new(total, invoice.currency),
            payment_block: None,
            ..invoice.clone()
        }
    };
    // The quantity drawn, else the nearest free one up to the whole line.
    let memo = std::iter::once(drawn)
        .chain((1..=billed).filter(|&q| q != drawn))
        .map(memo)
        .find(|memo| !fingerprints.is_taken(memo))
        .unwrap_or_else(|| memo(drawn));
    fingerprints.issue(&memo);
    memo
}

/// `price x percent / 100`, kept to the schema's 6 decimals.
fn scaled(price: UnitPrice, percent: i64) -> UnitPrice {
    let money = price.money();
    let amount = (money.amount() * Decimal::new(percent, 2)).round_dp(6);
    UnitPrice::new(Money::new(amount, money.currency())).expect("positive")
}

struct IdSource {
    bits: u128,
    /// Documents numbered the ERP's way so far (SAP numbers each kind from a range).
    numbered: u64,
}

impl IdSource {
    fn new(bits: u128) -> Self {
        Self { bits, numbered: 0 }
    }

    fn next(&mut self) -> u128 {
        // A Weyl sequence: distinct for 2^128 draws, reproducible from the seed.
        self.bits = self
            .bits
            .wrapping_add(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        self.bits
    }

    /// A new id of kind `T`: `<prefix>_<uuid>`, or where the org publishes its ERP's own ids
    /// (`erp`), one shaped as an SAP system numbers it: company `ACME-0000012345`, vendor
    /// `V100017`, PO `4500000018`, requisition `1000000019`, material document `5000000020`,
    /// invoice `INV-2026/000021` (a `/` in it, as many ERPs' have), user `USER00022`.
    fn mint<T: Identifier>(&mut self, erp: bool) -> T {
        let bits = self.next();
        if !erp {
            return T::from_u128(bits);
        }
        self.numbered += 1;
        let n = self.numbered;
        let id = match T::PREFIX {
            // The low 40 bits of a Weyl sequence never repeat within 2^40 draws: no two orgs
            // of a run share an id, and runs from different seeds almost never do.
            "org" => format!("ACME-{:013}", bits & ((1 << 40) - 1)),
            "sup" => format!("V{}", 100_000 + n),
            "po" => format!("45{n:08}"),
            "req" => format!("10{n:08}"),
            "grn" => format!("50{n:08}"),
            "inv" => format!("INV-2026/{n:06}"),
            _ => format!("USER{n:05}"),
        };
        T::parse(&id).expect("ERP-style ids are printable and short")
    }
}

/// The org's AP manager's decision on `invoice`, with authority for any amount.
fn decided_by(
    manager: &UserId,
    invoice: &InvoiceReceived,
    action: DecisionAction,
    reason_code: &str,
    comment: &str,
) -> InvoiceDecision {
    InvoiceDecision {
        id: format!("decision-of-{}", invoice.invoice),
        invoice: invoice.invoice.clone(),
        po: invoice.po.clone(),
        by: manager.clone(),
        authority: ApprovalLevel::L3,
        action,
        reason_code: reason_code.to_owned(),
        comment: Some(comment.to_owned()),
    }
}

/// A short tag of `org` for generated invoice numbers and names: its id's last 8 characters.
fn org_tag(org: &OrgId) -> &str {
    let id = org.as_str();
    &id[id.len().saturating_sub(8)..]
}

fn event_id(at: EventTime, kind: &str, id: &str) -> String {
    format!("{kind}:{id}:{}", at.0)
}

impl ScenarioRecord {
    /// A `po-events` record, as an ERP publishes it.
    pub fn purchase_order(event: &PurchaseOrderEvent, at: EventTime) -> ScenarioRecord {
        let (org, po) = (event.org(), event.po());
        let value =
            convert::purchase_order_event_value(event, &event_id(at, "po", po.as_str()), at)
                .expect("generated values fit the schema");
        ScenarioRecord {
            topic: InputTopic::PurchaseOrders,
            key: org.to_string(),
            payload: Payload::Document(value, &PURCHASE_ORDER_EVENT),
            timestamp: at,
        }
    }

    /// An `approval-decisions` record, as an approval front end publishes it.
    pub fn decision(decided: &ApprovalDecided, at: EventTime) -> ScenarioRecord {
        let id = event_id(at, "decision", decided.po.as_str());
        ScenarioRecord {
            topic: InputTopic::ApprovalDecisions,
            key: decided.org.to_string(),
            payload: Payload::Document(
                convert::procurement::approval_decision_value(decided, &id, at),
                &APPROVAL_DECISION,
            ),
            timestamp: at,
        }
    }

    /// A `requisition-events` record, as a procurement front end publishes it.
    pub fn requisition(submitted: &RequisitionSubmitted, at: EventTime) -> ScenarioRecord {
        let id = event_id(at, "requisition", submitted.requisition.as_str());
        ScenarioRecord {
            topic: InputTopic::Requisitions,
            key: submitted.org.to_string(),
            payload: Payload::Document(
                convert::procurement::requisition_event_value(submitted, &id, at)
                    .expect("generated values fit the schema"),
                &REQUISITION_EVENT,
            ),
            timestamp: at,
        }
    }

    /// A requisition submitted, then each decision on it, a tick of `at` apart.
    pub fn requisition_decided(
        submitted: &RequisitionSubmitted,
        decisions: Vec<Decision>,
        mut at: impl FnMut() -> EventTime,
    ) -> Vec<ScenarioRecord> {
        let mut records = vec![ScenarioRecord::requisition(submitted, at())];
        for decision in decisions {
            let decided = RequisitionDecided {
                org: submitted.org.clone(),
                requisition: submitted.requisition.clone(),
                decision,
            };
            records.push(ScenarioRecord::requisition_decision(&decided, at()));
        }
        records
    }

    /// An `approval-decisions` record on a requisition.
    pub fn requisition_decision(decided: &RequisitionDecided, at: EventTime) -> ScenarioRecord {
        let id = event_id(at, "decision", decided.requisition.as_str());
        ScenarioRecord {
            topic: InputTopic::ApprovalDecisions,
            key: decided.org.to_string(),
            payload: Payload::Document(
                convert::procurement::requisition_decision_value(decided, &id, at),
                &APPROVAL_DECISION,
            ),
            timestamp: at,
        }
    }

    /// An `org-config` record, as an org's administrator publishes it.
    pub fn org_config(config: &OrgConfig) -> ScenarioRecord {
        ScenarioRecord {
            topic: InputTopic::OrgConfigs,
            key: config.org.to_string(),
            payload: Payload::Document(
                convert::procurement::org_config_value(config)
                    .expect("generated values fit the schema"),
                &ORG_CONFIG,
            ),
            timestamp: config.updated_at,
        }
    }

    /// A `supplier-master` record, as a vendor-master system publishes it.
    pub fn supplier_master(
        org: &OrgId,
        payee: &Payee,
        tolerances: Option<&ToleranceKeys>,
        at: EventTime,
    ) -> ScenarioRecord {
        ScenarioRecord {
            topic: InputTopic::SupplierMasters,
            key: org.to_string(),
            payload: Payload::Document(
                convert::payment::supplier_master_value(org, payee, tolerances, at)
                    .expect("generated values fit the schema"),
                &SUPPLIER_MASTER,
            ),
            timestamp: at,
        }
    }

    /// A `grn-events` record.
    pub fn goods_receipt(receipt: &GoodsReceived, at: EventTime) -> ScenarioRecord {
        let value = convert::goods_receipt_event_value(
            receipt,
            &event_id(at, "grn", receipt.grn.as_str()),
            at,
        )
        .expect("generated values fit the schema");
        ScenarioRecord {
            topic: InputTopic::GoodsReceipts,
            key: receipt.org.to_string(),
            payload: Payload::Document(value, &GOODS_RECEIPT_EVENT),
            timestamp: at,
        }
    }

    /// An `invoice-events` record.
    /// A person's decision on a held invoice of `org`'s.
    pub fn invoice_decision(
        org: &OrgId,
        decision: &InvoiceDecision,
        at: EventTime,
    ) -> ScenarioRecord {
        ScenarioRecord {
            topic: InputTopic::InvoiceDecisions,
            key: org.to_string(),
            payload: Payload::Document(
                convert::status::invoice_decision_value(org, decision, at),
                &INVOICE_DECISION,
            ),
            timestamp: at,
        }
    }

    pub fn invoice(invoice: &InvoiceReceived, at: EventTime) -> ScenarioRecord {
        let value = convert::invoice_event_value(
            invoice,
            &event_id(at, "inv", invoice.invoice.as_str()),
            at,
        )
        .expect("generated values fit the schema");
        ScenarioRecord {
            topic: InputTopic::Invoices,
            key: invoice.org.to_string(),
            payload: Payload::Document(value, &INVOICE_EVENT),
            timestamp: at,
        }
    }

    /// Bytes that are no record at all, keyed by `key`, on `topic`.
    pub fn garbage(topic: InputTopic, key: &str, bytes: &[u8], at: EventTime) -> ScenarioRecord {
        ScenarioRecord {
            topic,
            key: key.to_owned(),
            payload: Payload::Garbage(bytes.to_vec()),
            timestamp: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documents_planted_as_duplicates_look_like_duplicates_to_the_pipeline() {
        // A stream of 300 orgs once had two credit memos of one supplier and day crediting
        // the same amount: the pipeline rightly held the second, planted to match.
        let scenario = Scenario::generate(&GeneratorConfig {
            orgs: 300,
            pos_per_org: 100,
            org_size_skew: 1.0,
            credit_memo_pct: 40,
            ..GeneratorConfig::default()
        });
        let duplicates: HashSet<&InvoiceId> = scenario
            .planted
            .iter()
            .filter(|(_, planted)| {
                matches!(planted, Planted::Exception(r) if r.contains(&ReasonKind::Duplicate))
            })
            .map(|(invoice, _)| invoice)
            .collect();
        // Look-alikes planted for a person to find not duplicates, by that decision.
        let look_alikes: HashSet<InvoiceId> = scenario
            .records
            .iter()
            .filter_map(|record| match &record.payload {
                Payload::Document(value, contract)
                    if contract.default_topic == INVOICE_DECISION.default_topic =>
                {
                    let (_, decision, _) = convert::status::invoice_decision(value).unwrap();
                    (decision.action == DecisionAction::NotADuplicate).then_some(decision.invoice)
                }
                _ => None,
            })
            .collect();
        assert!(!look_alikes.is_empty());
        let mut seen = Fingerprints::default();
        let mut ids = HashSet::new();
        let mut documents = 0;
        for record in &scenario.records {
            let Payload::Document(value, contract) = &record.payload else {
                continue;
            };
            if contract.default_topic != INVOICE_EVENT.default_topic {
                continue;
            }
            let MatchInput::Invoice(document) = convert::invoice_event(value).unwrap().input else {
                continue;
            };
            // A document sent again under its own id (corrected, released) is no duplicate.
            if duplicates.contains(&document.invoice)
                || look_alikes.contains(&document.invoice)
                || !ids.insert(document.invoice.clone())
            {
                continue;
            }
            assert!(
                !seen.is_taken(&document),
                "{} repeats an earlier document's supplier, amount and date",
                document.invoice
            );
            seen.issue(&document);
            documents += 1;
        }
        assert!(documents > 30_000, "{documents} documents checked");
    }

    #[test]
    fn skewed_org_sizes_follow_zipf_and_keep_the_total() {
        let config = GeneratorConfig {
            orgs: 10,
            pos_per_org: 100,
            org_size_skew: 1.0,
            ..GeneratorConfig::default()
        };
        let sizes = config.org_sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 1_000);
        assert!(
            sizes.windows(2).all(|w| w[0] >= w[1]),
            "largest first: {sizes:?}"
        );
        // Zipf with exponent 1: the first org is about twice the second, ten times the tenth.
        assert!(
            (sizes[0] as f64 / sizes[1] as f64 - 2.0).abs() < 0.1,
            "{sizes:?}"
        );
        assert!(
            (sizes[0] as f64 / sizes[9] as f64 - 10.0).abs() < 0.5,
            "{sizes:?}"
        );
        let s = Scenario::generate(&GeneratorConfig {
            orgs: 4,
            pos_per_org: 10,
            ..config
        });
        assert_eq!(s.lifecycles.len(), 40);
        let uniform = GeneratorConfig::default();
        assert!(uniform
            .org_sizes()
            .iter()
            .all(|n| *n == uniform.pos_per_org));
    }

    #[test]
    fn the_clock_starts_and_steps_as_configured() {
        let s = Scenario::generate(&GeneratorConfig {
            start_ms: 1_000_000,
            gap_ms: 5..6,
            ..GeneratorConfig::default()
        });
        let stamps: Vec<i64> = s.records.iter().map(|r| r.timestamp.0).collect();
        assert_eq!(stamps.iter().min(), Some(&1_000_005));
        // Every record is a tick later than the one generated before it (undecodable records
        // excepted: they carry the clock's last reading).
        assert!(*stamps.iter().max().unwrap() <= 1_000_000 + 5 * stamps.len() as i64);
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let a = Scenario::generate(&GeneratorConfig::default());
        let b = Scenario::generate(&GeneratorConfig::default());
        assert_eq!(a.planted, b.planted);
        assert_eq!(a.records.len(), b.records.len());
    }

    #[test]
    fn routed_pos_carry_a_decision_per_step_of_their_chain_and_end_issued() {
        let s = Scenario::generate(&GeneratorConfig::default());
        let routed = s.lifecycles.values().filter(|(_, v)| *v >= 3).count();
        let adopted = s.lifecycles.values().filter(|(_, v)| *v < 3).count();
        assert!(
            routed > 0 && adopted > 0,
            "{routed} routed, {adopted} adopted"
        );
        // Every routed PO needs at least its L1 decision, and some tried to self-approve.
        assert!(s.count(InputTopic::ApprovalDecisions) >= routed + s.refusals);
        assert!(s.refusals > 0);
        assert!(s
            .lifecycles
            .values()
            .any(|(state, _)| *state == PoState::Cancelled));
    }

    #[test]
    fn requisitions_are_decided_step_by_step_then_converted_into_the_po_naming_them_or_rejected() {
        let s = Scenario::generate(&GeneratorConfig::default());
        let converted = s
            .requisitions
            .values()
            .filter(|(state, _)| *state == RequisitionState::ConvertedToPo)
            .count();
        let rejected = s
            .requisitions
            .values()
            .filter(|(state, _)| *state == RequisitionState::Rejected)
            .count();
        assert!(converted > 0 && converted == s.converted.len());
        assert_eq!(rejected, GeneratorConfig::default().orgs);
        assert_eq!(s.count(InputTopic::Requisitions), s.requisitions.len());
        // Each converted requisition's PO is issued naming it, never routed again: v1 at Issued.
        for (po, requisition) in &s.converted {
            assert!(s.requisitions.contains_key(requisition));
            assert!(s.lifecycles.contains_key(po));
        }
        let named: Vec<_> = s
            .records
            .iter()
            .filter(|r| r.topic == InputTopic::PurchaseOrders)
            .filter_map(|r| match &r.payload {
                Payload::Document(v, _) => convert::purchase_order(v).ok(),
                Payload::Garbage(_) => None,
            })
            .filter_map(|(e, _)| e.requisition().cloned())
            .collect();
        assert_eq!(named.len(), converted);
    }

    #[test]
    fn every_planted_outcome_kind_occurs_in_the_default_stream() {
        let s = Scenario::generate(&GeneratorConfig::default());
        let has = |p: &dyn Fn(&Planted) -> bool| s.planted.iter().any(|(_, x)| p(x));
        assert!(has(&|p| *p == Planted::Matched));
        assert!(has(&|p| *p == Planted::Pending));
        for kind in [
            ReasonKind::PriceVariance,
            ReasonKind::QuantityVariance,
            ReasonKind::PoCancelled,
        ] {
            assert!(
                has(&|p| matches!(p, Planted::Exception(k) if k.contains(&kind))),
                "{kind:?}"
            );
        }
        assert_eq!(
            s.records
                .iter()
                .filter(|r| matches!(r.payload, Payload::Garbage(_)))
                .count(),
            1
        );
    }

    /// The invoices of the stream as the pipeline will read them, by id.
    fn invoices(s: &Scenario) -> BTreeMap<InvoiceId, (usize, InvoiceReceived)> {
        s.records
            .iter()
            .enumerate()
            .filter_map(|(at, r)| match &r.payload {
                Payload::Document(v, _) if r.topic == InputTopic::Invoices => {
                    match convert::invoice_event(v).ok()?.input {
                        MatchInput::Invoice(i) => Some((i.invoice.clone(), (at, i))),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn open_pos_come_in_chunks_settings_first_then_each_po_issued_once_and_never_received() {
        let config = GeneratorConfig {
            orgs: 3,
            ..GeneratorConfig::default()
        };
        let mut open = OpenPurchaseOrders::new(&config, 1_000);
        assert_eq!(open.records(), 3 * 4 + 1_000);
        let mut records = Vec::new();
        loop {
            let chunk = open.next_chunk(64);
            assert!(chunk.len() <= 64);
            if chunk.is_empty() {
                break;
            }
            records.extend(chunk);
        }
        assert_eq!(records.len() as u64, 3 * 4 + 1_000);
        let (preamble, pos) = records.split_at(12);
        assert!(preamble.iter().all(|r| matches!(
            r.topic,
            InputTopic::OrgConfigs | InputTopic::SupplierMasters
        )));
        let mut ids = std::collections::BTreeSet::new();
        for record in pos {
            assert_eq!(record.topic, InputTopic::PurchaseOrders);
            let Payload::Document(value, _) = &record.payload else {
                panic!("a PO is a document")
            };
            match convert::purchase_order(value).expect("decodes").0 {
                PurchaseOrderEvent::Issued(issued) => assert!(ids.insert(issued.po)),
                other => panic!("only issued POs, got {other:?}"),
            }
        }
        assert_eq!(ids.len(), 1_000, "every PO distinct");
        // The orgs take turns; the same seed draws the same POs.
        let keys = |records: &[ScenarioRecord]| -> Vec<String> {
            records.iter().map(|r| r.key.clone()).collect()
        };
        assert_eq!(pos[0].key, pos[3].key);
        assert_ne!(pos[0].key, pos[1].key);
        let again = OpenPurchaseOrders::new(&config, 1_000).next_chunk(2_000);
        assert_eq!(keys(&again), keys(&records));
        assert_eq!(again[500].timestamp, records[500].timestamp);
    }

    #[test]
    fn a_configuration_whose_shares_cannot_be_drawn_is_refused_by_name() {
        assert_eq!(GeneratorConfig::default().check(), Ok(()));
        let all_anomalies = GeneratorConfig {
            price_over_tolerance_pct: 60,
            duplicate_pct: 41,
            ..GeneratorConfig::default()
        };
        // 60 + 41 and the defaults' other anomalies (5 + 5 + 15 + 5 + 5 + 5 + 4).
        assert_eq!(
            all_anomalies.check(),
            Err(GeneratorConfigError::AnomaliesOverAll(145))
        );
        let routed = GeneratorConfig {
            routed_pct: 101,
            ..GeneratorConfig::default()
        };
        assert_eq!(
            routed.check(),
            Err(GeneratorConfigError::ShareOverAll {
                field: "routed_pct",
                value: 101
            })
        );
        let empty = GeneratorConfig {
            pos_per_org: 0,
            ..GeneratorConfig::default()
        };
        assert_eq!(empty.check(), Err(GeneratorConfigError::Empty));
    }

    #[test]
    fn credit_memos_give_back_part_of_a_matched_invoice_some_sent_before_it() {
        let s = Scenario::generate(&GeneratorConfig {
            orgs: 10,
            credit_memo_pct: 20,
            ..GeneratorConfig::default()
        });
        let invoices = invoices(&s);
        let memos: Vec<&(usize, InvoiceReceived)> = invoices
            .values()
            .filter(|(_, i)| i.kind == DocumentKind::CreditMemo)
            .collect();
        assert!(memos.len() >= 20, "{} memos", memos.len());
        let mut early = 0;
        for (at, memo) in memos {
            let planted = s.planted.iter().find(|(id, _)| *id == memo.invoice);
            assert_eq!(planted.map(|(_, p)| p), Some(&Planted::Matched));
            // It credits an invoice of its PO, matched as planted, for no more than it billed,
            // at the billed price, and its total is what it gives back.
            let (credited_at, credited) = invoices
                .values()
                .find(|(_, i)| i.po == memo.po && i.kind == DocumentKind::Invoice)
                .expect("the invoice it credits");
            assert!(s
                .planted
                .contains(&(credited.invoice.clone(), Planted::Matched)));
            let (given, billed) = (&memo.lines[0], &credited.lines[0]);
            assert_eq!(
                (given.line, given.unit_price),
                (billed.line, billed.unit_price)
            );
            assert!(given.quantity.value() <= billed.quantity.value());
            assert_eq!(
                memo.total.amount(),
                (given.quantity.value() * given.unit_price.money().amount()).round_dp(4)
            );
            assert_ne!(memo.number, credited.number);
            early += usize::from(at < credited_at);
        }
        assert!(early > 0, "some memos come before their invoice");
    }
}
