//! `report`: the JSON lines of a benchmark session (bench/run.sh) turned
//! into one Markdown table per scenario (median of the runs per target),
//! the ratios of each Sluice target to the others, and one SVG chart per
//! scenario (throughput and p99 latency, or memory per stream for S4).

use plotters::prelude::*;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::http::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Results files (JSON lines from `bench/run.sh`).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Directory for `report.md` and the charts (`{scenario}.svg`).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Also put the tables into this Markdown file: between the lines
    /// `<!-- report:begin -->` and `<!-- report:end -->` when it has them,
    /// else the whole file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// What a scenario's runs did, from the options in its first result line.
fn describe(line: &Value) -> String {
    let n = |k: &str| fmt_num(line[k].as_f64());
    let batch = match line["batch"].as_u64() {
        Some(b) if b > 1 => format!("NDJSON batches of {b}"),
        _ => "single-event publishes".into(),
    };
    match line["mode"].as_str().unwrap_or("") {
        "fanout" => format!(
            "{} topic(s) × {} subscribers, {} publishers {}, {batch}, {}-byte payloads, {} s",
            n("topics"),
            n("subscribers"),
            n("publishers"),
            match line["rate"].as_f64() {
                Some(r) => format!("at {} events/s in total", fmt_num(Some(r))),
                None => "flat out".into(),
            },
            n("payload_bytes"),
            line["duration_secs"]
                .as_f64()
                .map_or("?".into(), |d| fmt_num(Some(d)))
        ),
        "idle" => format!(
            "{} idle streams asked for over {} topics, held {} s: server memory per stream",
            n("streams"),
            n("topics"),
            n("hold_secs")
        ),
        "resume" => format!(
            "one subscriber from `earliest` over {} retained events (filled with NDJSON batches of {}), catch-up events/s",
            n("stored_events"),
            n("batch")
        ),
        "publish" => format!(
            "publish only, {batch}, {} publishers, {}-byte payloads, {} s",
            n("publishers"),
            n("payload_bytes"),
            fmt_num(line["elapsed_secs"].as_f64().map(f64::round))
        ),
        _ => String::new(),
    }
}

/// Median of the values present (`None` when there are none).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The medians (and totals) of one target in one scenario.
struct Row {
    target: String,
    mode: String,
    runs: usize,
    errors: usize,
    failed_checks: usize,
    throughput: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    gaps: u64,
    missing: u64,
    dups: u64,
    /// Whether the runs checked delivery at all (not publish-only runs).
    checked: bool,
    rss_mb: Option<f64>,
    /// Mode-specific: publish events/s (fanout), requests/s (publish),
    /// fill events/s (resume), KiB per stream (idle).
    extra: Option<f64>,
    /// Idle: streams held.
    held: Option<f64>,
    bound: Option<String>,
    /// Fanout at a rate: the rate asked for and the median publish rate reached.
    rate: Option<(f64, f64)>,
}

