//! A misconfigured cluster: every command fails within seconds, exits non-zero and names the
//! cause, instead of hanging (`produce`, `admin create-topics`) or naming a transaction
//! timeout under hundreds of lines of librdkafka's errors (`run`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command still running after this has hung: the test fails (this bounds a hang; it does
/// not measure speed).
const HUNG: Duration = Duration::from_secs(120);

/// Runs `p2p <args>`; its exit status and everything it printed.
fn p2p(args: &[&str], config: &Path) -> (std::process::ExitStatus, String) {
    p2p_with_env(args, config, &[])
}

/// Runs `p2p <args>` with environment variables `env` set.
fn p2p_with_env(
    args: &[&str],
    config: &Path,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("p2p starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HUNG {
            let _ = child.kill();
            panic!("`p2p {}` hung", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut printed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    (status, printed)
}

fn config_with(dir: &Path, kafka: &[(&str, &str)]) -> std::path::PathBuf {
    let mut config = toml::Table::new();
    config.insert("state_dir".into(), dir.display().to_string().into());
    let mut properties = toml::Table::new();
    for (key, value) in kafka {
        properties.insert((*key).into(), (*value).into());
    }
    config.insert("kafka".into(), properties.into());
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

const COMMANDS: [&[&str]; 4] = [
    &["admin", "create-topics"],
    &["produce"],
    &["run"],
    &["dlq", "inspect", "--topic", "po-events.dlq"],
];

#[test]
fn every_command_names_a_broker_nobody_listens_for_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens, every connection is refused.
    let config = config_with(dir.path(), &[("bootstrap.servers", "127.0.0.1:1")]);
    for args in COMMANDS {
        let (status, printed) = p2p(args, &config);
        assert!(!status.success(), "`p2p {}` succeeded", args.join(" "));
        assert!(
            printed.contains("no Kafka broker answered at 127.0.0.1:1")
                && printed.contains("Connection refused"),
            "`p2p {}` printed: {printed}",
            args.join(" ")
        );
        assert!(
            !printed.contains("transaction"),
            "`p2p {}` blames transactions: {printed}",
            args.join(" ")
        );
        assert!(
            printed.lines().count() < 10,
            "`p2p {}` buries the cause: {printed}",
            args.join(" ")
        );
    }
}

#[test]
fn a_bootstrap_address_that_does_not_resolve_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        &[("bootstrap.servers", "kafka.p2p-test.invalid:9092")],
    );
    let (status, printed) = p2p(&["produce"], &config);
    assert!(!status.success());
    assert!(
        printed.contains("kafka.p2p-test.invalid:9092") && printed.contains("resolve"),
        "{printed}"
    );
}

/// The secured broker of `deploy/local/kafka.sh secure-start` (SASL_SSL with SCRAM-SHA-512 on
/// 127.0.0.1:9094, a CA made by the script, ACLs enforced), started once: its CA's PEM.
fn secure_broker() -> &'static Path {
    static CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let status = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/local/kafka.sh"
            ))
            .arg("secure-start")
            .status()
            .expect("kafka.sh runs");
        assert!(status.success(), "the secured broker starts");
        let cache = std::env::var("P2P_CACHE_DIR")
            .unwrap_or_else(|_| format!("{}/.cache/p2p-pipeline", std::env::var("HOME").unwrap()));
        Path::new(&cache).join("kafka-data-secure/tls/ca.pem")
    })
}

/// Grants ACLs on the secured broker (`PRINCIPAL:RESOURCE_TYPE:PATTERN_TYPE:NAME:OPERATION`).
fn grant(acls: &[String]) {
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/kafka.sh"
        ))
        .arg("secure-grant")
        .args(acls)
        .status()
        .expect("kafka.sh runs");
    assert!(status.success(), "ACLs granted: {acls:?}");
}

/// A configuration for the secured broker as SCRAM user p2p with `password`.
fn secure_config(dir: &Path, password: &str) -> std::path::PathBuf {
    let ca = secure_broker().display().to_string();
    config_with(
        dir,
        &[
            ("bootstrap.servers", "127.0.0.1:9094"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "p2p"),
            ("sasl.password", password),
            ("ssl.ca.location", &ca),
        ],
    )
}

