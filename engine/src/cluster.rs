//! Before a command does anything: can the cluster be reached, does it take our credentials,
//! may we use the topics and the consumer group we need. Each answer comes in seconds, naming
//! the cause, instead of a transaction timeout 30 s later under librdkafka's retries (or a
//! producer waiting out its 5-minute delivery timeout on a broker that will never answer).

use crate::config::KafkaProperties;
use crate::kafka::client_config;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the cluster has to answer at all.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error(
        "no Kafka broker answered at {bootstrap} within {seconds} s (last: {cause}); check \
         bootstrap.servers, that the brokers run, and that this host may reach them"
    )]
    Unreachable {
        bootstrap: String,
        seconds: u64,
        cause: String,
    },
    #[error(
        "authentication failed: the brokers at {bootstrap} refused the credentials in [kafka] \
         ({cause}); check sasl.mechanisms, sasl.username and sasl.password"
    )]
    AuthenticationFailed { bootstrap: String, cause: String },
    #[error(
        "TLS with the brokers at {bootstrap} failed ({cause}); check security.protocol and \
         ssl.ca.location"
    )]
    Tls { bootstrap: String, cause: String },
    #[error(
        "not authorised on topic {topic}: the principal in [kafka] lacks DESCRIBE (and READ or \
         WRITE) on it; grant it, or a prefixed ACL on the pipeline's topics"
    )]
    TopicNotAuthorised { topic: String },
    #[error(
        "not authorised on consumer group {group}: the principal in [kafka] lacks READ on it; \
         a prefixed ACL on the application id covers every group the pipeline uses"
    )]
    GroupNotAuthorised { group: String },
    #[error("asking the cluster about {what}: {source}")]
    Kafka { what: String, source: KafkaError },
}

/// Remembers what librdkafka reports while a check runs (it reports connection and
/// authentication failures only to this callback; the request itself just times out).
#[derive(Default)]
struct Heard {
    errors: Mutex<Vec<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Heard {
    /// librdkafka's own log lines say what the error below says, once per retry: kept at debug.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, log_message, "cluster check: librdkafka logs");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "cluster check: librdkafka reports");
        if let Some(code) = error.rdkafka_error_code() {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            errors.push((code, reason.to_owned()));
        }
    }
}

impl ConsumerContext for Heard {}

impl Heard {
    /// The cause that settles it: an authentication or TLS failure (no retry will mend it).
    fn settled(&self, bootstrap: &str) -> Option<ClusterError> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.iter().find_map(|(code, reason)| match code {
            RDKafkaErrorCode::Authentication => Some(ClusterError::AuthenticationFailed {
                bootstrap: bootstrap.to_owned(),
                cause: reason.clone(),
            }),
            RDKafkaErrorCode::SSL => Some(ClusterError::Tls {
                bootstrap: bootstrap.to_owned(),
                cause: reason.clone(),
            }),
            _ => None,
        })
    }

    /// The last failure heard, a broker's own ("Connect to ... failed: Connection refused")
    /// before the summary "1/1 brokers are down".
    fn last(&self) -> Option<String> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors
            .iter()
            .rev()
            .find(|(code, _)| *code != RDKafkaErrorCode::AllBrokersDown)
            .or(errors.last())
            .map(|(_, reason)| reason.clone())
    }
}

/// What a command needs of the cluster.
#[derive(Debug, Default, Clone)]
pub struct Needs<'a> {
    /// Topics it reads or writes: each must be visible to the principal (a topic that does not
    /// exist is no error here: creating it is someone else's step).
    pub topics: Vec<&'a str>,
    /// Consumer groups it commits offsets under.
    pub groups: Vec<String>,
}

