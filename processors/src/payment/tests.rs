use super::*;
use crate::events::{EventTime, InvoiceLine};
use crate::ids::InvoiceNumber;
use proptest::strategy::Strategy as _;
use rust_decimal_macros::dec;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn matched(total: Decimal) -> InvoiceMatched {
    InvoiceMatched {
        revision: 0,
        org: OrgId::from_u128(1),
        invoice: InvoiceId::from_u128(2),
        kind: crate::events::DocumentKind::Invoice,
        po: PurchaseOrderId::from_u128(3),
        supplier: SupplierId::from_u128(4),
        number: InvoiceNumber::parse("SI-1").unwrap(),
        total: Money::new(total, eur()),
        lines: Vec::<InvoiceLine>::new(),
        invoice_date: 0,
        matched_at: EventTime(0),
        warnings: vec![],
    }
}

fn payee(terms: &str) -> Payee {
    Payee {
        supplier: SupplierId::from_u128(4),
        name: "Acme Bolts GmbH".into(),
        terms: PaymentTerms::parse(terms).unwrap(),
        blocked: false,
        iban: Some("DE02120300000000202051".into()),
        bic: None,
        bank_account_changed_on: None,
    }
}

fn policy() -> PaymentPolicy {
    PaymentPolicy {
        capture_discounts: true,
        cooling_off_days: 10,
        installment_threshold: None,
        installment_plan: None,
        debtor_accounts: [(eur(), "DE89370400440532013000".to_owned())].into(),
    }
}

const INVOICED: (i32, u32, u32) = (2026, 3, 1);

fn scheduled(total: Decimal, terms: &str) -> Payment {
    let (y, m, d) = INVOICED;
    Payment::schedule(
        None,
        &matched(total),
        date(y, m, d),
        &payee(terms),
        &policy(),
    )
    .unwrap()
    .unwrap()
    .0
}

