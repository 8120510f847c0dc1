//! `p2p admin grow-partitions` on the real broker (issue 25, ADR 0025): after the match has
//! decided a generated stream on 4 partitions, `--dry-run` plans growing to 8 and to 12 from
//! the match's changelog (every org whose partition changes moves, no other), shows what each
//! topology's growth log records, shrinking is refused, and the growth itself is refused,
//! changing nothing, until the runtimes move state.

mod common;

use common::{kafka, pipeline_toml, registry_codec, wait_for, Pipeline, TestTopics};
use p2p_loadtest::audit::audit;
use p2p_loadtest::bench::recent;
use p2p_loadtest::generator::Payload;
use p2p_loadtest::produce::{erp_producer, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_state::murmur2::partition_for;
use p2p_topologies::growth::{append_log, ensure_log, GrowthEntry};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn grow(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["admin", "grow-partitions", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("p2p admin grow-partitions runs")
}

/// The orgs of `orgs` whose partition differs between `from` and `to` partitions.
fn moving(orgs: &BTreeSet<String>, from: u32, to: u32) -> usize {
    orgs.iter()
        .filter(|o| partition_for(o.as_bytes(), from) != partition_for(o.as_bytes(), to))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_the_orgs_that_move_and_shrinking_or_growing_for_real_is_refused() {
    let topics = TestTopics::create("grow", 4).await;
    let app = format!("p2p-grow-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let config_path = pipeline_toml(dir.path(), &topics, Some(&app));

    let scenario = Scenario::generate(&recent(&GeneratorConfig {
        seed: 25,
        orgs: 16,
        pos_per_org: 4,
        org_size_skew: 0.0,
        ..GeneratorConfig::default()
    }));
    let orgs: BTreeSet<String> = scenario
        .records
        .iter()
        .filter(|r| matches!(r.payload, Payload::Document(..)))
        .map(|r| r.key.clone())
        .collect();
    let codec = registry_codec();
    produce_scenario(&erp_producer(&kafka()).unwrap(), &codec, &topics, &scenario)
        .await
        .expect("the stream is produced");
    // The match as the configuration's pipeline runs it: its changelog is the one planned.
    let pipeline = Pipeline::start_as(&format!("{app}-match"), &topics, codec.clone());
    wait_for(&topics, &codec, "every invoice as planted", |o| {
        audit(&scenario.planted, o).passed()
    })
    .await;
    pipeline.stop().await;

    let changelog = format!("{app}-match-match-changelog");
    for (to, header) in [
        (
            8,
            "growing from 4 to 8 partitions: 512 of the 1024 key groups move whole",
        ),
        (
            12,
            "growing from 4 to 12 partitions: 12 does not divide 1024",
        ),
    ] {
        let output = grow(&config_path, &["--to", &to.to_string(), "--dry-run"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(header), "{stdout}");
        let movers = moving(&orgs, 4, to);
        assert!(
            movers > 0 && movers < orgs.len(),
            "{movers} of {} orgs",
            orgs.len()
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{changelog}:")))
            .unwrap_or_else(|| panic!("no plan of {changelog}: {stdout}"));
        assert!(
            line.contains(&format!("keys of {movers} owners move")),
            "{movers} orgs change partition from 4 to {to}: {line}"
        );
        // Procurement and payment never ran: no changelog, nothing to move.
        assert!(
            stdout.contains(&format!(
                "{app}-procurement-procurement-changelog: not there"
            )),
            "{stdout}"
        );
    }

    // The growth log: none yet; then what a growth under way would have written to it.
    let first = grow(&config_path, &["--to", "8", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("match: no growth recorded"), "{stdout}");
    let log = format!("{app}-match-growth");
    ensure_log(&kafka(), &log, 1)
        .await
        .expect("growth log created");
    append_log(
        &kafka(),
        &log,
        "match",
        &[
            GrowthEntry::Grown { from: 4, to: 8 },
            GrowthEntry::MovedOut {
                partition: 1,
                to: 8,
            },
            GrowthEntry::Arrived {
                partition: 5,
                source: 1,
                to: 8,
            },
        ],
    )
    .expect("entries appended");
    let under_way = grow(&config_path, &["--to", "8", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&under_way.stdout);
    assert!(
        stdout.contains(
            "match: growth 4 -> 8 recorded; moved out: 1; waiting for state: 4 (from 0); \
             6 (from 2); 7 (from 3)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("procurement: no growth recorded"),
        "{stdout}"
    );

    let shrink = grow(&config_path, &["--to", "2", "--dry-run"]);
    assert!(!shrink.status.success());
    let stderr = String::from_utf8_lossy(&shrink.stderr);
    assert!(stderr.contains("shrinking is refused"), "{stderr}");

    let real = grow(&config_path, &["--to", "8"]);
    assert!(!real.status.success());
    let stderr = String::from_utf8_lossy(&real.stderr);
    assert!(stderr.contains("planned only"), "{stderr}");
    // Nothing grew.
    let again = grow(&config_path, &["--to", "8", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("growing from 4 to 8"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
