//! Documents dated decades back must not make timers storm: an approval step whose SLA ran
//! out thirty years ago is escalated once, stating since when it is overdue, and then once per
//! SLA period from now, not once per period missed nor once per timer tick. (A run fed such
//! documents once logged about 2,600 escalations in three minutes.)

use futures::executor::block_on;
use p2p_avro::contracts::PURCHASE_ORDER_EVENT;
use p2p_avro::convert::procurement::ApprovalRequestRecord;
use p2p_avro::convert::purchase_order_event_value;
use p2p_avro::Codec;
use p2p_processors::*;
use p2p_state::Store;
use p2p_topologies::record::InputRecord;
use p2p_topologies::{ProcurementProcessor, Topics, Topology};
use rust_decimal_macros::dec;
use std::sync::Arc;

/// 2026-01-01.
const T: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;
const YEAR_MS: i64 = 365 * 24 * HOUR_MS;
/// The default approval SLA.
const SLA_MS: i64 = 48 * HOUR_MS;

fn submitted(org: &OrgId, offset: i64, at: i64) -> InputRecord {
    let eur = Currency::parse("EUR").unwrap();
    let event = PurchaseOrderEvent::Submitted(PurchaseOrderSubmitted {
        org: org.clone(),
        po: PurchaseOrderId::random(),
        supplier: SupplierId::random(),
        currency: eur,
        lines: vec![PurchaseOrderLine {
            line: LineNumber::new(1).unwrap(),
            description: "typewriter ribbons".into(),
            quantity: Quantity::new(dec!(400)).unwrap(),
            // Large enough for an approval step under the default thresholds.
            unit_price: UnitPrice::new(Money::new(dec!(250.00), eur)).unwrap(),
            receipt_required: true,
            inspection_required: false,
        }],
        requester: UserId::random(),
        requisition: None,
    });
    let value = purchase_order_event_value(&event, "e", EventTime(at)).unwrap();
    let topic = Topics::default().po_events;
    let payload = block_on(Codec::Embedded.encode(&topic, &PURCHASE_ORDER_EVENT, value)).unwrap();
    InputRecord {
        topic,
        partition: 0,
        offset,
        timestamp: Some(at),
        key: Some(org.as_str().as_bytes().to_vec()),
        payload: Some(payload),
        headers: vec![],
    }
}

#[test]
fn documents_dated_decades_back_escalate_once_then_once_per_sla_period() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "procurement").unwrap();
    let topology = ProcurementProcessor::new(Topics::default(), Arc::new(Codec::Embedded));
    let org = OrgId::random();
    let pos = 20;
    let records: Vec<InputRecord> = (0..pos)
        .map(|i| submitted(&org, i, T - 30 * YEAR_MS + i * HOUR_MS))
        .collect();
    let output = block_on(topology.process(&records, T, &store)).unwrap();
    assert_eq!(output.stats.dead_lettered, 0);
    assert_eq!(output.stats.get("approval requests"), pos as u64);
    let mut escalations = output.stats.get("escalations");
    store.write(output.state).unwrap();

    // Ten days of timer ticks, one a minute, as an idle runtime looks for due timers.
    let mut first_tick = None;
    for minute in 1..=10 * 24 * 60 {
        let now = T + minute * 60_000;
        let output = block_on(topology.process(&[], now, &store)).unwrap();
        let fired = output.stats.get("escalations");
        if fired > 0 && first_tick.is_none() {
            first_tick = Some((minute, fired));
            // Each says how long its step has been overdue: thirty years.
            for record in output
                .records
                .iter()
                .filter(|r| r.topic == "approval-requests")
            {
                let value = block_on(Codec::Embedded.decode(record.payload.as_deref())).unwrap();
                let request = ApprovalRequestRecord::from_value(&value).unwrap();
                let since = request
                    .overdue_since
                    .expect("an escalation says since when");
                assert!(since.0 < T - 29 * YEAR_MS, "{request:?}");
                assert_eq!(request.escalations, 1);
            }
        }
        escalations += fired;
        store.write(output.state).unwrap();
    }
    // Each PO: once for thirty years overdue, then once every 48 h of the ten days.
    let periods = 10 * 24 * HOUR_MS / SLA_MS;
    assert_eq!(
        first_tick,
        Some((1, pos as u64)),
        "thirty years overdue: every PO escalated at the first look, once"
    );
    assert!(
        escalations <= pos as u64 * (1 + periods as u64),
        "{escalations} escalations for {pos} POs over {periods} SLA periods"
    );
    assert!(
        escalations >= pos as u64 * periods as u64,
        "{escalations}: the steps are still escalated every period"
    );
}