#[test]
fn terms_parse_in_the_forms_erps_print_them() {
    assert_eq!(
        PaymentTerms::parse("NET30").unwrap(),
        PaymentTerms::Net { days: 30 }
    );
    assert_eq!(
        PaymentTerms::parse(" net 45 ").unwrap(),
        PaymentTerms::Net { days: 45 }
    );
    assert_eq!(
        PaymentTerms::parse("2/10 net 30").unwrap(),
        PaymentTerms::Discount {
            percent: dec!(2),
            within_days: 10,
            net_days: 30
        }
    );
    for bad in [
        "30 days",
        "2/40 net 30",
        "0/10 net 30",
        "net",
        "x/10 net 30",
    ] {
        assert!(PaymentTerms::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn net_terms_pay_the_gross_n_days_after_the_invoice_date() {
    let due = PaymentTerms::parse("NET30").unwrap().due(
        Money::new(dec!(1000), eur()),
        date(2026, 3, 1),
        true,
    );
    assert_eq!(due.pay_on, date(2026, 3, 31));
    assert_eq!(due.amount, Money::new(dec!(1000), eur()));
    assert_eq!(due.discount, None);
}

#[test]
fn a_discount_is_captured_only_when_the_org_enables_it() {
    let terms = PaymentTerms::parse("2/10 net 30").unwrap();
    let gross = Money::new(dec!(1234.56), eur());
    let early = terms.due(gross, date(2026, 3, 1), true);
    assert_eq!(early.pay_on, date(2026, 3, 11));
    // 2% of 1234.56 is 24.6912, rounded half-up to 24.69.
    assert_eq!(early.discount, Some(Money::new(dec!(24.69), eur())));
    assert_eq!(early.amount, Money::new(dec!(1209.87), eur()));
    let late = terms.due(gross, date(2026, 3, 1), false);
    assert_eq!(
        (late.pay_on, late.amount, late.discount),
        (date(2026, 3, 31), gross, None)
    );
}

#[test]
fn a_replayed_match_never_schedules_a_second_payment() {
    let first = scheduled(dec!(100), "NET30");
    let again = Payment::schedule(
        Some(&first),
        &matched(dec!(100)),
        date(2026, 3, 1),
        &payee("NET30"),
        &policy(),
    )
    .unwrap();
    assert!(again.is_none());
}

#[test]
fn a_currency_without_a_debtor_account_cannot_be_scheduled() {
    let mut m = matched(dec!(100));
    m.total = Money::new(dec!(100), Currency::parse("USD").unwrap());
    let err =
        Payment::schedule(None, &m, date(2026, 3, 1), &payee("NET30"), &policy()).unwrap_err();
    assert!(matches!(err, PaymentError::NoDebtorAccount(_)));
}

#[test]
fn a_part_is_released_on_its_run_and_not_before() {
    let mut p = scheduled(dec!(100), "NET30");
    assert!(p
        .release(date(2026, 3, 30), &payee("NET30"), &policy())
        .is_empty());
    let events = p.release(date(2026, 3, 31), &payee("NET30"), &policy());
    assert!(
        matches!(&events[..], [PaymentEvent::Released(r)] if r.amount == Money::new(dec!(100), eur()))
    );
    // Released once: a later run finds nothing to release.
    assert!(p
        .release(date(2026, 4, 30), &payee("NET30"), &policy())
        .is_empty());
}

#[test]
fn a_disputed_po_holds_the_payment_until_the_dispute_is_resolved() {
    let mut p = scheduled(dec!(100), "NET30");
    assert_eq!(
        p.on_po_state(PoState::Disputed),
        vec![PaymentEvent::Held(Hold::PoDisputed)]
    );
    assert!(p
        .release(date(2026, 4, 1), &payee("NET30"), &policy())
        .is_empty());
    assert_eq!(
        p.on_po_state(PoState::Approved),
        vec![PaymentEvent::HoldReleased(Hold::PoDisputed)]
    );
    // The released hold re-enters the next run.
    assert!(matches!(
        p.release(date(2026, 4, 2), &payee("NET30"), &policy())[..],
        [PaymentEvent::Released(_)]
    ));
}

fn revised(total: Decimal, revision: u32) -> InvoiceMatched {
    let mut m = matched(total);
    m.revision = revision;
    m
}

fn invoiced_on() -> NaiveDate {
    let (y, m, d) = INVOICED;
    date(y, m, d)
}

#[test]
fn an_invoice_blocked_after_it_was_scheduled_is_held_until_it_matches_again() {
    let mut p = scheduled(dec!(100), "NET30");
    assert_eq!(
        p.on_blocked(2),
        vec![PaymentEvent::Held(Hold::InvoiceBlocked)]
    );
    assert!(p
        .release(date(2026, 4, 1), &payee("NET30"), &policy())
        .is_empty());
    // The same match again (the manual hold released): the hold goes, nothing is re-planned.
    let events = p
        .on_matched_again(
            &revised(dec!(100), 3),
            invoiced_on(),
            &payee("NET30"),
            &policy(),
        )
        .unwrap();
    assert_eq!(
        events,
        vec![PaymentEvent::HoldReleased(Hold::InvoiceBlocked)]
    );
    assert!(matches!(
        p.release(date(2026, 4, 2), &payee("NET30"), &policy())[..],
        [PaymentEvent::Released(ref r)] if r.amount == Money::new(dec!(100), eur())
    ));
}

#[test]
fn an_outcome_older_than_the_last_one_heard_of_changes_nothing() {
    let mut p = scheduled(dec!(100), "NET30");
    p.on_matched_again(
        &revised(dec!(100), 3),
        invoiced_on(),
        &payee("NET30"),
        &policy(),
    )
    .unwrap();
    assert!(p.on_blocked(2).is_empty(), "a block older than the match");
    assert!(p.on_blocked(3).is_empty(), "the same revision again");
    assert!(p.holds().is_empty());
    let older = p
        .on_matched_again(
            &revised(dec!(80), 1),
            invoiced_on(),
            &payee("NET30"),
            &policy(),
        )
        .unwrap();
    assert!(older.is_empty());
    assert_eq!(p.parts()[0].amount, Money::new(dec!(100), eur()));
}

#[test]
fn a_corrected_invoice_matched_again_before_release_is_planned_anew_on_its_new_amount() {
    let mut p = scheduled(dec!(100), "2/10 NET 30");
    let events = p
        .on_matched_again(
            &revised(dec!(90), 2),
            invoiced_on(),
            &payee("2/10 NET 30"),
            &policy(),
        )
        .unwrap();
    assert_eq!(
        events,
        vec![PaymentEvent::Amended {
            invoice: InvoiceId::from_u128(2),
            parts: vec![(date(2026, 3, 11), Money::new(dec!(88.20), eur()))],
            discount: Some(Money::new(dec!(1.80), eur())),
            rounding: None,
        }]
    );
    assert_eq!(p.parts()[0].amount, Money::new(dec!(88.20), eur()));
}

#[test]
fn a_correction_after_money_went_to_the_bank_is_refused_and_the_payment_kept() {
    let mut p = scheduled(dec!(100), "NET30");
    p.release(date(2026, 3, 31), &payee("NET30"), &policy());
    let err = p
        .on_matched_again(
            &revised(dec!(90), 2),
            invoiced_on(),
            &payee("NET30"),
            &policy(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        PaymentError::CorrectedAfterRelease { part: 1, .. }
    ));
    assert_eq!(p.parts()[0].amount, Money::new(dec!(100), eur()));
}

#[test]
fn a_blocked_supplier_is_not_paid_until_unblocked() {
    let mut p = scheduled(dec!(100), "NET30");
    let mut blocked = payee("NET30");
    blocked.blocked = true;
    let events = p.release(date(2026, 4, 1), &blocked, &policy());
    assert_eq!(events, vec![PaymentEvent::Held(Hold::SupplierBlocked)]);
    let events = p.release(date(2026, 4, 2), &payee("NET30"), &policy());
    assert_eq!(events[0], PaymentEvent::HoldReleased(Hold::SupplierBlocked));
    assert!(matches!(events[1], PaymentEvent::Released(_)));
}

#[test]
fn a_bank_account_changed_within_the_cooling_off_period_holds_the_payment() {
    let mut p = scheduled(dec!(100), "NET30");
    let mut changed = payee("NET30");
    changed.bank_account_changed_on = Some(date(2026, 3, 25));
    // Cooling off for 10 days: until 2026-04-04 exclusive.
    assert_eq!(
        p.release(date(2026, 4, 3), &changed, &policy()),
        vec![PaymentEvent::Held(Hold::BankAccountChanged)]
    );
    let events = p.release(date(2026, 4, 4), &changed, &policy());
    assert_eq!(
        events[0],
        PaymentEvent::HoldReleased(Hold::BankAccountChanged)
    );
    assert!(matches!(events[1], PaymentEvent::Released(_)));
}

#[test]
fn a_cancelled_po_cancels_unreleased_parts_only() {
    let mut plan_policy = policy();
    plan_policy.installment_threshold = Some(Money::new(dec!(1000), eur()));
    plan_policy.installment_plan = Some(InstallmentPlan {
        markup_percent: dec!(5),
        installments: 3,
        interval_days: 30,
    });
    let (mut p, _) = Payment::schedule(
        None,
        &matched(dec!(3000)),
        date(2026, 3, 1),
        &payee("NET30"),
        &plan_policy,
    )
    .unwrap()
    .unwrap();
    p.release(date(2026, 3, 31), &payee("NET30"), &plan_policy);
    let events = p.on_po_state(PoState::Cancelled);
    assert_eq!(
        events,
        vec![
            PaymentEvent::PartCancelled(2),
            PaymentEvent::PartCancelled(3)
        ]
    );
    assert!(matches!(p.parts()[0].status, PartStatus::Released { .. }));
}

#[test]
fn installments_add_up_to_cost_plus_markup_to_the_cent() {
    let plan = InstallmentPlan {
        markup_percent: dec!(7.5),
        installments: 3,
        interval_days: 30,
    };
    let parts = plan.schedule(Money::new(dec!(1000.00), eur()), date(2026, 1, 31));
    let amounts: Vec<Decimal> = parts.iter().map(|(_, m)| m.amount()).collect();
    // 1075.00 in three: 358.33, 358.33 and the remainder 358.34.
    assert_eq!(amounts, vec![dec!(358.33), dec!(358.33), dec!(358.34)]);
    assert_eq!(parts[1].0, date(2026, 3, 2));
}

#[test]
fn the_payment_is_settled_when_its_last_part_is_remitted() {
    let mut plan_policy = policy();
    plan_policy.installment_threshold = Some(Money::new(dec!(1000), eur()));
    plan_policy.installment_plan = Some(InstallmentPlan {
        markup_percent: dec!(0),
        installments: 2,
        interval_days: 30,
    });
    let (mut p, events) = Payment::schedule(
        None,
        &matched(dec!(2000)),
        date(2026, 3, 1),
        &payee("2/10 net 30"),
        &plan_policy,
    )
    .unwrap()
    .unwrap();
    // Financed invoices take no early-payment discount.
    assert!(
        matches!(&events[0], PaymentEvent::Scheduled { discount: None, parts, .. } if parts.len() == 2)
    );
    p.release(date(2026, 5, 1), &payee("NET30"), &plan_policy);
    assert_eq!(
        p.on_bank_status(1, &BankStatus::Accepted).unwrap(),
        vec![PaymentEvent::PartDisbursed(1)]
    );
    assert_eq!(
        p.on_bank_status(1, &BankStatus::Settled).unwrap(),
        vec![PaymentEvent::PartRemitted(1)]
    );
    let last = p.on_bank_status(2, &BankStatus::Settled).unwrap();
    assert_eq!(
        last,
        vec![
            PaymentEvent::PartRemitted(2),
            PaymentEvent::Settled {
                invoice: InvoiceId::from_u128(2),
                po: PurchaseOrderId::from_u128(3)
            }
        ]
    );
    // A repeated report changes nothing.
    assert!(p
        .on_bank_status(2, &BankStatus::Settled)
        .unwrap()
        .is_empty());
}

#[test]
fn a_bank_status_for_an_unreleased_part_is_refused() {
    let mut p = scheduled(dec!(100), "NET30");
    assert!(matches!(
        p.on_bank_status(1, &BankStatus::Settled),
        Err(PaymentError::UnexpectedBankStatus { part: 1, .. })
    ));
    assert_eq!(
        p.on_bank_status(9, &BankStatus::Settled),
        Err(PaymentError::UnknownPart(9))
    );
}

#[test]
fn runs_group_by_org_currency_debtor_account_and_date_and_total_exactly() {
    let release = |org: u128, amount: Decimal, account: &str, day: u32| Release {
        org: OrgId::from_u128(org),
        invoice: InvoiceId::random(),
        supplier: SupplierId::from_u128(4),
        part: 1,
        amount: Money::new(amount, eur()),
        debtor_account: account.to_owned(),
        execution_date: date(2026, 4, day),
    };
    let runs = payment_runs(vec![
        release(1, dec!(10.10), "A", 1),
        release(1, dec!(20.20), "A", 1),
        release(1, dec!(5), "B", 1),
        release(2, dec!(7), "A", 1),
        release(1, dec!(1), "A", 2),
    ])
    .unwrap();
    assert_eq!(runs.len(), 4);
    let first = &runs[0];
    assert_eq!(
        (first.debtor_account.as_str(), first.execution_date),
        ("A", date(2026, 4, 1))
    );
    assert_eq!(first.total, Money::new(dec!(30.30), eur()));
    assert_eq!(first.releases.len(), 2);
}

#[test]
fn a_date_with_more_releases_than_one_run_carries_goes_out_as_several_each_totalled() {
    // A large org's month-end: 2,345 invoices of one supplier due the same day.
    let releases: Vec<Release> = (1..=2_345u32)
        .map(|n| Release {
            org: OrgId::from_u128(1),
            invoice: InvoiceId::random(),
            supplier: SupplierId::from_u128(4),
            part: 1,
            amount: Money::new(Decimal::new(i64::from(n), 2), eur()),
            debtor_account: "A".to_owned(),
            execution_date: date(2026, 4, 30),
        })
        .collect();
    let runs = payment_runs(releases.clone()).unwrap();
    let sizes: Vec<usize> = runs.iter().map(|r| r.releases.len()).collect();
    assert_eq!(sizes, vec![MAX_RUN_PAYMENTS, MAX_RUN_PAYMENTS, 345]);
    // Every release once, in order, and each run's total is its own releases' sum.
    let paid: Vec<&Release> = runs.iter().flat_map(|r| &r.releases).collect();
    assert_eq!(paid, releases.iter().collect::<Vec<_>>());
    for run in &runs {
        let sum: Decimal = run.releases.iter().map(|r| r.amount.amount()).sum();
        assert_eq!(run.total, Money::new(sum, eur()));
    }
    // 0.01 + ... + 23.45 EUR: 27,506.85 in all, to the cent.
    let all: Decimal = runs.iter().map(|r| r.total.amount()).sum();
    assert_eq!(all, dec!(27506.85));
}

#[test]
fn a_run_takes_what_is_due_and_a_held_payment_re_enters_the_next_run() {
    let mut payment = scheduled(dec!(100), "NET 30");
    let due = payment.next_due().unwrap();
    assert_eq!(due, date(2026, 3, 31));
    let mut queue = RunQueue::default();
    let slot = queue.add(due);
    assert_eq!(queue.take_due(date(2026, 3, 30)), vec![]);
    assert_eq!(queue.next(), Some(due));
    assert_eq!(queue.take_due(due), vec![slot]);
    assert_eq!(queue.next(), None);

    // Held on the run date: nothing released, back in the queue for the next day's run.
    let mut blocked = payee("NET 30");
    blocked.blocked = true;
    let events = payment.release(due, &blocked, &policy());
    assert_eq!(events, vec![PaymentEvent::Held(Hold::SupplierBlocked)]);
    let requeued = queue.requeue(&payment, due).unwrap();
    assert_eq!(requeued.date, date(2026, 4, 1));
    assert_eq!(queue.next(), Some(date(2026, 4, 1)));

    // Released next day: nothing left to queue.
    assert_eq!(queue.take_due(date(2026, 4, 1)), vec![requeued]);
    let events = payment.release(date(2026, 4, 1), &payee("NET 30"), &policy());
    assert!(matches!(
        events[..],
        [
            PaymentEvent::HoldReleased(Hold::SupplierBlocked),
            PaymentEvent::Released(_)
        ]
    ));
    assert_eq!(queue.requeue(&payment, date(2026, 4, 1)), None);
    assert_eq!(queue.next(), None);
}

#[test]
fn a_queue_names_a_slot_of_its_own_for_each_invoice_and_a_run_takes_them_by_date() {
    let mut queue = RunQueue::default();
    let (may, june) = (date(2026, 5, 1), date(2026, 6, 1));
    let slots = [
        queue.add(june),
        queue.add(may),
        queue.add(june),
        queue.add(may),
    ];
    let distinct: BTreeSet<QueueSlot> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), 4);
    assert_eq!(queue.take_due(may), vec![slots[1], slots[3]]);
    // A date already run numbers its slots anew: the run took (and emptied) the old ones.
    let late = queue.add(may);
    assert_eq!(
        late,
        QueueSlot {
            date: may,
            index: 0
        }
    );
    assert_eq!(queue.take_due(june), vec![late, slots[0], slots[2]]);
    assert_eq!(queue.next(), None);
}

#[test]
fn a_supplier_without_an_account_to_pay_to_is_held_until_the_master_has_one() {
    let mut payment = scheduled(dec!(100), "NET 0");
    let mut no_account = payee("NET 0");
    no_account.iban = None;
    let run = date(2026, 3, 1);
    assert_eq!(
        payment.release(run, &no_account, &policy()),
        vec![PaymentEvent::Held(Hold::NoCreditorAccount)]
    );
    let events = payment.release(run, &payee("NET 0"), &policy());
    assert_eq!(
        events[0],
        PaymentEvent::HoldReleased(Hold::NoCreditorAccount)
    );
    assert!(matches!(events[1], PaymentEvent::Released(_)));
}

/// One thing that can happen to a scheduled payment.
#[derive(Debug, Clone)]
enum Step {
    /// The match is replayed or re-delivered.
    Rematch,
    /// A payment run on this many days after the invoice date.
    Run(u32),
    Po(PoState),
    Blocked(bool),
    /// The bank reports on this part.
    Bank(u32, BankStatus),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Step::Rematch),
        (0u32..120).prop_map(Step::Run),
        prop_oneof![
            Just(PoState::Disputed),
            Just(PoState::Received),
            Just(PoState::Cancelled)
        ]
        .prop_map(Step::Po),
        any::<bool>().prop_map(Step::Blocked),
        (
            1u32..4,
            prop_oneof![
                Just(BankStatus::Accepted),
                Just(BankStatus::Settled),
                Just(BankStatus::Rejected("AC04".into()))
            ]
        )
            .prop_map(|(part, status)| Step::Bank(part, status)),
    ]
}

