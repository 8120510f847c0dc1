//! The benchmark's report: `report.md` (machine, stream, settings, throughput as ratios to
//! the baseline, latency percentiles, each target met or not, the audit) and `bench.svg`
//! (records read per second in the throughput runs; latency per second in the fixed-rate run).

use crate::bench::{BenchError, BenchResults, Throughput};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// A target of issue 5, and whether this run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: &'static str,
    pub measured: String,
    /// `None`: this run did not measure it.
    pub met: Option<bool>,
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: u64 = 1 << 30;
/// The open POs the memory target is stated at.
const TEN_MILLION: u64 = 10_000_000;

impl BenchResults {
    /// The targets, each with what this run measured of it.
    pub fn targets(&self) -> Vec<Target> {
        let ratio = |a: &Throughput, b: &Throughput| a.rate() / b.rate();
        let mut targets = Vec::new();
        targets.push(match (&self.exactly_once, &self.baseline) {
            (Some(eos), Some(base)) => Target {
                name: "exactly-once throughput at least 50% of the pass-through baseline",
                measured: format!("{:.0}%", 100.0 * ratio(eos, base)),
                met: Some(ratio(eos, base) >= 0.5),
            },
            _ => not_measured("exactly-once throughput at least 50% of the pass-through baseline"),
        });
        targets.push(match (&self.exactly_once, &self.at_least_once) {
            (Some(eos), Some(alo)) => Target {
                name: "exactly once costs at most 10% against at least once",
                measured: format!("costs {:.0}%", 100.0 * (1.0 - ratio(eos, alo))),
                met: Some(ratio(eos, alo) >= 0.9),
            },
            _ => not_measured("exactly once costs at most 10% against at least once"),
        });
        let p99_name = "p99 end-to-end latency under 250 ms";
        targets.push(match &self.latency {
            Some(run) => {
                let p99 = run.latencies.all.value_at_quantile(0.99);
                Target {
                    name: p99_name,
                    measured: format!(
                        "{p99} ms at {:.0} records/s, batches lingering {} ms",
                        run.achieved,
                        self.config.batch_linger.as_millis()
                    ),
                    met: Some(p99 < 250),
                }
            }
            None => not_measured(p99_name),
        });
        let rss_name = "RSS under 1 GiB with 10 million open POs in state";
        targets.push(match &self.open_pos {
            // Measured at a smaller state, it says what it saw, and does not call it met.
            Some(run) => Target {
                name: rss_name,
                measured: format!(
                    "peak {:.0} MiB with {} open POs ({:.1} GiB of state on disk)",
                    run.peak_rss as f64 / MIB,
                    run.pos,
                    run.state_bytes as f64 / (1024.0 * MIB)
                ),
                met: (run.pos >= TEN_MILLION).then_some(run.peak_rss < GIB),
            },
            None => not_measured(rss_name),
        });
        for (name, run) in [
            (
                "every pause of a partition under 60 s as instances go 1 -> 3 -> 1",
                &self.scale,
            ),
            (
                "every pause of a partition under 60 s as partitions grow",
                &self.grow,
            ),
        ] {
            targets.push(match run {
                Some(run) => Target {
                    name,
                    measured: format!(
                        "longest {} ms ({} ms before any change)",
                        run.longest_pause_ms(),
                        run.steady_gap_ms
                    ),
                    met: Some(run.longest_pause_ms() < 60_000),
                },
                None => not_measured(name),
            });
        }
        targets
    }