fn row(target: &str, lines: &[&Value]) -> Row {
    let med =
        |f: &dyn Fn(&Value) -> Option<f64>| median(lines.iter().filter_map(|l| f(l)).collect());
    let sum = |k: &str| lines.iter().filter_map(|l| l[k].as_u64()).sum::<u64>();
    let ms = |k: &'static str| move |l: &Value| l["latency"][k].as_f64().map(|us| us / 1000.0);
    let mode = lines
        .iter()
        .find_map(|l| l["mode"].as_str())
        .unwrap_or("")
        .to_owned();
    let extra_key = match mode.as_str() {
        "fanout" => "publish_events_per_sec",
        "publish" => "requests_per_sec",
        "resume" => "fill_events_per_sec",
        _ => "per_stream_kib",
    };
    Row {
        target: target.to_owned(),
        runs: lines.len(),
        errors: lines.iter().filter(|l| !l["error"].is_null()).count(),
        failed_checks: lines.iter().filter(|l| l["ok"] == false).count(),
        throughput: med(&|l| l["delivered_events_per_sec"].as_f64()),
        p50_ms: med(&ms("p50_us")),
        p99_ms: med(&ms("p99_us")),
        p999_ms: med(&ms("p999_us")),
        gaps: sum("gaps"),
        missing: sum("missing"),
        dups: sum("dups"),
        checked: lines.iter().any(|l| l.get("gaps").is_some()),
        rss_mb: med(&|l| l["server_rss_kb"].as_f64().map(|k| k / 1024.0)),
        extra: med(&|l| l[extra_key].as_f64()),
        held: med(&|l| l["open_streams"].as_f64()),
        bound: lines
            .iter()
            .find_map(|l| l["bound"].as_str().map(str::to_owned)),
        rate: lines
            .iter()
            .find_map(|l| l["rate"].as_f64())
            .zip(med(&|l| l["publish_events_per_sec"].as_f64())),
        mode,
    }
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(0.0) => "0".into(),
        Some(x) if x >= 100.0 || x.fract() == 0.0 => {
            let s = format!("{:.0}", x);
            // Thousands separators.
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn is_sluice(t: &str) -> bool {
    t.starts_with("sluice")
}

fn table(scenario: &str, about: &str, rows: &[Row], chart: Option<&str>) -> String {
    let mut md = String::new();
    let mode = rows.first().map_or("", |r| r.mode.as_str());
    let _ = writeln!(md, "### {scenario}: {about}\n");
    let (thr, extra) = match mode {
        "idle" => ("—", "KiB/stream"),
        "publish" => ("events/s", "requests/s"),
        "resume" => ("catch-up events/s", "fill events/s"),
        _ => ("delivered events/s", "publish events/s"),
    };
    if mode == "idle" {
        let _ = writeln!(
            md,
            "| target | runs | streams held | KiB/stream | server RSS MB | failed runs |\n| --- | --- | --- | --- | --- | --- |"
        );
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                r.target,
                r.runs,
                fmt_num(r.held),
                fmt_num(r.extra),
                fmt_num(r.rss_mb),
                r.failed_checks
            );
        }
    } else {
        let _ = writeln!(
            md,
            "| target | runs | {thr} | p50 ms | p99 ms | p99.9 ms | gaps / missing / dups (all runs) | server RSS MB | {extra} | failed runs |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.target,
                r.runs,
                fmt_num(r.throughput),
                fmt_num(r.p50_ms),
                fmt_num(r.p99_ms),
                fmt_num(r.p999_ms),
                match r.checked {
                    true => format!("{} / {} / {}", r.gaps, r.missing, r.dups),
                    false => "–".into(),
                },
                fmt_num(r.rss_mb),
                fmt_num(r.extra),
                r.failed_checks
            );
        }
    }
    md.push('\n');
    // Ratios of each Sluice target to each other target.
    let mut ratios = Vec::new();
    for s in rows.iter().filter(|r| is_sluice(&r.target)) {
        for o in rows.iter().filter(|r| !is_sluice(&r.target)) {
            let line = match mode {
                "idle" => format!(
                    "{} / {}: KiB per stream {}",
                    s.target,
                    o.target,
                    ratio(s.extra, o.extra)
                ),
                "publish" => format!(
                    "{} / {}: requests/s {}, p99 {}",
                    s.target,
                    o.target,
                    ratio(s.extra, o.extra),
                    ratio(s.p99_ms, o.p99_ms)
                ),
                _ => format!(
                    "{} / {}: events/s {}, p99 latency {}",
                    s.target,
                    o.target,
                    ratio(s.throughput, o.throughput),
                    ratio(s.p99_ms, o.p99_ms)
                ),
            };
            ratios.push(line);
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(md, "Ratios (medians): {}.\n", ratios.join("; "));
    }
    for r in rows {
        if r.errors > 0 {
            let _ = writeln!(
                md,
                "- {}: {} run(s) ended in an error (no figures).",
                r.target, r.errors
            );
        }
        if let Some(b) = &r.bound {
            let _ = writeln!(md, "- {}: {b}.", r.target);
        }
        if let Some((asked, got)) = r.rate.filter(|(a, g)| g < &(a * 0.95)) {
            let _ = writeln!(
                md,
                "- {}: publishers reached {} of the {} events/s asked for.",
                r.target,
                fmt_num(Some(got)),
                fmt_num(Some(asked))
            );
        }
    }
    if let Some(c) = chart {
        let _ = writeln!(md, "\n![{scenario}]({c})\n");
    }
    md
}

