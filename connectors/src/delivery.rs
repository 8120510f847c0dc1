//! Sending a file to a bank: its configuration (`[[banks]]`), the HTTPS client, what an answer
//! means, and how a bank that fails is retried (exponential backoff with jitter) and spared (a
//! circuit breaker). The decisions are pure (`classify`, `backoff`, `Breaker`); `BankClient`
//! does the I/O.

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, NaiveTime, Utc, Weekday};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One bank the connector delivers to, and the accounts the org pays from there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// The bank's name in logs, metrics and the ledger (`commerzbank`).
    pub name: String,
    /// Where pain.001 files are POSTed (`https://ebics.example-bank.com/pain001`).
    pub endpoint: String,
    /// PEM client certificate (chain) for mutual TLS, with its PKCS#8 PEM key.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// PEM CA certificate the bank's server certificate is checked against, besides the
    /// system's roots (a bank's test environment, the simulator).
    pub ca_certificate: Option<PathBuf>,
    /// Name of the environment variable holding the bearer token the bank issued, if it
    /// wants one (never the token itself in a file).
    pub auth_token_env: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long one send may take, answer included; past it the answer is lost, and the
    /// same file is sent again.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The bank's daily cut-off (UTC, `HH:MM`): a run for today delivered after it is
    /// executed the next business day.
    pub cut_off: Option<NaiveTime>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The accounts paid from at this bank: a run goes to the bank of its debtor account.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// For trials (the simulated bank): runs from accounts listed at no bank come here too,
    /// their holder named after the org. Never for a real bank: a run would go to a bank
    /// that does not hold its account.
    #[serde(default)]
    pub takes_unlisted_accounts: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub iban: String,
    /// The account holder, as the bank knows it: the file's debtor.
    pub holder: String,
    /// The bank's BIC, if the file is to name it.
    pub bic: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub first_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            first_backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed sends that open the breaker.
    pub failures: u32,
    /// How long it stays open before one trial send (half-open).
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_ms: 30_000,
        }
    }
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

impl BankConfig {
    /// A bank at `endpoint` holding `accounts`, the rest as a config file leaving it out
    /// would have it: no client certificate, no token, no cut-off, default timeouts, retries
    /// and breaker.
    pub fn new(name: &str, endpoint: &str, accounts: Vec<AccountConfig>) -> Self {
        Self {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            client_certificate: None,
            client_key: None,
            ca_certificate: None,
            auth_token_env: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            cut_off: None,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            accounts,
            takes_unlisted_accounts: false,
        }
    }

    pub fn account(&self, iban: &str) -> Option<&AccountConfig> {
        use crate::bank_ids::electronic_form;
        let wanted = electronic_form(iban);
        self.accounts
            .iter()
            .find(|a| electronic_form(&a.iban) == wanted)
    }
}

/// The execution date a run for `requested` gets when delivered at `now` to a bank with
/// `cut_off`: the requested date if it is a business day still open; else the next one.
/// `None` if it stays; else the new date and why.
pub fn execution_date(
    requested: NaiveDate,
    now: DateTime<Utc>,
    cut_off: Option<NaiveTime>,
) -> Option<(NaiveDate, String)> {
    let today = now.date_naive();
    let past_cut_off = cut_off.is_some_and(|c| now.time() >= c);
    let mut date = requested;
    let mut why = None;
    if date < today || (date == today && past_cut_off) {
        date = if past_cut_off {
            today + Days::days(1)
        } else {
            today
        };
        why = Some(match cut_off {
            Some(c) if past_cut_off => format!("delivered after the bank's cut-off {c} UTC"),
            _ => "delivered after its execution date".to_owned(),
        });
    }
    while matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
        date += Days::days(1);
        why.get_or_insert_with(|| format!("{requested} is not a business day"));
    }
    why.map(|why| (date, why))
}

/// What a bank's answer to a send means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bank has the file: taken now, or (409, or a body saying so) a duplicate of one
    /// it took before, which is the same to us.
    Acknowledged { bank_reference: Option<String> },
    /// A business answer (4xx): the file is refused; sending it again changes nothing.
    Rejected { reason: String },
    /// Worth another try: a timeout, a refused or dropped connection, 5xx, 408, 429.
    Transient { reason: String },
}