proptest::proptest! {
    /// Whatever happens to it (replays, runs on any dates, disputes, cancellation, blocks, bank
    /// reports in any order), an invoice is scheduled once, each part is released at most
    /// once, and what is released never exceeds what is payable nor changes currency. What is
    /// payable plus the discount taken is the invoice total to the cent (or, financed, the
    /// rounded cost plus markup).
    #[test]
    fn one_payment_per_invoice_never_more_than_payable_never_another_currency(
        cents in 1i64..100_000_000,
        terms in proptest::prop_oneof![
            proptest::strategy::Just("NET 30"),
            proptest::strategy::Just("2/10 NET 30"),
            proptest::strategy::Just("1.5/15 NET 45")
        ],
        capture in proptest::bool::ANY,
        financed in proptest::bool::ANY,
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let total = Decimal::new(cents, 2);
        let mut org_policy = policy();
        org_policy.capture_discounts = capture;
        if financed {
            org_policy.installment_threshold = Some(Money::new(dec!(0.01), eur()));
            org_policy.installment_plan = Some(InstallmentPlan {
                markup_percent: dec!(3.7),
                installments: 3,
                interval_days: 30,
            });
        }
        let (y, m, d) = INVOICED;
        let invoiced = date(y, m, d);
        let mut supplier = payee(terms);
        let (mut payment, events) =
            Payment::schedule(None, &matched(total), invoiced, &supplier, &org_policy)
                .unwrap()
                .unwrap();
        let (payable, discount) = match &events[0] {
            PaymentEvent::Scheduled { parts, discount, .. } => (
                parts.iter().map(|(_, m)| m.amount()).sum::<Decimal>(),
                discount.map_or(Decimal::ZERO, |d| d.amount()),
            ),
            other => panic!("first event is {other:?}"),
        };
        if financed {
            let rounded = Money::new(total * dec!(103.7) / dec!(100), eur()).round_half_up();
            proptest::prop_assert_eq!(payable, rounded.amount());
        } else {
            proptest::prop_assert_eq!(payable + discount, total);
        }

        let mut released: BTreeMap<u32, Money> = BTreeMap::new();
        for step in steps {
            let events = match step {
                Step::Rematch => {
                    let again =
                        Payment::schedule(Some(&payment), &matched(total), invoiced, &supplier, &org_policy)
                            .unwrap();
                    proptest::prop_assert!(again.is_none(), "scheduled a second payment");
                    vec![]
                }
                Step::Run(days) => payment.release(
                    invoiced + chrono::Days::new(u64::from(days)),
                    &supplier,
                    &org_policy,
                ),
                Step::Po(state) => payment.on_po_state(state),
                Step::Blocked(blocked) => {
                    supplier.blocked = blocked;
                    payment.on_payee(&supplier)
                }
                // Out-of-order reports are refused, never applied.
                Step::Bank(part, status) => payment.on_bank_status(part, &status).unwrap_or_default(),
            };
            for event in events {
                if let PaymentEvent::Released(release) = event {
                    proptest::prop_assert_eq!(release.amount.currency(), eur());
                    proptest::prop_assert!(
                        released.insert(release.part, release.amount).is_none(),
                        "part {} released twice", release.part
                    );
                }
            }
        }
        let out: Decimal = released.values().map(|m| m.amount()).sum();
        proptest::prop_assert!(out <= payable);
    }
}

