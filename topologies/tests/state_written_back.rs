//! A batch writes back only the state it changed: settings it merely read (an org's config,
//! read for every PO's approval routing) are not written again, which would put each on the
//! store's changelog once per batch that reads it (issue 24, item 4).

use futures::executor::block_on;
use p2p_avro::contracts::{ORG_CONFIG, PURCHASE_ORDER_EVENT};
use p2p_avro::convert::procurement::org_config_value;
use p2p_avro::convert::purchase_order_event_value;
use p2p_avro::{Codec, Contract};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::*;
use p2p_state::Store;
use p2p_topologies::record::InputRecord;
use p2p_topologies::{ProcurementProcessor, Topics, Topology};
use rust_decimal_macros::dec;
use std::sync::Arc;

/// 2026-01-01.
const T: i64 = 1_767_225_600_000;

fn record(
    topic: String,
    contract: &Contract,
    value: apache_avro::types::Value,
    org: &OrgId,
    offset: i64,
) -> InputRecord {
    let payload = block_on(Codec::Embedded.encode(&topic, contract, value)).unwrap();
    InputRecord {
        topic,
        partition: 0,
        offset,
        timestamp: Some(T + offset),
        key: Some(org.as_str().as_bytes().to_vec()),
        payload: Some(payload),
        headers: vec![],
    }
}

fn submitted(org: &OrgId, offset: i64) -> InputRecord {
    let eur = Currency::parse("EUR").unwrap();
    let event = PurchaseOrderEvent::Submitted(PurchaseOrderSubmitted {
        org: org.clone(),
        po: PurchaseOrderId::random(),
        supplier: SupplierId::random(),
        currency: eur,
        lines: vec![PurchaseOrderLine {
            line: LineNumber::new(1).unwrap(),
            description: "toner".into(),
            quantity: Quantity::new(dec!(4)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(80.00), eur)).unwrap(),
            receipt_required: true,
            inspection_required: false,
        }],
        requester: UserId::random(),
        requisition: None,
    });
    let value = purchase_order_event_value(&event, "e", EventTime(T + offset)).unwrap();
    record(
        Topics::default().po_events,
        &PURCHASE_ORDER_EVENT,
        value,
        org,
        offset,
    )
}

#[test]
fn a_batch_of_purchase_orders_writes_their_state_and_not_the_org_config_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "procurement").unwrap();
    let topology = ProcurementProcessor::new(Topics::default(), Arc::new(Codec::Embedded));
    let org = OrgId::random();
    let config = OrgConfig::defaults(org.clone(), Currency::parse("EUR").unwrap(), EventTime(T));
    let published = record(
        Topics::default().org_config,
        &ORG_CONFIG,
        org_config_value(&config).unwrap(),
        &org,
        0,
    );
    let output = block_on(topology.process(&[published], T, &store)).unwrap();
    assert_eq!(output.stats.dead_lettered, 0);
    // The config published is written.
    assert_eq!(output.state.changes().len(), 1);
    let config_key = output.state.changes()[0].0.clone();
    store.write(output.state).unwrap();

    let output =
        block_on(topology.process(&[submitted(&org, 1), submitted(&org, 2)], T, &store)).unwrap();
    assert_eq!(output.stats.dead_lettered, 0);
    assert_eq!(
        output.stats.get("approval requests") + output.stats.get("refusals"),
        2,
        "{:?}",
        output.stats
    );
    let written: Vec<&Vec<u8>> = output.state.changes().iter().map(|(k, _)| k).collect();
    assert!(
        written.len() >= 2,
        "each PO's state is written: {written:?}"
    );
    assert!(!written.contains(&&config_key), "the config was only read");
}