/// The meaning of an HTTP answer with `status` and `body`. The reference is the body's
/// `reference` (JSON) if it has one.
pub fn classify(status: u16, body: &str) -> Outcome {
    let reference = || {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("reference")?.as_str().map(str::to_owned))
    };
    match status {
        200..=299 | 409 => Outcome::Acknowledged {
            bank_reference: reference(),
        },
        408 | 429 | 500..=599 => Outcome::Transient {
            reason: format!("HTTP {status}: {}", excerpt(body)),
        },
        _ => Outcome::Rejected {
            reason: format!("HTTP {status}: {}", excerpt(body)),
        },
    }
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "no body".into();
    }
    let mut text: String = body.chars().take(500).collect();
    if text.len() < body.len() {
        text.push('…');
    }
    text
}

/// The wait before retry number `attempt` (0 the first): doubling from `first` up to `max`,
/// then "equal jitter" (half fixed, half random by `jitter` in [0, 1)), so banks coming back
/// are not hit by every sender at once.
pub fn backoff(attempt: u32, retry: &RetryConfig, jitter: f64) -> Duration {
    let full = retry
        .first_backoff_ms
        .saturating_mul(1u64 << attempt.min(30))
        .min(retry.max_backoff_ms);
    let half = full / 2;
    Duration::from_millis(half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// A bank's circuit breaker: closed (sending), open (not sending, for `open_ms`), half-open
/// (one trial send: success closes it, failure opens it again).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            failures: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a file be sent at `now`? `Err(wait)` while open.
    pub fn permit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Open { until } if now < until => Err(until - now),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Closed | BreakerState::HalfOpen => Ok(()),
        }
    }

    /// The bank answered (whatever it said: a rejection is an answer).
    pub fn answered(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
    }

    /// A send failed transiently at `now`.
    pub fn failed(&mut self, now: Instant) {
        self.failures += 1;
        if self.state == BreakerState::HalfOpen || self.failures >= self.config.failures.max(1) {
            self.state = BreakerState::Open {
                until: now + Duration::from_millis(self.config.open_ms),
            };
        }
    }
}

/// Why a bank's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BankClientError {
    #[error("bank {bank}: reading {path}: {source}")]
    Read {
        bank: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bank {bank}: {what}: {source}")]
    Tls {
        bank: String,
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("bank {bank}: client_certificate and client_key go together")]
    HalfIdentity { bank: String },
    #[error("bank {bank}: environment variable {var} (auth_token_env) is not set")]
    NoToken { bank: String, var: String },
}

