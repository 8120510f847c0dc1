//! The generated stream's shape on the command line, shared by `bench` and `produce`.

use clap::Args;
use p2p_loadtest::GeneratorConfig;

fn default() -> GeneratorConfig {
    GeneratorConfig::default()
}

/// Which stream the load generator writes: orgs, sizes, seed, and how often each anomaly is
/// planted (percent of POs; the rest are clean).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Generated stream")]
pub struct StreamArgs {
    /// Organisations (tenants) in the stream [default: 200 for bench, 20 for produce].
    #[arg(long)]
    pub orgs: Option<usize>,
    /// Purchase orders per organisation, on average.
    #[arg(long, default_value_t = 100)]
    pub pos_per_org: usize,
    /// Zipf exponent of the organisations' sizes (0: all alike).
    #[arg(long, default_value_t = 1.0)]
    pub skew: f64,
    /// Seed of the generated stream (same seed, same stream).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// % of POs: invoices priced over the tolerance (held as exceptions).
    #[arg(long, default_value_t = default().price_over_tolerance_pct)]
    pub price_over_pct: u32,
    /// % of POs: invoices priced off, but within the tolerance (matched with a warning).
    #[arg(long, default_value_t = default().price_within_tolerance_pct)]
    pub price_within_pct: u32,
    /// % of POs: invoices billing more than was received.
    #[arg(long, default_value_t = default().quantity_over_pct)]
    pub quantity_over_pct: u32,
    /// % of POs: invoices sent before their goods are received.
    #[arg(long, default_value_t = default().invoice_before_receipt_pct)]
    pub invoice_first_pct: u32,
    /// % of POs: received short, and invoiced for what came.
    #[arg(long, default_value_t = default().short_receipt_pct)]
    pub short_receipt_pct: u32,
    /// % of POs: cancelled, with an invoice against them anyway.
    #[arg(long, default_value_t = default().cancelled_pct)]
    pub cancelled_pct: u32,
    /// % of POs: invoices the supplier sends twice under two numbers.
    #[arg(long, default_value_t = default().duplicate_pct)]
    pub duplicate_pct: u32,
    /// % of POs: invoices credited in part by a credit memo (half the memos come first).
    #[arg(long, default_value_t = default().credit_memo_pct)]
    pub credit_memo_pct: u32,
    /// % of POs: invoices blocked for payment by hand in the ERP (half released later).
    #[arg(long, default_value_t = default().held_pct)]
    pub held_pct: u32,
    /// Records no schema can read (they go to the dead-letter queues).
    #[arg(long, default_value_t = default().undecodable_records)]
    pub undecodable_records: usize,
}

impl StreamArgs {
    /// The generator's configuration, checked; `orgs` unless `--orgs` says otherwise.
    pub fn generator(&self, orgs: usize) -> anyhow::Result<GeneratorConfig> {
        let config = GeneratorConfig {
            seed: self.seed,
            orgs: self.orgs.unwrap_or(orgs),
            pos_per_org: self.pos_per_org,
            org_size_skew: self.skew,
            price_over_tolerance_pct: self.price_over_pct,
            price_within_tolerance_pct: self.price_within_pct,
            quantity_over_pct: self.quantity_over_pct,
            invoice_before_receipt_pct: self.invoice_first_pct,
            short_receipt_pct: self.short_receipt_pct,
            cancelled_pct: self.cancelled_pct,
            duplicate_pct: self.duplicate_pct,
            credit_memo_pct: self.credit_memo_pct,
            held_pct: self.held_pct,
            undecodable_records: self.undecodable_records,
            ..GeneratorConfig::default()
        };
        config.check()?;
        Ok(config)
    }
}