// ---- credit memos: set off against the supplier's next payments -----------------------------

fn credit_memo(id: u128, total: Decimal) -> InvoiceMatched {
    InvoiceMatched {
        invoice: InvoiceId::from_u128(id),
        kind: crate::events::DocumentKind::CreditMemo,
        number: InvoiceNumber::parse(&format!("CM-{id}")).unwrap(),
        ..matched(total)
    }
}

fn credit_of(memos: &[(u128, Decimal)]) -> SupplierCredit {
    let mut credit = SupplierCredit::new(eur());
    for &(id, total) in memos {
        assert!(credit.record(&credit_memo(id, total)).unwrap());
    }
    credit
}

/// Releases a Net-30 payment of `total` on its due date and sets `credit` off against it.
fn release_against(total: Decimal, credit: &mut SupplierCredit) -> (Payment, Vec<PaymentEvent>) {
    let mut payment = scheduled(total, "NET 30");
    let released = payment.release(date(2026, 3, 31), &payee("NET 30"), &policy());
    let [PaymentEvent::Released(release)] = released.as_slice() else {
        panic!("expected one release, got {released:?}");
    };
    let events = payment.set_off(release.clone(), credit).unwrap();
    (payment, events)
}

fn eur_amount(amount: Decimal) -> Money {
    Money::new(amount, eur())
}

