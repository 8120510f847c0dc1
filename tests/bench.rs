//! The benchmark harness on the real broker, at a toy scale: every phase runs (scale and grow
//! included), every pipeline run passes its audit, and the report says what it measured. Nothing here judges speed (the
//! report does, as ratios, never a test).

mod common;

use common::{kafka, registry_codec, services};
use p2p_loadtest::bench::{run, BenchConfig, Phases};
use p2p_loadtest::GeneratorConfig;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_run_measures_every_phase_audits_them_and_writes_its_report() {
    services();
    let out = tempfile::tempdir().unwrap();
    let config = BenchConfig {
        kafka: kafka(),
        codec: registry_codec(),
        generator: GeneratorConfig {
            orgs: 3,
            pos_per_org: 8,
            org_size_skew: 1.0,
            ..GeneratorConfig::default()
        },
        partitions: 2,
        max_batch: 500,
        batch_linger: Duration::from_millis(20),
        workers: 2,
        rate: Some(200.0),
        open_pos: 3_000,
        phases: Phases::ALL,
        out_dir: out.path().to_path_buf(),
        limit: Duration::from_secs(120),
        warm_up: true,
        progress: false,
        command: "p2p bench (test)".into(),
    };
    let results = run(config)
        .await
        .expect("every phase runs and passes its audit");

    assert_eq!(
        results.audited,
        vec![
            "warm-up",
            "exactly-once",
            "at-least-once",
            "latency",
            "scale",
            "grow",
            "open-pos"
        ]
    );
    let stream = results.stream.records;
    for run in [
        &results.baseline,
        &results.exactly_once,
        &results.at_least_once,
    ] {
        let run = run.as_ref().expect("the phase ran");
        assert_eq!(run.records, stream);
        assert!(run.transactions > 0, "it committed its work");
    }
    // The pipeline's runtimes read more than the stream: each reads its part, and
    // procurement and payment also read what the match writes.
    let (eos, alo) = (
        results.exactly_once.as_ref().unwrap(),
        results.at_least_once.as_ref().unwrap(),
    );
    assert!(eos.records_read > stream);
    // The same outputs either way; exactly once also writes every state change to a changelog.
    assert!(alo.records_written > 0);
    assert!(eos.records_written > alo.records_written);
    let latency = results.latency.as_ref().expect("the latency phase ran");
    assert!(!latency.latencies.all.is_empty(), "outputs were timed");
    assert_eq!(
        latency.latencies.all.len(),
        latency
            .latencies
            .per_second
            .iter()
            .map(|h| h.len())
            .sum::<u64>()
    );

    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for expected in [
        "| pass-through baseline |",
        "| pipeline, exactly once |",
        "| pipeline, at least once |",
        "## Latency at a fixed rate",
        "## Targets",
        "other CPU ms per 1,000 records",
        "records written | moved per second (ratio)",
        "the pipeline ran once, exactly once, over the stream of its first 20 orgs",
        "## Memory with open POs in state",
        "| 3000 |",
        "## Scaling instances under load (exactly once)",
        "## Growing partitions under load (exactly once)",
        "Passed: warm-up, exactly-once, at-least-once, latency, scale, grow, open-pos.",
    ] {
        assert!(
            report.contains(expected),
            "report lacks {expected:?}:\n{report}"
        );
    }
    // Instances 1 -> 3 -> 1 (the two leave gracefully), and two growths (2 -> 4, then 4 -> 6):
    // each change with the pause of every partition it moved.
    for (phase, changes) in [
        (&results.scale, ["1 -> 3 instances", "3 -> 1 instances"]),
        (&results.grow, ["2 -> 4 partitions", "4 -> 6 partitions"]),
    ] {
        let run = phase.as_ref().expect("the phase ran");
        let made: Vec<&str> = run.moves.iter().map(|m| m.change.as_str()).collect();
        assert_eq!(made, changes);
        for change in &run.moves {
            assert!(!change.pauses.is_empty(), "pauses measured: {change:?}");
        }
    }
    let open = results.open_pos.as_ref().expect("the open-POs phase ran");
    assert_eq!((open.pos, open.records), (3_000, 3_000 + 3 * 4));
    assert!(open.state_bytes > 0, "the POs are in the state on disk");
    let targets = results.targets();
    let met = targets.iter().filter(|t| t.met.is_some()).count();
    assert_eq!(
        met, 5,
        "five targets are judged at any scale (the scale and grow pauses among them), the 10M-PO \
         one only at 10M"
    );
    let rss = targets.iter().find(|t| t.name.starts_with("RSS")).unwrap();
    assert!(rss.measured.contains("with 3000 open POs"), "{rss:?}");
    let svg = std::fs::read_to_string(out.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("End-to-end latency"));
}