/// Bars with their values, on one half of a chart.
/// A logarithmic value axis when `log` (latencies spread over decades).
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    items: &[(String, f64)],
    log: bool,
) -> Result<(), Error> {
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9);
    if log {
        let min = items.iter().map(|i| i.1).fold(max, f64::min).max(1e-3);
        let range = (min / 2.0..max * 2.0).log_scale();
        bars_on(area, title, items, range, min / 2.0, |v| v * 1.25)
    } else {
        bars_on(area, title, items, 0f64..max * 1.15, 0.0, |v| {
            v + max * 0.03
        })
    }
}

fn bars_on<Y>(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    items: &[(String, f64)],
    y: Y,
    base: f64,
    label_at: impl Fn(f64) -> f64,
) -> Result<(), Error>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let n = items.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, y)?;
    let labels: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_style(("sans-serif", 10))
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| fmt_num(Some(*y)))
        .draw()?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
        Rectangle::new(
            [(i as f64 + 0.15, base), (i as f64 + 0.85, *v)],
            colors[i % colors.len()].filled(),
        )
    }))?;
    chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            fmt_num(Some(*v)),
            (i as f64 + 0.2, label_at(*v)),
            ("sans-serif", 12),
        )
    }))?;
    Ok(())
}

fn chart(path: &Path, scenario: &str, rows: &[Row]) -> Result<bool, Error> {
    let pick = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(String, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (r.target.clone(), v)))
            .collect()
    };
    let (left, right) = match rows.first().map_or("", |r| r.mode.as_str()) {
        "idle" => (
            ("streams held", pick(&|r| r.held)),
            ("server KiB per idle stream", pick(&|r| r.extra)),
        ),
        "resume" => (
            ("catch-up events/s", pick(&|r| r.throughput)),
            ("fill events/s (NDJSON batches)", pick(&|r| r.extra)),
        ),
        "publish" => (
            ("events/s", pick(&|r| r.throughput)),
            ("p99 request latency, ms (log scale)", pick(&|r| r.p99_ms)),
        ),
        _ => (
            ("delivered events/s", pick(&|r| r.throughput)),
            (
                "p99 publish→deliver latency, ms (log scale)",
                pick(&|r| r.p99_ms),
            ),
        ),
    };
    if left.1.is_empty() && right.1.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1000, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("{scenario} (median of runs)"), ("sans-serif", 18))?;
    let (a, b) = root.split_horizontally(500);
    bars(&a, left.0, &left.1, false)?;
    bars(&b, right.0, &right.1, right.0.contains("latency"))?;
    root.present()?;
    Ok(true)
}

/// `to` relative to directory `from` when it is below it, else `to` as given.
/// An empty `from` (the parent of a bare file name) is the current directory.
fn relative(from: &Path, to: &Path) -> String {
    let from = if from.as_os_str().is_empty() {
        Path::new(".")
    } else {
        from
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (f, t) = (abs(from), abs(to));
    t.strip_prefix(&f)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| t.display().to_string())
}

