//! A bank, simulated (`p2p bank-sim`): takes pain.001 files over HTTP, checks each against
//! the XSD, answers with a reference (409 with the first reference for a `MsgId` it has
//! already), executes each payment once, and later posts pain.002.001.12 reports to the
//! connector's webhook: accepted (ACSP) then settled (ACSC), every `reject_every`-th payment
//! rejected (AC04, account closed). Faults on command (`POST /faults`): 500s, a bank that is
//! down, slow answers, acknowledgements lost (the file taken, the answer never arriving in
//! time), every report posted twice. `GET /state` says what it executed: a payment executed
//! twice is a double payment.

use crate::xsd::{self, Schema};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    /// Where the connector takes pain.002 reports (`http://127.0.0.1:9899/pain002`).
    pub report_url: Option<String>,
    pub report_delay_ms: u64,
    /// Every n-th payment the bank receives is rejected (0: none).
    pub reject_every: u32,
}

/// Faults to inject, set with `POST /faults` (fields left out are left as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer the next n files with 500 (taking none of them).
    pub fail_next: u32,
    /// Answer every file 503, as a bank that is down.
    pub down: bool,
    /// Wait this long before each answer.
    pub delay_ms: u64,
    /// Take the next n files but hold the answer this long (`lost_ack_ms`): past the
    /// sender's timeout, the acknowledgement is lost.
    pub lose_acks: u32,
    pub lost_ack_ms: u64,
    /// Take the next n files and break the connection mid-answer: the sender sees a dropped
    /// connection, not knowing the bank has the file.
    pub drop_connections: u32,
    /// Post every report twice.
    pub duplicate_reports: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimState {
    /// `MsgId` -> the bank's reference.
    pub files: BTreeMap<String, String>,
    /// End-to-end id -> how many times it was executed (more than 1 is a double payment).
    pub executed: BTreeMap<String, u32>,
    pub rejected: Vec<String>,
    pub duplicates_answered: u32,
    pub invalid_files: u32,
    pub refused_while_down: u32,
    pub reports_posted: u32,
    /// `MsgId` -> the `traceparent` its file came with (W3C Trace Context), if one.
    #[serde(default)]
    pub traces: BTreeMap<String, String>,
}

struct Bank {
    config: SimConfig,
    faults: Mutex<Faults>,
    state: Mutex<SimState>,
    http: reqwest::Client,
}