    /// The report in markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let c = &self.config;
        let s = &self.stream;
        let _ = writeln!(md, "# P2P pipeline benchmark\n");
        let _ = writeln!(md, "Command: `{}`\n", c.command);
        let _ = writeln!(md, "## Machine\n");
        let _ = writeln!(
            md,
            "{} cores ({}), {:.1} GiB memory, {}; librdkafka {}; p2p {} ({} build). The broker \
             and the pipeline share the machine.\n",
            m.cores,
            m.cpu,
            m.memory as f64 / (1024.0 * MIB),
            m.os,
            m.librdkafka,
            m.version,
            m.build
        );
        let throughput =
            self.baseline.is_some() || self.exactly_once.is_some() || self.at_least_once.is_some();
        let warm_up = if self.audited.contains(&crate::bench::WARM_UP) {
            format!(
                " Before any phase was measured, the pipeline ran once, exactly once, over the \
                 stream of its first {} orgs (the warm-up: the broker's JIT compiles its \
                 transactional paths).",
                crate::bench::SAMPLE_ORGS
            )
        } else {
            String::new()
        };
        let settings = format!(
            "{} partitions per topic. Batches of at most {} records, lingering {} ms; a \
             transaction per batch.{warm_up}\n",
            c.partitions,
            c.max_batch,
            c.batch_linger.as_millis()
        );
        if throughput || self.latency.is_some() {
            let _ = writeln!(md, "## Stream and settings\n");
            let _ = writeln!(
                md,
                "{} records: {} orgs (Zipf exponent {}: {} to {} POs each), {} POs, {} invoices, \
                 seed {}; {settings}",
                s.records,
                s.orgs,
                c.generator.org_size_skew,
                s.smallest_org,
                s.largest_org,
                s.pos,
                s.invoices,
                c.generator.seed,
            );
        } else {
            // Only the open-POs phase ran: it generates a stream of its own, described there.
            let _ = writeln!(md, "## Settings\n\n{settings}");
        }
        if throughput {
            let _ = writeln!(md, "## Throughput\n");
            let _ = writeln!(
                md,
                "From the first record read to the last one done (the pipeline: every invoice \
                 decided, every payable one released into a payment run). \"Records read\" counts \
                 each runtime's reads: match, procurement and payment each read part of the \
                 stream, and procurement and payment also read what the match writes. \"Records \
                 written\" counts outputs, dead letters and (exactly once) changelog records. \
                 \"Moved per second\" is records read and written per second: what the broker \
                 carries, whatever a record means. \"Other \
                 CPU\" is the rest of the machine's busy CPU meanwhile: with the broker and the \
                 registry on this machine, mostly the work the run gave them.\n"
            );
            let _ = writeln!(
                md,
                "| run | stream records/s | ratio to baseline | seconds | records read | \
                 records written | moved per second (ratio) | transactions | CPU ms per 1,000 records | other CPU ms per 1,000 records | \
                 peak RSS |"
            );
            let _ = writeln!(
                md,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (name, run) in [
                ("pass-through baseline", &self.baseline),
                ("pipeline, exactly once", &self.exactly_once),
                ("pipeline, at least once", &self.at_least_once),
            ] {
                let Some(run) = run else { continue };
                let ratio = self
                    .baseline
                    .as_ref()
                    .map_or("-".into(), |b| format!("{:.2}", run.rate() / b.rate()));
                let moved = self.baseline.as_ref().map_or("-".into(), |b| {
                    format!(
                        "{:.0} ({:.2})",
                        run.moved_rate(),
                        run.moved_rate() / b.moved_rate()
                    )
                });
                let per_thousand =
                    |cpu: std::time::Duration| cpu.as_secs_f64() * 1e6 / run.records.max(1) as f64;
                let others = run
                    .other_cpu
                    .map_or("-".into(), |cpu| format!("{:.0}", per_thousand(cpu)));
                let _ = writeln!(
                    md,
                    "| {name} | {:.0} | {ratio} | {:.2} | {} | {} | {moved} | {} | {:.0} | \
                     {others} | {:.0} MiB |",
                    run.rate(),
                    run.elapsed.as_secs_f64(),
                    run.records_read,
                    run.records_written,
                    run.transactions,
                    per_thousand(run.cpu),
                    run.peak_rss as f64 / MIB
                );
            }
        }
        if let Some(run) = &self.latency {
            let h = &run.latencies.all;
            let _ = writeln!(md, "\n## Latency at a fixed rate (exactly once)\n");
            let _ = writeln!(
                md,
                "The stream of the first {} orgs ({} records), inputs stamped as they are sent, \
                 at {:.0} records/s asked ({:.0} achieved: the orgs publish side by side, and an \
                 org's record of another topic than its last one waits for that one to be on the \
                 broker, as an ERP's would). Each output, from its timestamp (its input's, \
                 carried over) to a read_committed consumer having it.\n",
                c.generator.orgs.min(crate::bench::SAMPLE_ORGS),
                run.records,
                run.rate,
                run.achieved
            );
            let _ = writeln!(md, "| outputs | p50 | p95 | p99 | max |");
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                md,
                "| {} | {} ms | {} ms | {} ms | {} ms |",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.95),
                h.value_at_quantile(0.99),
                h.max()
            );
        }
        if let Some(run) = &self.open_pos {
            let _ = writeln!(md, "\n## Memory with open POs in state (exactly once)\n");
            let _ = writeln!(
                md,
                "POs issued and never received nor invoiced, of {} orgs, pre-loaded and then \
                 processed: each stays in the match, procurement and payment state. Resident \
                 memory of this process (the three runtimes; the loader holds {} records at \
                 most, and is done before they start).\n",
                c.generator.orgs,
                crate::bench::OPEN_POS_CHUNK
            );
            let _ = writeln!(
                md,
                "| open POs | stream records/s | seconds | RSS at start | peak RSS | state on \
                 disk |"
            );
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.1} | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
                run.pos,
                run.rate(),
                run.elapsed.as_secs_f64(),
                run.rss_before as f64 / MIB,
                run.peak_rss as f64 / MIB,
                run.state_bytes as f64 / MIB
            );
        }
        if let Some(run) = &self.scale {
            let _ = writeln!(md, "\n## Scaling instances under load (exactly once)\n");
            let _ = writeln!(
                md,
                "The stream of the first {} orgs ({} records) fed at {:.0} records/s to one \
                 instance; two more join at a fifth of the feed and leave (stopped gracefully) \
                 at half of it.",
                crate::bench::SAMPLE_ORGS,
                run.records,
                run.rate,
            );
            moves_table(&mut md, run);
        }
        if let Some(run) = &self.grow {
            let _ = writeln!(md, "\n## Growing partitions under load (exactly once)\n");
            let _ = writeln!(
                md,
                "The stream of the first {} orgs ({} records) fed at {:.0} records/s to one \
                 instance; every topic grows, as `p2p admin grow-partitions` grows it, at a \
                 third of the feed and again at two thirds (ADR 0025).",
                crate::bench::SAMPLE_ORGS,
                run.records,
                run.rate,
            );
            moves_table(&mut md, run);
        }
        let _ = writeln!(md, "\n## Targets\n");
        let _ = writeln!(md, "| target | measured | met |");
        let _ = writeln!(md, "|---|---|---|");
        for t in self.targets() {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(md, "| {} | {} | {met} |", t.name, t.measured);
        }
        let _ = writeln!(md, "\n## Audit\n");
        let _ = writeln!(
            md,
            "Every pipeline run is read back under read_committed and checked against the \
             generator's plan: each invoice has its one planned outcome, each PO and \
             requisition its planned end, each matched invoice is instructed once for its \
             total rounded to the currency's minor unit, no payment twice, each invoice's \
             newest status its newest outcome. Passed: {}.\n",
            if self.audited.is_empty() {
                "none ran".to_owned()
            } else {
                self.audited.join(", ")
            }
        );
        let _ = writeln!(md, "![throughput and latency over time](bench.svg)");
        md
    }
}