#[test]
fn a_wrong_password_is_named_as_an_authentication_failure_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = secure_config(dir.path(), "not-the-password");
    for args in COMMANDS {
        let (status, printed) = p2p(args, &config);
        assert!(!status.success(), "`p2p {}` succeeded", args.join(" "));
        assert!(
            printed.contains("authentication failed") && printed.contains("invalid credentials"),
            "`p2p {}` printed: {printed}",
            args.join(" ")
        );
    }
}

#[test]
fn a_principal_without_rights_on_an_input_topic_or_the_group_is_told_which() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("p2p-acl-{}-", uuid::Uuid::new_v4().simple());
    // Every topic under the prefix but supplier-master, which lives elsewhere.
    let elsewhere = format!(
        "p2p-acl-other-{}-supplier-master",
        uuid::Uuid::new_v4().simple()
    );
    let mut topics = toml::Value::try_from(p2p_topologies::Topics::default()).unwrap();
    for (_, name) in topics.as_table_mut().unwrap().iter_mut() {
        *name = format!("{prefix}{}", name.as_str().unwrap()).into();
    }
    topics["supplier_master"] = elsewhere.clone().into();
    let with_topics = |path: &Path, application_id: &str| {
        let mut config: toml::Table =
            toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        config.insert("topics".into(), topics.clone());
        config.insert("application_id".into(), application_id.into());
        std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
    };
    let application = format!("{prefix}app");
    // Created through the setup listener, whose anonymous principal is a super user.
    let setup_dir = tempfile::tempdir().unwrap();
    let setup = config_with(setup_dir.path(), &[("bootstrap.servers", "127.0.0.1:9095")]);
    secure_broker();
    with_topics(&setup, &application);
    let (status, printed) = p2p(&["admin", "create-topics"], &setup);
    assert!(status.success(), "{printed}");

    let config = secure_config(dir.path(), "p2p-secret");
    with_topics(&config, &application);
    grant(&[format!("User:p2p:TOPIC:PREFIXED:{prefix}:ALL")]);
    let (status, printed) = p2p(&["run"], &config);
    assert!(!status.success());
    assert!(
        printed.contains(&format!("not authorised on topic {elsewhere}")),
        "{printed}"
    );

    grant(&[format!("User:p2p:TOPIC:LITERAL:{elsewhere}:ALL")]);
    let (status, printed) = p2p(&["run"], &config);
    assert!(!status.success());
    assert!(
        printed.contains(&format!(
            "not authorised on consumer group {application}-match"
        )),
        "{printed}"
    );
    assert!(!printed.contains("do not exist"), "{printed}");
}

/// `p2p admin check-config` reads a configuration as `run` does, with no broker: a password
/// from the environment (`[kafka_env]`, as a Kubernetes Secret gives it) is accepted when set,
/// and refused by the variable's name when not, before anything connects.
#[test]
fn a_configuration_is_checked_offline_with_its_credentials_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        &[("bootstrap.servers", "kafka.p2p-test.invalid:9093")],
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka_env]\n\"sasl.password\" = \"P2P_TEST_CHECK_CONFIG_PASSWORD\"\n");
    std::fs::write(&config, text).unwrap();

    let (status, printed) = p2p(&["admin", "check-config"], &config);
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("environment variable P2P_TEST_CHECK_CONFIG_PASSWORD, which is not set"),
        "{printed}"
    );

    let (status, printed) = p2p_with_env(
        &["admin", "check-config"],
        &config,
        &[("P2P_TEST_CHECK_CONFIG_PASSWORD", "s3cret")],
    );
    assert!(status.success(), "{printed}");
    assert!(printed.contains("configuration accepted"), "{printed}");
    assert!(printed.contains("[\"sasl.password\"]"), "{printed}");
    assert!(
        !printed.contains("s3cret"),
        "the password is never printed: {printed}"
    );
    assert!(printed.contains("p2p-match"), "{printed}");
}