#[test]
fn a_credit_memo_is_never_scheduled_as_a_payment() {
    let (y, m, d) = INVOICED;
    let refused = Payment::schedule(
        None,
        &credit_memo(9, dec!(100)),
        date(y, m, d),
        &payee("NET 30"),
        &policy(),
    );
    assert_eq!(
        refused,
        Err(PaymentError::CreditMemo(InvoiceId::from_u128(9)))
    );
}

#[test]
fn a_credit_is_taken_off_the_suppliers_next_payment_and_the_rest_is_released() {
    let mut credit = credit_of(&[(9, dec!(300.00))]);
    let (_, events) = release_against(dec!(1000.00), &mut credit);
    assert_eq!(
        events[0],
        PaymentEvent::CreditSetOff {
            part: 1,
            offsets: vec![Offset {
                memo: InvoiceId::from_u128(9),
                number: InvoiceNumber::parse("CM-9").unwrap(),
                amount: eur_amount(dec!(300.00)),
            }],
        }
    );
    assert!(
        matches!(&events[1], PaymentEvent::Released(r) if r.amount == eur_amount(dec!(700.00)))
    );
    assert_eq!(events.len(), 2);
    assert_eq!(credit.balance().unwrap(), eur_amount(dec!(0)));
}

#[test]
fn a_credit_larger_than_the_payment_pays_it_in_full_and_the_rest_waits_for_the_next() {
    let mut credit = credit_of(&[(9, dec!(300.00))]);
    let (payment, events) = release_against(dec!(200.00), &mut credit);
    assert!(
        matches!(&events[0], PaymentEvent::CreditSetOff { offsets, .. }
        if offsets.len() == 1 && offsets[0].amount == eur_amount(dec!(200.00)))
    );
    assert_eq!(events[1], PaymentEvent::PartSetOff(1));
    assert!(matches!(&events[2], PaymentEvent::Settled { .. }));
    assert_eq!(payment.parts()[0].status, PartStatus::SetOff);
    assert_eq!(credit.balance().unwrap(), eur_amount(dec!(100.00)));
    // Nothing to instruct for that one; the next payment gets the other 100.
    let (_, next) = release_against(dec!(500.00), &mut credit);
    assert!(matches!(&next[1], PaymentEvent::Released(r) if r.amount == eur_amount(dec!(400.00))));
}

