//! The `run` configuration file (TOML).

use anyhow::{bail, Context};
use p2p_avro::Codec;
use p2p_processors::Tolerance;
use p2p_state::StateMemory;
use p2p_topologies::spans::SpanExport;
use p2p_topologies::{Clock, Guarantee, KafkaProperties, MatchConfig, RuntimeConfig, Topics};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Prefix of everything the application owns: each topology's consumer group is
    /// `<application_id>-<topology>` (`p2p-match`, `p2p-procurement`).
    #[serde(default = "default_application_id")]
    pub application_id: String,
    /// Where local state (RocksDB) lives.
    pub state_dir: PathBuf,
    /// Confluent-compatible registry, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`. Without
    /// one the pipeline uses its bundled schemas (only sensible for trials).
    pub schema_registry_url: Option<String>,
    /// librdkafka properties, passed through: `bootstrap.servers`, `security.protocol`, ...
    pub kafka: KafkaProperties,
    /// librdkafka properties whose values are read from environment variables at start,
    /// property = variable (`"sasl.password" = "P2P_KAFKA_PASSWORD"`): a credential from a
    /// Kubernetes Secret stays out of the file, which a ConfigMap holds. A variable not set,
    /// or a property set in `[kafka]` too, is refused by name.
    #[serde(default)]
    pub kafka_env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default, rename = "match")]
    pub matching: MatchSection,
    /// Where `/metrics` (Prometheus), `/healthz` and `/readyz` are served.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: std::net::SocketAddr,
    /// This instance among the application's instances, stable across its restarts (a
    /// StatefulSet pod name): its transactional ids are `<application_id>-<topology>-<id>`,
    /// so a restarted instance fences its own zombie and no other. Default: `$HOSTNAME`.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// `exactly_once` (default): one Kafka transaction per batch, with changelogs and restore.
    /// `at_least_once`: no transactions, no changelogs (ADR 0001), for brokers without
    /// transactions.
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// Static group membership (default true): each consumer joins as `group.instance.id =
    /// instance_id`, so a restart within the session timeout (`session.timeout.ms` under
    /// `[kafka]`, 45 s by default) moves no partition. An instance removed for good holds its
    /// partitions until then.
    #[serde(default = "default_true")]
    pub static_membership: bool,
    /// With static membership, whether a stop asked for (SIGTERM, SIGINT) leaves the group
    /// first (default true), so the other instances take the partitions within seconds (a
    /// scale-in). False keeps them for a quick restart until the session times out; a crash
    /// keeps them either way (ADR 0026).
    #[serde(default = "default_true")]
    pub leave_group_on_stop: bool,
    /// Memory for all the process's local state, in MiB: RocksDB's block cache, index and
    /// filter blocks and memtables of every store, in one budget (ADR 0012). Default 256.
    #[serde(default = "default_state_memory_mib")]
    pub state_memory_mib: usize,
    /// Workers per topology, each a consumer of its group with its own producer, store and
    /// share of the partitions, side by side (ADR 0023). Default: 1.
    #[serde(default = "p2p_topologies::config::default_workers")]
    pub workers: usize,
    /// For trials only: the clock timers fire by (payment runs, escalations) runs this far
    /// ahead of (or, negative, behind) the wall clock: `7d`, `36h`, `-90m`. `p2p run
    /// --clock-offset` sets it too. Event times are what records say, untouched.
    #[serde(default, deserialize_with = "clock_offset")]
    pub clock_offset: Clock,
    /// Spans exported over OTLP (ADR 0027); records carry their trace context either way.
    #[serde(default)]
    pub tracing: p2p_topologies::spans::TracingSection,
    /// The budget itself, made once and shared by every topology's store.
    #[serde(skip)]
    state_memory: std::sync::OnceLock<StateMemory>,
    /// The span exporter of `[tracing]`, made once at load and shared by every topology.
    #[serde(skip)]
    pub spans: Option<SpanExport>,
}

fn clock_offset<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Clock, D::Error> {
    let text = String::deserialize(deserializer)?;
    Clock::parse_offset(&text).map_err(serde::de::Error::custom)
}

/// The least state memory a configuration may give: RocksDB flushes its memtables at a
/// quarter of the memtable half of it, and below this flushes would be tiny files.
const MIN_STATE_MEMORY_MIB: usize = 16;

fn default_state_memory_mib() -> usize {
    StateMemory::DEFAULT_BYTES >> 20
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "0".into())
}