/// Checks within `patience` that the cluster answers, takes the credentials, and lets the
/// principal use what `needs` names.
pub fn check(
    kafka: &KafkaProperties,
    needs: &Needs<'_>,
    patience: Duration,
) -> Result<(), ClusterError> {
    let bootstrap = kafka
        .get("bootstrap.servers")
        .cloned()
        .unwrap_or_else(|| "(no bootstrap.servers)".into());
    let kafka_error = |what: &str| {
        let what = what.to_owned();
        move |source| ClusterError::Kafka { what, source }
    };
    let consumer: BaseConsumer<Heard> = client_config(kafka)
        .set("enable.auto.commit", "false")
        .create_with_context(Heard::default())
        .map_err(kafka_error("the client's configuration"))?;
    let started = Instant::now();
    // Asked again every second: a refused connection is reported at once, an authentication
    // failure once the handshake is through, and either settles it.
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => break,
            Err(error) => {
                // Serves librdkafka's queued events: its error reports reach `Heard` here.
                let _ = consumer.poll(Duration::from_millis(100));
                if let Some(settled) = consumer.context().settled(&bootstrap) {
                    return Err(settled);
                }
                if started.elapsed() >= patience {
                    return Err(ClusterError::Unreachable {
                        bootstrap,
                        seconds: patience.as_secs(),
                        cause: consumer.context().last().unwrap_or(error.to_string()),
                    });
                }
            }
        }
    }
    for topic in &needs.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), patience)
            .map_err(kafka_error(&format!("topic {topic}")))?;
        for t in metadata.topics() {
            if t.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
                return Err(ClusterError::TopicNotAuthorised {
                    topic: (*topic).to_owned(),
                });
            }
        }
    }
    for group in &needs.groups {
        check_group(kafka, group, needs.topics.first().copied(), patience)?;
    }
    Ok(())
}

/// Asks `group`'s committed offset of one partition: the broker answers that the principal may
/// not read the group, or an offset (or none).
fn check_group(
    kafka: &KafkaProperties,
    group: &str,
    topic: Option<&str>,
    patience: Duration,
) -> Result<(), ClusterError> {
    let Some(topic) = topic else {
        return Ok(());
    };
    let consumer: BaseConsumer<Heard> = client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(Heard::default())
        .map_err(|source| ClusterError::Kafka {
            what: format!("group {group}"),
            source,
        })?;
    let mut partition = TopicPartitionList::new();
    partition
        .add_partition_offset(topic, 0, Offset::Invalid)
        .map_err(|source| ClusterError::Kafka {
            what: format!("group {group}"),
            source,
        })?;
    let group_refused =
        |error: Option<RDKafkaErrorCode>| error == Some(RDKafkaErrorCode::GroupAuthorizationFailed);
    let refused = match consumer.committed_offsets(partition, patience) {
        Err(error) => {
            // Refused at the coordinator's lookup, the request only times out: what the
            // broker said comes to the error callback.
            let _ = consumer.poll(Duration::from_millis(100));
            let heard = consumer
                .context()
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            group_refused(error.rdkafka_error_code())
                || heard.iter().any(|(code, _)| group_refused(Some(*code)))
        }
        Ok(list) => list
            .elements()
            .iter()
            .any(|e| group_refused(e.error().err().and_then(|e| e.rdkafka_error_code()))),
    };
    if refused {
        return Err(ClusterError::GroupNotAuthorised {
            group: group.to_owned(),
        });
    }
    // Otherwise the topic may not exist yet, or the coordinator still be loading: not this
    // check's to judge (the runtime says what is missing, and waits for what loads).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_nobody_listens_for_is_unreachable_named_with_its_address() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let kafka: KafkaProperties = [("bootstrap.servers".to_owned(), "127.0.0.1:1".to_owned())]
            .into_iter()
            .collect();
        let error = check(&kafka, &Needs::default(), Duration::from_secs(3)).unwrap_err();
        match &error {
            ClusterError::Unreachable {
                bootstrap, seconds, ..
            } => {
                assert_eq!((bootstrap.as_str(), *seconds), ("127.0.0.1:1", 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("check bootstrap.servers"));
    }
}