fn not_measured(name: &'static str) -> Target {
    Target {
        name,
        measured: "not in this run".into(),
        met: None,
    }
}

/// Writes `report.md` and `bench.svg` into `dir`.
pub fn write(results: &BenchResults, dir: &Path) -> Result<(), BenchError> {
    std::fs::write(dir.join("report.md"), results.markdown())?;
    plot(results, &dir.join("bench.svg")).map_err(|e| BenchError::Plot(e.to_string()))
}

fn plot(results: &BenchResults, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);

    let runs: Vec<(&str, &Throughput, RGBColor)> = [
        ("exactly once", &results.exactly_once, BLUE),
        ("at least once", &results.at_least_once, RED),
    ]
    .into_iter()
    .filter_map(|(name, run, color)| run.as_ref().map(|r| (name, r, color)))
    .collect();
    let seconds = runs
        .iter()
        .map(|(_, r, _)| r.per_second.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let most = runs
        .iter()
        .flat_map(|(_, r, _)| r.per_second.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Records read per second by the pipeline's runtimes",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0..seconds, 0..most + most / 10)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first batch")
        .y_desc("records/s")
        .draw()?;
    for (name, run, color) in &runs {
        chart
            .draw_series(LineSeries::new(
                run.per_second.iter().enumerate().map(|(s, n)| (s, *n)),
                color,
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if !runs.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }

    let per_second = results
        .latency
        .as_ref()
        .map(|l| l.latencies.per_second.as_slice())
        .unwrap_or_default();
    let highest = per_second.iter().map(|h| h.max()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "End-to-end latency per second at a fixed rate, exactly once (ms)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0..per_second.len().max(1), 0..highest + highest / 10)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the feed started")
        .y_desc("ms")
        .draw()?;
    for (name, quantile, color) in [
        ("p50", Some(0.5), GREEN),
        ("p99", Some(0.99), BLUE),
        ("max", None, RED),
    ] {
        let points = per_second
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(s, h)| (s, quantile.map_or(h.max(), |q| h.value_at_quantile(q))));
        chart
            .draw_series(LineSeries::new(points, color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if !per_second.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// What a phase of changes under load measured: the pause definition, and per change its
/// pauses, restored records and latency.
fn moves_table(md: &mut String, run: &crate::scale::ScaleRun) {
    let _ = writeln!(
        md,
        "A partition's pause is the longest its inputs waited for their outputs (read back \
         read_committed) from the change until the next, or the end: under a steady feed, a \
         partition that stood still for 40 s leaves its next inputs waiting 40 s. Before any \
         change the longest wait was {} ms. At the end the three changelogs held {} records: \
         what restoring every partition from nothing reads.\n",
        run.steady_gap_ms, run.changelog_records
    );
    let _ = writeln!(
        md,
        "| change | at | pause per partition | restored changelog records | p99 | max |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---:|---:|");
    for m in &run.moves {
        let pauses: Vec<String> = m
            .pauses
            .iter()
            .map(|(p, ms)| format!("{p}: {:.1} s", *ms as f64 / 1000.0))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {:.1} s | {} | {} | {} ms | {} ms |",
            m.change,
            m.at.as_secs_f64(),
            pauses.join(", "),
            m.restored,
            m.p99_ms,
            m.max_ms
        );
    }
}