fn default_metrics_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 9898))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSection {
    /// Percent past which a deviation holds an invoice, for orgs without tolerance keys in
    /// org-config; also the per-line receipt tolerance. A string: no floats near money.
    pub tolerance_percent: String,
    pub max_batch: usize,
    pub batch_linger_ms: u64,
}

impl Default for MatchSection {
    fn default() -> Self {
        Self {
            tolerance_percent: Tolerance::DEFAULT_PERCENT.to_string(),
            max_batch: 2_000,
            batch_linger_ms: 20,
        }
    }
}

fn default_application_id() -> String {
    "p2p".into()
}

impl PipelineConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (property, variable) in &config.kafka_env {
            if config.kafka.contains_key(property) {
                bail!(
                    "{}: \"{property}\" is under both [kafka] and [kafka_env]: keep one",
                    path.display()
                );
            }
            let Some(value) = std::env::var_os(variable) else {
                bail!(
                    "{}: [kafka_env] reads \"{property}\" from environment variable {variable}, \
                     which is not set",
                    path.display()
                );
            };
            let Ok(value) = value.into_string() else {
                bail!(
                    "{}: environment variable {variable} (for \"{property}\") is not UTF-8",
                    path.display()
                );
            };
            config.kafka.insert(property.clone(), value);
        }
        if !config.kafka.contains_key("bootstrap.servers") {
            bail!("{}: [kafka] needs \"bootstrap.servers\"", path.display());
        }
        if config.workers == 0 {
            bail!("{}: workers is 0, at least 1 is needed", path.display());
        }
        config.spans = config
            .tracing
            .export("p2p-pipeline", &config.instance_id)
            .with_context(|| path.display().to_string())?;
        if config.state_memory_mib < MIN_STATE_MEMORY_MIB {
            bail!(
                "{}: state_memory_mib is {}, at least {MIN_STATE_MEMORY_MIB} is needed",
                path.display(),
                config.state_memory_mib
            );
        }
        Ok(config)
    }

    pub fn codec(&self) -> anyhow::Result<Arc<Codec>> {
        Ok(Arc::new(match &self.schema_registry_url {
            Some(url) => Codec::registry(url)?,
            None => {
                tracing::warn!("no schema_registry_url: using the bundled schemas from avro/");
                Codec::Embedded
            }
        }))
    }

    /// The runtime settings of one topology.
    pub fn runtime_config(&self, topology: &str) -> RuntimeConfig {
        let mut config = RuntimeConfig::new(
            &format!("{}-{topology}", self.application_id),
            self.kafka.clone(),
            self.state_dir.clone(),
        );
        config.max_batch = self.matching.max_batch.max(1);
        config.batch_linger = Duration::from_millis(self.matching.batch_linger_ms);
        config.instance_id = self.instance_id.clone();
        config.clock = self.clock_offset;
        config.workers = self.workers.max(1);
        config.spans = self.spans.clone();
        config.static_membership = self.static_membership;
        config.leave_group_on_stop = self.leave_group_on_stop;
        config.state_memory = self
            .state_memory
            .get_or_init(|| StateMemory::new(self.state_memory_mib << 20))
            .clone();
        config.guarantee = match self.processing_guarantee {
            ProcessingGuarantee::ExactlyOnce => Guarantee::ExactlyOnce,
            ProcessingGuarantee::AtLeastOnce => Guarantee::AtLeastOnce,
        };
        config
    }

    /// Checks in seconds that the cluster answers, takes the credentials, and lets the
    /// principal use `topics` and `groups`, naming the cause if not.
    pub async fn check_cluster(&self, topics: &[&str], groups: &[String]) -> anyhow::Result<()> {
        check_cluster(&self.kafka, topics, groups).await
    }

    /// The consumer groups of the three topologies (their application ids).
    pub fn groups(&self) -> Vec<String> {
        ["match", "procurement", "payment"]
            .map(|topology| self.runtime_config(topology).application_id)
            .to_vec()
    }

    pub fn match_config(&self) -> anyhow::Result<MatchConfig> {
        let percent: Decimal = self
            .matching
            .tolerance_percent
            .parse()
            .context("match.tolerance_percent is not a decimal number")?;
        Ok(MatchConfig {
            runtime: self.runtime_config("match"),
            topics: self.topics.clone(),
            tolerance: Tolerance::percent(percent)?,
        })
    }
}

