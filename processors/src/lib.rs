//! The procure-to-pay domain: value objects (identifiers, money, quantities), purchase-order
//! lines and the three-way match, as pure functions over value types.
//!
//! Owns: business rules. State plus event in, new state plus output events out.
//! Must not touch: Kafka, RocksDB, Avro, clocks or any other I/O. Time comes in with the event
//! (`EventTime`), so replaying the same inputs always yields the same outputs.

pub mod approval;
pub mod decisions;
pub mod duplicates;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod matching;
pub mod money;
pub mod org_config;
pub mod payment;
pub mod procurement;
pub mod requisition;
pub mod tolerance;
pub mod tolerance_keys;

pub use events::*;
pub use ids::*;
pub use lifecycle::{
    Lifecycle, PoAction, PoState, PoTransitionRejected, PurchaseOrder, PurchaseOrderTransitioned,
    Requisition, RequisitionAction, RequisitionState, RequisitionTransitionRejected,
    RequisitionTransitioned, TransitionRejected, Transitioned, Transitions,
};
pub use matching::{DecisionOutcome, LookAlike, MatchContext, MatchError, PurchaseOrderMatch};
pub use money::*;
pub use tolerance::Tolerance;
