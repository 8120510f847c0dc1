//! `p2p produce` on the real broker and registry: the load generator as a plain producer, at a
//! fixed rate, into the topics of a pipeline's configuration, which decides every invoice as
//! the generator planted it.

mod common;

use common::{kafka, registry_codec, services, wait_for, Pipeline, TestTopics};
use p2p_loadtest::audit::audit;
use p2p_loadtest::bench::recent;
use p2p_loadtest::{GeneratorConfig, Scenario};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_feeds_a_configured_pipeline_the_stream_it_planted_at_a_fixed_rate() {
    let topics = TestTopics::create("produce", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = toml::Table::new();
    config.insert("state_dir".into(), dir.path().display().to_string().into());
    config.insert(
        "schema_registry_url".into(),
        services().registry_url.clone().into(),
    );
    config.insert("kafka".into(), toml::Value::try_from(kafka()).unwrap());
    config.insert("topics".into(), toml::Value::try_from(&*topics).unwrap());
    let config_path = dir.path().join("pipeline.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["produce", "--config"])
        .arg(&config_path)
        .args([
            "--orgs",
            "3",
            "--pos-per-org",
            "10",
            "--skew",
            "1",
            "--seed",
            "5",
        ])
        .args(["--rate", "300", "--credit-memo-pct", "20"])
        .output()
        .expect("p2p produce runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "p2p produce failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The same stream, generated again from the same arguments: its plan is the check.
    let scenario = Scenario::generate(&recent(&GeneratorConfig {
        seed: 5,
        orgs: 3,
        pos_per_org: 10,
        org_size_skew: 1.0,
        credit_memo_pct: 20,
        ..GeneratorConfig::default()
    }));
    assert!(
        stdout.contains(&format!("produced {} records", scenario.records.len())),
        "{stdout}"
    );
    assert!(scenario.credit_memos > 0, "the stream has credit memos");

    let codec = registry_codec();
    let pipeline = Pipeline::start(&topics, codec.clone());
    // Held invoices released later are first published as exceptions: only the plan tells
    // when every invoice has its final outcome.
    let observed = wait_for(&topics, &codec, "every invoice as planted", |o| {
        audit(&scenario.planted, o).passed() && o.dead_letters.len() == 1
    })
    .await;
    pipeline.stop().await;

    let report = audit(&scenario.planted, &observed);
    assert!(report.matched > 0 && report.exceptions > 0 && report.pending > 0);
}