pub fn run(args: Args) -> Result<(), Error> {
    let mut lines = Vec::new();
    for path in &args.results {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        lines.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["scenario"].is_string() && v["target"].is_string()),
        );
    }
    // Scenario → target → lines, targets in the order they first appear.
    let mut by: BTreeMap<String, Vec<(String, Vec<&Value>)>> = BTreeMap::new();
    for l in &lines {
        let (s, t) = (
            l["scenario"].as_str().unwrap_or(""),
            l["target"].as_str().unwrap_or(""),
        );
        let targets = by.entry(s.to_owned()).or_default();
        match targets.iter_mut().find(|(name, _)| name == t) {
            Some((_, v)) => v.push(l),
            None => targets.push((t.to_owned(), vec![l])),
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let md_dir = args
        .markdown
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| args.out.clone());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Medians of {} result line(s) from {}; a table per scenario, ratios of each Sluice target to the others, a chart per scenario.\n",
        lines.len(),
        args.results
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (scenario, targets) in &by {
        let rows: Vec<Row> = targets.iter().map(|(t, ls)| row(t, ls)).collect();
        let svg = args.out.join(format!("{scenario}.svg"));
        let link = match chart(&svg, scenario, &rows) {
            Ok(true) => Some(relative(&md_dir, &svg)),
            Ok(false) => None,
            Err(e) => {
                eprintln!("report: chart {}: {e}", svg.display());
                None
            }
        };
        let about = describe(targets[0].1[0]);
        md.push_str(&table(scenario, &about, &rows, link.as_deref()));
    }
    let report = args.out.join("report.md");
    std::fs::write(&report, &md)?;
    eprintln!(
        "report: {} and {} chart(s) in {}",
        report.display(),
        by.len(),
        args.out.display()
    );
    if let Some(path) = &args.markdown {
        let (begin, end) = ("<!-- report:begin -->", "<!-- report:end -->");
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let new = match (old.find(begin), old.find(end)) {
            (Some(b), Some(e)) if b < e => format!("{}{begin}\n{md}{}", &old[..b], &old[e..]),
            _ => format!("{begin}\n{md}{end}\n"),
        };
        std::fs::write(path, new)?;
        eprintln!("report: tables written into {}", path.display());
    }
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(fmt_num(Some(1234567.4)), "1,234,567");
        assert_eq!(fmt_num(Some(1.234)), "1.23");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
    }

    #[test]
    fn chart_links_relative_to_the_markdown_file() {
        let svg = Path::new("bench/results/S1.svg");
        // `BENCHMARKS.md` has an empty parent: the current directory.
        assert_eq!(relative(Path::new(""), svg), "bench/results/S1.svg");
        assert_eq!(relative(Path::new("bench"), svg), "results/S1.svg");
    }

    #[test]
    fn a_table_and_a_chart_from_lines() {
        let lines: Vec<Value> = [
            r#"{"mode":"fanout","scenario":"S1","target":"sluice","run":1,"delivered_events_per_sec":800,"latency":{"p50_us":1000,"p99_us":5000,"p999_us":9000},"gaps":0,"missing":0,"dups":0,"server_rss_kb":10240,"ok":true}"#,
            r#"{"mode":"fanout","scenario":"S1","target":"ceiling","run":1,"delivered_events_per_sec":1000,"latency":{"p50_us":500,"p99_us":2500,"p999_us":4000},"gaps":0,"missing":0,"dups":0,"server_rss_kb":5120,"ok":true}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let rows = vec![row("sluice", &[&lines[0]]), row("ceiling", &[&lines[1]])];
        let md = table("S1", &describe(&lines[0]), &rows, Some("S1.svg"));
        assert!(
            md.contains("| sluice | 1 | 800 | 1 | 5 | 9 | 0 / 0 / 0 | 10 |"),
            "{md}"
        );
        assert!(
            md.contains("sluice / ceiling: events/s 0.80×, p99 latency 2.00×"),
            "{md}"
        );
        let dir = std::env::temp_dir().join(format!("sluice-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(chart(&dir.join("S1.svg"), "S1", &rows).unwrap());
        let svg = std::fs::read_to_string(dir.join("S1.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("ceiling"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
