//! One org's settings as published on the compacted `org-config` topic. Processors get them
//! as values; an org that has published none runs on DOMAIN.md's defaults.

use crate::approval::ApprovalPolicy;
use crate::duplicates::LookAlikes;
use crate::events::EventTime;
use crate::ids::OrgId;
use crate::money::Currency;
use crate::payment::{PaymentPolicy, PaymentTerms};
use crate::tolerance_keys::ToleranceKeys;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgConfig {
    pub org: OrgId,
    pub approval: ApprovalPolicy,
    pub payment: PaymentPolicy,
    /// Terms for suppliers the supplier master does not know (yet).
    pub default_terms: PaymentTerms,
    /// How long an invoice may stay pending (waiting for its PO or goods) before it becomes
    /// an exception, in days of event time.
    #[serde(default = "OrgConfig::default_pending_wait_days")]
    pub pending_wait_days: u32,
    /// The org's invoice tolerance keys; `None`: the pipeline's configured default.
    #[serde(default)]
    pub tolerances: Option<Box<ToleranceKeys>>,
    /// What a look-alike invoice gets: held for review (default), a warning, or nothing.
    #[serde(default)]
    pub look_alikes: LookAlikes,
    pub updated_at: EventTime,
}

impl OrgConfig {
    pub const DEFAULT_PENDING_WAIT_DAYS: u32 = 30;

    /// DOMAIN.md's defaults for an org whose thresholds are in `currency`: approval and
    /// payment policy, net 30, the default wait limit and the pipeline's tolerances.
    pub fn defaults(org: OrgId, currency: Currency, updated_at: EventTime) -> Self {
        Self {
            org,
            approval: ApprovalPolicy::defaults(currency),
            payment: PaymentPolicy::defaults(),
            default_terms: PaymentTerms::DEFAULT,
            pending_wait_days: Self::DEFAULT_PENDING_WAIT_DAYS,
            tolerances: None,
            look_alikes: LookAlikes::Hold,
            updated_at,
        }
    }

    fn default_pending_wait_days() -> u32 {
        Self::DEFAULT_PENDING_WAIT_DAYS
    }
}

impl PaymentPolicy {
    /// No discounts captured, a 7-day cooling-off period after a bank-account change, no
    /// installments, and no debtor account: an org must say which account pays.
    pub fn defaults() -> Self {
        Self {
            capture_discounts: false,
            cooling_off_days: 7,
            installment_threshold: None,
            installment_plan: None,
            debtor_accounts: Default::default(),
        }
    }
}

impl PaymentTerms {
    /// Net 30, the usual default when nothing else is agreed.
    pub const DEFAULT: PaymentTerms = PaymentTerms::Net { days: 30 };
}
