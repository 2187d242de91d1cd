//! Figures shared by the modes: latency histograms, status tallies, the
//! broker's memory from /proc, and the one-JSON-line report.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a microsecond histogram as JSON.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": h.mean().round(),
    })
}

/// One line: `p50 1.23 ms  p99 ..  p99.9 ..  max ..`.
pub fn latency_line(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

/// Counts of non-2xx responses by status code.
#[derive(Default, Debug)]
pub struct Statuses(pub BTreeMap<u16, u64>);

impl Statuses {
    pub fn add(&mut self, status: u16, n: u64) {
        *self.0.entry(status).or_default() += n;
    }

    pub fn merge(&mut self, other: &Statuses) {
        for (s, n) in &other.0 {
            self.add(*s, *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn json(&self) -> Value {
        self.0
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect()
    }
}

/// A process's `VmRSS` and `VmHWM` (peak) in KiB from /proc/PID/status, and
/// its CPU time so far (user + system) from /proc/PID/stat.
pub fn process_json(pid: &str) -> Value {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return json!({ "pid": pid, "error": "cannot read /proc/PID/status" });
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    json!({
        "pid": pid,
        "vm_rss_kb": field("VmRSS:"),
        "vm_hwm_kb": field("VmHWM:"),
        "cpu_secs": cpu_secs(pid),
    })
}

/// CPU seconds used so far by the broker processes (summed) and by this
/// process, to tell which side a phase of a run kept busy.
pub fn cpu_split(broker: &[u32]) -> (Option<f64>, Option<f64>) {
    let broker = (!broker.is_empty())
        .then(|| {
            broker
                .iter()
                .map(|p| cpu_secs(&p.to_string()))
                .sum::<Option<f64>>()
        })
        .flatten();
    (broker, cpu_secs("self"))
}

/// User + system CPU seconds of a process (Linux clock ticks are 1/100 s).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = rest.next()?.parse::<u64>().ok()? + rest.next()?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The `"broker"` (when `--pid` was given: every pid's figures summed) and
/// `"bench"` process figures.
pub fn processes_json(broker: &[u32]) -> Value {
    let broker = match broker {
        [] => Value::Null,
        [one] => process_json(&one.to_string()),
        many => {
            let each: Vec<Value> = many.iter().map(|p| process_json(&p.to_string())).collect();
            let sum = |k: &str| each.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
            let cpu: f64 = each.iter().filter_map(|v| v["cpu_secs"].as_f64()).sum();
            json!({
                "pids": many,
                "vm_rss_kb": sum("vm_rss_kb"),
                "vm_hwm_kb": sum("vm_hwm_kb"),
                "cpu_secs": (cpu * 100.0).round() / 100.0,
                "each": each,
            })
        }
    };
    json!({ "broker": broker, "bench": process_json("self") })
}

/// Summed VmRSS (KiB) of the given processes, if any could be read.
pub fn rss_kb(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    processes_json(pids)["broker"]["vm_rss_kb"].as_u64()
}

/// One line on memory and CPU of the broker (if known) and the bench.
pub fn processes_line(v: &Value) -> String {
    let one = |p: &Value| {
        format!(
            "RSS {} KiB (peak {} KiB), CPU {} s",
            p["vm_rss_kb"], p["vm_hwm_kb"], p["cpu_secs"]
        )
    };
    match v["broker"].is_null() {
        true => format!("bench {}", one(&v["bench"])),
        false => format!("broker {}; bench {}", one(&v["broker"]), one(&v["bench"])),
    }
}

/// Rate per second, 0 for an empty interval.
pub fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}
