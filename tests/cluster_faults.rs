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
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(args)
        .arg("--config")
        .arg(config)
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