/// The HTTPS client of one bank.
#[derive(Clone)]
pub struct BankClient {
    endpoint: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl BankClient {
    pub fn new(bank: &BankConfig) -> Result<Self, BankClientError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| BankClientError::Read {
                bank: bank.name.clone(),
                path: path.clone(),
                source,
            })
        };
        let tls = |what, source| BankClientError::Tls {
            bank: bank.name.clone(),
            what,
            source,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(bank.connect_timeout_ms))
            .timeout(Duration::from_millis(bank.request_timeout_ms));
        if let Some(ca) = &bank.ca_certificate {
            let certificate =
                reqwest::Certificate::from_pem(&read(ca)?).map_err(|e| tls("ca_certificate", e))?;
            builder = builder.add_root_certificate(certificate);
        }
        match (&bank.client_certificate, &bank.client_key) {
            (Some(cert), Some(key)) => {
                let identity = reqwest::Identity::from_pkcs8_pem(&read(cert)?, &read(key)?)
                    .map_err(|e| tls("client certificate", e))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(BankClientError::HalfIdentity {
                    bank: bank.name.clone(),
                })
            }
        }
        let token = match &bank.auth_token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| BankClientError::NoToken {
                bank: bank.name.clone(),
                var: var.clone(),
            })?),
            None => None,
        };
        Ok(Self {
            endpoint: bank.endpoint.clone(),
            token,
            http: builder.build().map_err(|e| tls("building the client", e))?,
        })
    }

    /// POSTs `file` once, with `msg_id` as its idempotency key and the run's `traceparent`
    /// if it has one (W3C Trace Context over HTTP), and says what came of it.
    pub async fn send(&self, msg_id: &str, file: &str, traceparent: Option<&str>) -> Outcome {
        let mut request = self
            .http
            .post(&self.endpoint)
            .header("Content-Type", "application/xml")
            .header("Idempotency-Key", msg_id)
            .body(file.to_owned());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(body) => classify(status, &body),
                    // The answer was cut off: whether the bank has the file is unknown.
                    Err(e) => Outcome::Transient {
                        reason: format!("HTTP {status}, answer lost: {e}"),
                    },
                }
            }
            Err(e) => Outcome::Transient {
                reason: if e.is_timeout() {
                    format!("no answer within the timeout: {e}")
                } else if e.is_connect() {
                    format!("cannot connect: {e}")
                } else {
                    format!("{e}")
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_mean_taken_refused_or_try_again() {
        assert_eq!(
            classify(201, r#"{"reference":"SIM-7"}"#),
            Outcome::Acknowledged {
                bank_reference: Some("SIM-7".into())
            }
        );
        assert_eq!(
            classify(409, r#"{"reference":"SIM-7","duplicate":true}"#),
            Outcome::Acknowledged {
                bank_reference: Some("SIM-7".into())
            },
            "the bank has it already: a resend of ours"
        );
        assert_eq!(
            classify(200, "OK"),
            Outcome::Acknowledged {
                bank_reference: None
            }
        );
        assert!(
            matches!(classify(400, "CtrlSum wrong"), Outcome::Rejected { reason } if reason == "HTTP 400: CtrlSum wrong")
        );
        assert!(
            matches!(classify(422, ""), Outcome::Rejected { reason } if reason == "HTTP 422: no body")
        );
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status, "x"), Outcome::Transient { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_with_at_most_half_of_it_random() {
        let retry = RetryConfig {
            first_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        assert_eq!(backoff(0, &retry, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, &retry, 0.999), Duration::from_millis(99));
        assert_eq!(backoff(3, &retry, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(4, &retry, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(60, &retry, 1.0), Duration::from_millis(1_000));
    }

    #[test]
    fn the_breaker_opens_after_failures_tries_once_half_open_and_closes_on_an_answer() {
        let mut breaker = Breaker::new(BreakerConfig {
            failures: 3,
            open_ms: 1_000,
        });
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.permit(t0), Ok(()));
            breaker.failed(t0);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failed(t0);
        assert_eq!(
            breaker.permit(t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        assert_eq!(breaker.permit(t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.failed(t0 + Duration::from_secs(1));
        assert!(
            matches!(breaker.state(), BreakerState::Open { .. }),
            "one failed trial opens it again"
        );
        assert_eq!(breaker.permit(t0 + Duration::from_secs(2)), Ok(()));
        breaker.answered();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn runs_past_the_cut_off_or_on_a_weekend_go_on_the_next_business_day() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let at = |d, h, m| day(d).and_hms_opt(h, m, 0).unwrap().and_utc();
        let cut_off = NaiveTime::from_hms_opt(15, 0, 0);
        // Friday 4 December 2026.
        assert_eq!(execution_date(day(4), at(4, 14, 59), cut_off), None);
        assert_eq!(
            execution_date(day(4), at(4, 15, 0), cut_off),
            Some((
                day(7),
                "delivered after the bank's cut-off 15:00:00 UTC".into()
            )),
            "Friday after the cut-off: Monday"
        );
        assert_eq!(
            execution_date(day(5), at(4, 9, 0), cut_off),
            Some((day(7), "2026-12-05 is not a business day".into()))
        );
        assert_eq!(
            execution_date(day(1), at(3, 9, 0), cut_off),
            Some((day(3), "delivered after its execution date".into()))
        );
        assert_eq!(execution_date(day(8), at(4, 18, 0), cut_off), None);
    }
}