#[test]
fn credits_are_used_oldest_first_and_a_replayed_memo_counts_once() {
    let mut credit = credit_of(&[(9, dec!(50.00)), (10, dec!(80.00))]);
    assert!(!credit.record(&credit_memo(9, dec!(50.00))).unwrap());
    assert_eq!(credit.balance().unwrap(), eur_amount(dec!(130.00)));
    let (_, events) = release_against(dec!(100.00), &mut credit);
    let PaymentEvent::CreditSetOff { offsets, .. } = &events[0] else {
        panic!("{events:?}");
    };
    let taken: Vec<(InvoiceId, Money)> =
        offsets.iter().map(|o| (o.memo.clone(), o.amount)).collect();
    assert_eq!(
        taken,
        vec![
            (InvoiceId::from_u128(9), eur_amount(dec!(50.00))),
            (InvoiceId::from_u128(10), eur_amount(dec!(50.00))),
        ]
    );
    assert_eq!(credit.open().len(), 1);
    assert_eq!(credit.balance().unwrap(), eur_amount(dec!(30.00)));
}

#[test]
fn credit_in_one_currency_is_never_taken_off_a_payment_in_another() {
    let usd = Currency::parse("USD").unwrap();
    let mut credit = SupplierCredit::new(usd);
    let memo = credit_memo(9, dec!(100));
    assert!(matches!(
        credit.record(&memo),
        Err(CreditError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        credit.record(&matched(dec!(5))),
        Err(CreditError::NotACreditMemo(_))
    ));
}

proptest::proptest! {
    /// Not a cent appears or vanishes: what the bank is told to pay plus what credit paid is
    /// exactly what the payments were for, and the credit used plus the credit left is exactly
    /// what the memos were for.
    #[test]
    fn set_off_conserves_every_cent(
        payments in proptest::collection::vec(1u32..100_000, 1..8),
        memos in proptest::collection::vec(1u32..100_000, 0..8),
    ) {
        let cents = |c: u32| Decimal::new(i64::from(c), 2);
        let memos: Vec<(u128, Decimal)> = memos
            .iter()
            .enumerate()
            .map(|(i, c)| (100 + i as u128, cents(*c)))
            .collect();
        let mut credit = credit_of(&memos);
        let mut instructed = Decimal::ZERO;
        let mut set_off = Decimal::ZERO;
        for total in &payments {
            let (_, events) = release_against(cents(*total), &mut credit);
            for event in events {
                match event {
                    PaymentEvent::Released(r) => {
                        proptest::prop_assert!(r.amount.amount() > Decimal::ZERO);
                        instructed += r.amount.amount();
                    }
                    PaymentEvent::CreditSetOff { offsets, .. } => {
                        set_off += offsets.iter().map(|o| o.amount.amount()).sum::<Decimal>();
                    }
                    _ => {}
                }
            }
        }
        let paid: Decimal = payments.iter().map(|c| cents(*c)).sum();
        let credited: Decimal = memos.iter().map(|(_, a)| *a).sum();
        proptest::prop_assert_eq!(instructed + set_off, paid);
        proptest::prop_assert_eq!(set_off + credit.balance().unwrap().amount(), credited);
        proptest::prop_assert_eq!(set_off, paid.min(credited));
    }
}

/// A match outcome of the invoice, as the payment topology reads it from `invoice-matched` or
/// `invoice-exceptions`.
#[derive(Debug, Clone)]
enum Outcome {
    Matched(Decimal),
    Blocked,
}

fn apply_outcome(p: &mut Payment, revision: u32, outcome: &Outcome) {
    match outcome {
        Outcome::Matched(total) => {
            p.on_matched_again(
                &revised(*total, revision),
                invoiced_on(),
                &payee("NET30"),
                &policy(),
            )
            .unwrap();
        }
        Outcome::Blocked => {
            p.on_blocked(revision);
        }
    }
}

proptest::proptest! {
    /// The match decides an invoice again and again (blocked by hand, released, corrected);
    /// its outcomes reach the payment from two topics, in any order and perhaps twice. The
    /// payment ends as the newest outcome says, whatever the order: held if it blocks, planned
    /// on its amount if it matches.
    #[test]
    fn a_payment_ends_as_the_newest_outcome_of_its_match_says_whatever_the_order(
        outcomes in proptest::collection::vec(
            proptest::prop_oneof![
                (1i64..100_000).prop_map(|c| Outcome::Matched(Decimal::new(c, 2))),
                proptest::strategy::Just(Outcome::Blocked),
            ],
            1..8,
        ),
        order in proptest::collection::vec(0usize..100, 0..16),
    ) {
        // Revision 1 is the match that scheduled it; the later ones are numbered from 2.
        let numbered: Vec<(u32, Outcome)> =
            outcomes.iter().cloned().enumerate().map(|(i, o)| (i as u32 + 2, o)).collect();
        let mut in_order = scheduled(dec!(100), "NET30");
        for (revision, outcome) in &numbered {
            apply_outcome(&mut in_order, *revision, outcome);
        }
        // Any order, with re-deliveries: the indices pick outcomes, then every one comes once more.
        let mut shuffled = scheduled(dec!(100), "NET30");
        for i in order.iter().map(|i| i % numbered.len()).chain(0..numbered.len()) {
            let (revision, outcome) = &numbered[i];
            apply_outcome(&mut shuffled, *revision, outcome);
        }
        let (_, newest) = numbered.last().unwrap();
        let amount = |p: &Payment| p.parts()[0].amount;
        proptest::prop_assert_eq!(shuffled.holds(), in_order.holds());
        match newest.clone() {
            // Held: nothing is paid, and the match that releases it brings its amount.
            Outcome::Blocked => proptest::prop_assert!(shuffled.holds().contains(&Hold::InvoiceBlocked)),
            Outcome::Matched(total) => {
                proptest::prop_assert!(shuffled.holds().is_empty());
                proptest::prop_assert_eq!(amount(&shuffled), Money::new(total, eur()));
                proptest::prop_assert_eq!(amount(&in_order), Money::new(total, eur()));
            }
        }
    }
}

/// `amount` has no more decimals than its currency's minor unit.
fn in_minor_units(amount: Money) -> bool {
    amount.amount().normalize().scale() <= amount.currency().minor_units()
}

#[test]
fn an_invoice_billed_in_fractions_of_a_cent_is_paid_in_cents_and_the_difference_recorded() {
    for (code, invoiced, paid, rounding) in [
        ("EUR", dec!(99.9999), dec!(100.00), Some(dec!(0.0001))),
        ("EUR", dec!(1234.5649), dec!(1234.56), Some(dec!(-0.0049))),
        ("EUR", dec!(10.005), dec!(10.01), Some(dec!(0.005))),
        ("EUR", dec!(10.00), dec!(10.00), None),
        ("JPY", dec!(1234.5), dec!(1235), Some(dec!(0.5))),
        ("KWD", dec!(10.1235), dec!(10.124), Some(dec!(0.0005))),
    ] {
        let currency = Currency::parse(code).unwrap();
        let mut org_policy = policy();
        org_policy
            .debtor_accounts
            .insert(currency, "KW81CBKU0000000000001234560101".into());
        let invoice = InvoiceMatched {
            total: Money::new(invoiced, currency),
            ..matched(invoiced)
        };
        let (mut payment, events) = Payment::schedule(
            None,
            &invoice,
            date(2026, 3, 1),
            &payee("NET 0"),
            &org_policy,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            events[0],
            PaymentEvent::Scheduled {
                invoice: invoice.invoice.clone(),
                parts: vec![(date(2026, 3, 1), Money::new(paid, currency))],
                discount: None,
                rounding: rounding.map(|r| Money::new(r, currency)),
            },
            "{code} {invoiced}"
        );
        let released = payment.release(date(2026, 3, 1), &payee("NET 0"), &org_policy);
        assert!(
            matches!(released.as_slice(), [PaymentEvent::Released(r)] if r.amount == Money::new(paid, currency)),
            "{released:?}"
        );
    }
}

#[test]
fn a_discount_on_an_amount_in_fractions_of_a_cent_is_taken_off_the_rounded_amount() {
    let payment = scheduled(dec!(1234.5678), "2/10 NET 30");
    // Payable 1234.57; 2% of it is 24.6914, 24.69; 1209.88 goes to the bank.
    assert_eq!(payment.parts()[0].amount, eur_amount(dec!(1209.88)));
}

fn currency_strategy() -> impl proptest::strategy::Strategy<Value = Currency> {
    proptest::prop_oneof![
        proptest::strategy::Just("EUR"),
        proptest::strategy::Just("JPY"),
        proptest::strategy::Just("KWD"),
        proptest::strategy::Just("BHD"),
    ]
    .prop_map(|code| Currency::parse(code).unwrap())
}

proptest::proptest! {
    /// Issue 22, item 2: whatever decimals an invoice and its credit memos carry, every
    /// amount that leaves for a bank is in the currency's minor unit; the parts and the
    /// discount add up to the payable amount exactly, which differs from the invoiced one by
    /// the recorded rounding, at most half a minor unit; installments add up to the rounded
    /// cost plus markup; credit taken plus what is released is the part; a run's total is
    /// the sum of its payments to the last unit.
    #[test]
    fn what_leaves_for_a_bank_is_in_minor_units_and_adds_up_exactly(
        ten_thousandths in 1i64..10_000_000_000_000,
        currency in currency_strategy(),
        terms in proptest::prop_oneof![
            proptest::strategy::Just("NET 0"),
            proptest::strategy::Just("2/0 NET 30"),
            proptest::strategy::Just("1.5/0 NET 45")
        ],
        financed in proptest::bool::ANY,
        memos in proptest::collection::vec(1i64..1_000_000_000, 0..4),
    ) {
        let total = Decimal::new(ten_thousandths, 4);
        let mut org_policy = policy();
        org_policy.debtor_accounts.insert(currency, "DE89370400440532013000".into());
        if financed {
            org_policy.installment_threshold = Some(Money::new(dec!(0), currency));
            org_policy.installment_plan = Some(InstallmentPlan {
                markup_percent: dec!(3.7),
                installments: 7,
                interval_days: 0,
            });
        }
        let invoice = InvoiceMatched { total: Money::new(total, currency), ..matched(total) };
        let supplier = payee(terms);
        let (mut payment, events) =
            Payment::schedule(None, &invoice, date(2026, 3, 1), &supplier, &org_policy)
                .unwrap()
                .unwrap();
        let PaymentEvent::Scheduled { parts, discount, rounding, .. } = &events[0] else {
            panic!("first event is {:?}", events[0]);
        };
        let rounding = rounding.map_or(Decimal::ZERO, |r| r.amount());
        let half_unit = Decimal::new(5, currency.minor_units() + 1);
        proptest::prop_assert!(rounding.abs() <= half_unit);
        let payable = total + rounding;
        proptest::prop_assert!(in_minor_units(Money::new(payable, currency)));
        for (_, part) in parts {
            proptest::prop_assert!(in_minor_units(*part), "part {part}");
        }
        let parts_sum: Decimal = parts.iter().map(|(_, m)| m.amount()).sum();
        if financed {
            let cost_plus_markup =
                Money::new(payable * dec!(103.7) / dec!(100), currency).round_half_up();
            proptest::prop_assert_eq!(parts_sum, cost_plus_markup.amount());
        } else {
            let discount = discount.map_or(Decimal::ZERO, |d| d.amount());
            proptest::prop_assert!(in_minor_units(Money::new(discount, currency)));
            proptest::prop_assert_eq!(parts_sum + discount, payable);
        }

        let mut credit = SupplierCredit::new(currency);
        for (i, memo) in memos.iter().enumerate() {
            let memo = InvoiceMatched {
                total: Money::new(Decimal::new(*memo, 4), currency),
                ..credit_memo(100 + i as u128, Decimal::ZERO)
            };
            credit.record(&memo).unwrap();
        }
        let mut to_bank = Vec::new();
        for release in payment.release(date(2026, 3, 1), &supplier, &org_policy) {
            let PaymentEvent::Released(release) = release else { continue };
            let part = release.amount;
            let mut taken = Decimal::ZERO;
            let mut sent = Decimal::ZERO;
            for event in payment.set_off(release, &mut credit).unwrap() {
                match event {
                    PaymentEvent::CreditSetOff { offsets, .. } => {
                        for o in offsets {
                            proptest::prop_assert!(in_minor_units(o.amount));
                            taken += o.amount.amount();
                        }
                    }
                    PaymentEvent::Released(r) => {
                        proptest::prop_assert!(in_minor_units(r.amount));
                        sent += r.amount.amount();
                        to_bank.push(r);
                    }
                    _ => {}
                }
            }
            proptest::prop_assert_eq!(taken + sent, part.amount());
        }
        let sent: Decimal = to_bank.iter().map(|r| r.amount.amount()).sum();
        for run in payment_runs(to_bank).unwrap() {
            proptest::prop_assert!(in_minor_units(run.total));
            proptest::prop_assert_eq!(run.total.amount(), sent);
        }
    }
}