/// Checks within seconds that the cluster `kafka` points at answers, takes the credentials and
/// lets the principal use `topics` and `groups` (`p2p_topologies::cluster::check`), so a
/// command names what is wrong instead of hanging.
pub async fn check_cluster(
    kafka: &KafkaProperties,
    topics: &[&str],
    groups: &[String],
) -> anyhow::Result<()> {
    let kafka = kafka.clone();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let groups = groups.to_vec();
    tokio::task::spawn_blocking(move || {
        let needs = p2p_topologies::cluster::Needs {
            topics: topics.iter().map(String::as_str).collect(),
            groups,
        };
        p2p_topologies::cluster::check(&kafka, &needs, p2p_topologies::cluster::PATIENCE)
    })
    .await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads_and_names_every_topology_group() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/pipeline.toml");
        let config = PipelineConfig::load(&path).unwrap();
        assert_eq!(config.topics, Topics::default());
        assert_eq!(
            config.match_config().unwrap().runtime.application_id,
            "p2p-match"
        );
        assert_eq!(
            config.runtime_config("procurement").application_id,
            "p2p-procurement"
        );
        assert_eq!(
            config.runtime_config("payment").application_id,
            "p2p-payment"
        );
    }

    fn load(text: &str) -> anyhow::Result<PipelineConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text)?;
        PipelineConfig::load(&path)
    }

    const MINIMAL: &str =
        "state_dir = \"/tmp/p2p\"\n[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9092\"\n";

    #[test]
    fn tracing_exports_spans_from_every_topology_only_to_an_http_collector() {
        let none = load(MINIMAL).unwrap();
        assert!(
            none.runtime_config("match").spans.is_none(),
            "no spans unasked"
        );
        let traced = load(&format!(
            "{MINIMAL}[tracing]\notlp_endpoint = \"http://otel-collector:4318\"\n"
        ))
        .unwrap();
        for topology in ["match", "procurement", "payment"] {
            assert!(
                traced.runtime_config(topology).spans.is_some(),
                "{topology}"
            );
        }
        let wrong = load(&format!(
            "{MINIMAL}[tracing]\notlp_endpoint = \"otel-collector:4317\"\n"
        ))
        .unwrap_err();
        assert!(
            format!("{wrong:#}")
                .contains("otlp_endpoint \"otel-collector:4317\" is not an http(s) URL"),
            "{wrong:#}"
        );
    }

    #[test]
    fn every_topology_gets_the_one_state_memory_budget_the_file_sets() {
        let config = load(&format!("state_memory_mib = 64\n{MINIMAL}")).unwrap();
        let matching = config.match_config().unwrap().runtime.state_memory;
        let procurement = config.runtime_config("procurement").state_memory;
        let payment = config.runtime_config("payment").state_memory;
        assert_eq!(matching.bytes(), 64 << 20);
        assert!(matching.is_shared_with(&procurement));
        assert!(matching.is_shared_with(&payment));
    }

    #[test]
    fn a_credential_comes_from_the_environment_variable_kafka_env_names() {
        // Each test names a variable of its own: tests run side by side in one process.
        std::env::set_var("P2P_TEST_KAFKA_PASSWORD_A", "s3cret");
        let config = load(&format!(
            "{MINIMAL}[kafka_env]\n\"sasl.password\" = \"P2P_TEST_KAFKA_PASSWORD_A\"\n"
        ))
        .unwrap();
        assert_eq!(config.kafka["sasl.password"], "s3cret");
        assert_eq!(config.kafka["bootstrap.servers"], "127.0.0.1:9092");

        let unset = load(&format!(
            "{MINIMAL}[kafka_env]\n\"sasl.password\" = \"P2P_TEST_KAFKA_PASSWORD_UNSET\"\n"
        ))
        .unwrap_err();
        assert!(
            unset
                .to_string()
                .contains("environment variable P2P_TEST_KAFKA_PASSWORD_UNSET, which is not set"),
            "{unset}"
        );

        let both = load(
            "state_dir = \"/tmp/p2p\"\n[kafka]\n\"bootstrap.servers\" = \"h:9092\"\n\
             \"sasl.password\" = \"in-the-file\"\n\
             [kafka_env]\n\"sasl.password\" = \"P2P_TEST_KAFKA_PASSWORD_A\"\n",
        )
        .unwrap_err();
        assert!(
            both.to_string()
                .contains("under both [kafka] and [kafka_env]"),
            "{both}"
        );
    }

    #[test]
    fn without_a_state_memory_setting_the_budget_is_256_mib() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(
            config.runtime_config("match").state_memory.bytes(),
            256 << 20
        );
    }

    #[test]
    fn a_state_memory_below_16_mib_is_refused_by_name() {
        let error = load(&format!("state_memory_mib = 8\n{MINIMAL}")).unwrap_err();
        assert!(
            error.to_string().contains("state_memory_mib is 8"),
            "{error}"
        );
    }
}