/// Serves the simulated bank on `listener` (plain TCP, or [`crate::tls::TlsListener`] for
/// HTTPS with client certificates) until the process ends.
pub async fn serve<L>(listener: L, config: SimConfig) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let bank = Arc::new(Bank {
        config,
        faults: Mutex::default(),
        state: Mutex::default(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
    });
    let app = axum::Router::new()
        .route("/pain001", post(take_file))
        .route("/faults", post(set_faults))
        .route(
            "/state",
            get(|State(bank): State<Arc<Bank>>| async move {
                serde_json::to_string(&*bank.state()).unwrap_or_default()
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(bank);
    axum::serve(listener, app).await
}

impl Bank {
    // A handler that panicked holding a lock leaves counters and switches, nothing half
    // written: the next request goes on with them.
    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn set_faults(State(bank): State<Arc<Bank>>, body: String) -> (StatusCode, String) {
    let Ok(faults) = serde_json::from_str::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "faults are a JSON object".into());
    };
    let mut current = bank.faults();
    let mut merged = serde_json::to_value(&*current).unwrap_or_default();
    if let (Some(merged), Some(new)) = (merged.as_object_mut(), faults.as_object()) {
        for (k, v) in new {
            merged.insert(k.clone(), v.clone());
        }
    }
    if let Ok(faults) = serde_json::from_value(merged) {
        *current = faults;
    }
    (
        StatusCode::OK,
        serde_json::to_string(&*current).unwrap_or_default(),
    )
}

async fn take_file(
    State(bank): State<Arc<Bank>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (delay, failing, lost_ack, dropped) = {
        let mut faults = bank.faults();
        let failing = if faults.down {
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else if faults.fail_next > 0 {
            faults.fail_next -= 1;
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            None
        };
        let lost_ack = (failing.is_none() && faults.lose_acks > 0).then(|| {
            faults.lose_acks -= 1;
            Duration::from_millis(faults.lost_ack_ms)
        });
        let dropped = failing.is_none() && lost_ack.is_none() && faults.drop_connections > 0;
        if dropped {
            faults.drop_connections -= 1;
        }
        (
            Duration::from_millis(faults.delay_ms),
            failing,
            lost_ack,
            dropped,
        )
    };
    tokio::time::sleep(delay).await;
    if let Some(status) = failing {
        bank.state().refused_while_down += 1;
        return (status, "the bank is unavailable").into_response();
    }
    let file = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            xsd::validate(Schema::Pain001V09, &body).map_err(|e| e.join("; "))?;
            quick_xml::de::from_str::<model::Document>(&body).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let file = match file {
        Ok(file) => file.initiation,
        Err(error) => {
            bank.state().invalid_files += 1;
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid pain.001: {error}"),
            )
                .into_response();
        }
    };
    let msg_id = file.grp_hdr.msg_id.clone();
    let (reference, new) = {
        let mut state = bank.state();
        if let Some(traceparent) = traceparent {
            state.traces.insert(msg_id.clone(), traceparent);
        }
        if let Some(reference) = state.files.get(&msg_id).cloned() {
            state.duplicates_answered += 1;
            (reference, false)
        } else {
            let reference = format!("SIM-{:06}", state.files.len() + 1);
            state.files.insert(msg_id.clone(), reference.clone());
            (reference, true)
        }
    };
    if new {
        let mut outcomes = Vec::new();
        {
            let mut state = bank.state();
            for block in &file.pmt_inf {
                for tx in &block.cdt_trf_tx_inf {
                    let id = tx.pmt_id.end_to_end_id.clone();
                    let n = state.executed.values().map(|&c| c as u64).sum::<u64>() + 1;
                    let reject = bank.config.reject_every > 0
                        && n % u64::from(bank.config.reject_every) == 0;
                    if reject {
                        state.rejected.push(id.clone());
                    }
                    *state.executed.entry(id.clone()).or_default() += 1;
                    outcomes.push((block.pmt_inf_id.clone(), id, reject));
                }
            }
        }
        tokio::spawn(report(bank.clone(), msg_id.clone(), outcomes));
    }
    if let Some(hold) = lost_ack {
        tokio::time::sleep(hold).await;
    }
    if dropped {
        // Headers out, then the body fails: the connection is broken mid-answer.
        let broken = futures::stream::once(async {
            Err::<axum::body::Bytes, _>(std::io::Error::other("connection dropped"))
        });
        return axum::response::Response::new(axum::body::Body::from_stream(broken));
    }
    let answer = serde_json::json!({ "reference": reference, "duplicate": !new }).to_string();
    if new {
        (StatusCode::CREATED, answer).into_response()
    } else {
        (StatusCode::CONFLICT, answer).into_response()
    }
}

/// Posts the reports on a file: accepted (or rejected), then settled.
async fn report(bank: Arc<Bank>, msg_id: String, outcomes: Vec<(String, String, bool)>) {
    let Some(url) = bank.config.report_url.clone() else {
        return;
    };
    let delay = Duration::from_millis(bank.config.report_delay_ms);
    for (round, settled) in [(1, false), (2, true)] {
        tokio::time::sleep(delay).await;
        let statuses: Vec<(String, String, &str)> = outcomes
            .iter()
            .filter(|(_, _, rejected)| !(settled && *rejected))
            .map(|(block, id, rejected)| {
                let status = match (rejected, settled) {
                    (true, _) => "RJCT",
                    (false, false) => "ACSP",
                    (false, true) => "ACSC",
                };
                (block.clone(), id.clone(), status)
            })
            .collect();
        if statuses.is_empty() {
            continue;
        }
        let xml = pain002_report(&format!("{msg_id}-R{round}"), &msg_id, &statuses);
        let copies = if bank.faults().duplicate_reports {
            2
        } else {
            1
        };
        for _ in 0..copies {
            post_until_taken(&bank, &url, &xml).await;
        }
    }
}

/// Posts a report until the connector answers it (it may be restarting), for ten minutes.
async fn post_until_taken(bank: &Bank, url: &str, xml: &str) {
    for _ in 0..600 {
        match bank.http.post(url).body(xml.to_owned()).send().await {
            Ok(answer) if answer.status().is_success() => {
                bank.state().reports_posted += 1;
                return;
            }
            Ok(answer) if answer.status().is_client_error() => {
                tracing::error!(status = %answer.status(), "the connector refused a report");
                return;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// A pain.002.001.12 answering file `original` transaction by transaction.
pub fn pain002_report(msg_id: &str, original: &str, statuses: &[(String, String, &str)]) -> String {
    let mut blocks: Vec<model::ReportBlock> = Vec::new();
    for (block, id, status) in statuses {
        let tx = model::ReportTx {
            orgnl_end_to_end_id: id.clone(),
            tx_sts: status.to_string(),
            sts_rsn_inf: (*status == "RJCT").then(|| model::ReportReason {
                rsn: model::ReasonCode { cd: "AC04".into() },
                addtl_inf: "Account closed".into(),
            }),
        };
        match blocks.iter_mut().find(|b| &b.orgnl_pmt_inf_id == block) {
            Some(b) => b.tx_inf_and_sts.push(tx),
            None => blocks.push(model::ReportBlock {
                orgnl_pmt_inf_id: block.clone(),
                tx_inf_and_sts: vec![tx],
            }),
        }
    }
    let document = model::ReportDocument {
        xmlns: Schema::Pain002V12.namespace(),
        report: model::Report {
            grp_hdr: model::ReportHeader {
                msg_id: msg_id.to_owned(),
                cre_dt_tm: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            },
            orgnl_grp_inf_and_sts: model::ReportGroup {
                orgnl_msg_id: original.to_owned(),
                orgnl_msg_nm_id: "pain.001.001.09".into(),
            },
            orgnl_pmt_inf_and_sts: blocks,
        },
    };
    let body = quick_xml::se::to_string_with_root("Document", &document).unwrap_or_default();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}\n")
}

mod model {
    use serde::{Deserialize, Serialize};

    #[derive(Deserialize)]
    pub struct Document {
        #[serde(rename = "CstmrCdtTrfInitn")]
        pub initiation: Initiation,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Initiation {
        pub grp_hdr: Header,
        pub pmt_inf: Vec<Block>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Header {
        pub msg_id: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Block {
        pub pmt_inf_id: String,
        pub cdt_trf_tx_inf: Vec<Transfer>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Transfer {
        pub pmt_id: PaymentId,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct PaymentId {
        pub end_to_end_id: String,
    }

    #[derive(Serialize)]
    pub struct ReportDocument {
        #[serde(rename = "@xmlns")]
        pub xmlns: &'static str,
        #[serde(rename = "CstmrPmtStsRpt")]
        pub report: Report,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Report {
        pub grp_hdr: ReportHeader,
        pub orgnl_grp_inf_and_sts: ReportGroup,
        pub orgnl_pmt_inf_and_sts: Vec<ReportBlock>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReportHeader {
        pub msg_id: String,
        pub cre_dt_tm: String,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReportGroup {
        pub orgnl_msg_id: String,
        pub orgnl_msg_nm_id: String,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReportBlock {
        pub orgnl_pmt_inf_id: String,
        pub tx_inf_and_sts: Vec<ReportTx>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReportTx {
        pub orgnl_end_to_end_id: String,
        pub tx_sts: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sts_rsn_inf: Option<ReportReason>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReportReason {
        pub rsn: ReasonCode,
        pub addtl_inf: String,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ReasonCode {
        pub cd: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pain002::{parse, Answer};

    #[test]
    fn the_simulator_s_reports_are_valid_pain002_the_connector_reads_back() {
        let statuses = vec![
            ("B1".to_string(), "INV-1/1".to_string(), "ACSC"),
            ("B1".to_string(), "INV-2/1".to_string(), "RJCT"),
        ];
        let xml = pain002_report("M1-R2", "M1", &statuses);
        assert_eq!(xsd::validate(Schema::Pain002V12, &xml), Ok(()), "{xml}");
        let report = parse(&xml).unwrap();
        assert_eq!(report.original_msg_id, "M1");
        let file = vec![(
            "B1".to_string(),
            vec!["INV-1/1".to_string(), "INV-2/1".to_string()],
        )];
        assert_eq!(
            report.resolve(&file).unwrap().answers,
            vec![
                ("INV-1/1".into(), Answer::Settled),
                (
                    "INV-2/1".into(),
                    Answer::Rejected("AC04: Account closed".into())
                ),
            ]
        );
    }
}
