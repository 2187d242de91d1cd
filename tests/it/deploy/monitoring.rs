//! The Grafana dashboard and the Prometheus rules cannot drift from the
//! broker: promtool checks and unit-tests the rules, every metric (and every
//! label value matched exactly) that a dashboard query or a rule uses must
//! be exported by a fresh broker, and the dashboard must be a model Grafana
//! imports on any installation (no data source uid of one).

use std::{
    collections::{BTreeSet, HashSet},
    process::Command,
};

use serde_json::Value;

use super::{read, ROOT};
use crate::support::*;

const RULES: &str = "deploy/prometheus/sluice-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/sluice-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/sluice.json";

/// PromQL words followed by a list of label names, not an expression.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// PromQL words that are neither metrics nor functions.
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    if Command::new("promtool").arg("--version").output().is_err() {
        // CI installs it (.ci/run); a machine without it still runs the
        // other checks of this file, but must not pass this one silently.
        eprintln!(
            "\n!!!!!!!! promtool NOT FOUND: {RULES} is NOT checked or unit-tested.\n\
             !!!!!!!! Install it (Debian: apt-get install prometheus) and rerun.\n"
        );
        return;
    }
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(ROOT)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

on_both_stores! {
    #[tokio::test]
    the_dashboard_and_rules_use_only_exported_metrics,
}

async fn the_dashboard_and_rules_use_only_exported_metrics(store: Store) {
    let rules = Rules::parse(&read(RULES));
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let mut exprs: Vec<(&str, String)> = rules.exprs.iter().map(|e| (RULES, e.clone())).collect();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            exprs.push((DASHBOARD, expr.to_string()));
        }
    }
    bounded(60, async {
        let b = BrokerProcess::start(store, &[]).await;
        let m = b.metrics().await;
        let mut used = BTreeSet::new();
        for (file, expr) in &exprs {
            let selectors = selectors(expr);
            assert!(!selectors.is_empty(), "{file}: no metric in `{expr}`");
            for (name, matchers) in selectors {
                // A recording rule's own expression is checked where it is
                // defined; its name only has to be defined.
                if name.contains(':') {
                    assert!(
                        rules.records.contains(&name),
                        "{file}: {name} (in `{expr}`) is not recorded in {RULES}"
                    );
                    continue;
                }
                let family = family(&m.0, &name).unwrap_or_else(|| {
                    panic!("{file}: {name} (in `{expr}`) is not exported by a fresh broker")
                });
                for (label, value) in equality_matchers(&matchers) {
                    let series = format!("{name}{{");
                    let pair = format!("{label}=\"{value}\"");
                    assert!(
                        m.0.lines()
                            .any(|l| l.starts_with(&series) && l.contains(&pair)),
                        "{file}: no {name} with {pair} (in `{expr}`) on a fresh broker"
                    );
                }
                used.insert(family);
            }
        }
        eprintln!(
            "{} expressions use these exported families: {used:?}",
            exprs.len()
        );
    })
    .await;
}

#[test]
fn the_dashboard_is_a_grafana_model_with_a_templated_datasource() {
    let d: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "schemaVersion"
    );
    for key in ["title", "uid"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    // Grafana refuses a uid over 40 characters.
    assert!(d["uid"].as_str().unwrap().len() <= 40);

    let panels = panels(&d);
    assert!(!panels.is_empty(), "no panels");
    let mut ids = HashSet::new();
    let mut boxes = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(p["type"].as_str().is_some(), "{title}: no type");
        assert!(ids.insert(p["id"].as_u64()), "{title}: id repeated");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: gridPos {g}");
        for (other, (ox, oy, ow, oh)) in &boxes {
            let apart = x + w <= *ox || *ox + *ow <= x || y + h <= *oy || *oy + *oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title, (x, y, w, h)));
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert!(
                t["refId"].as_str().is_some(),
                "{title}: a target without refId"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: a target without expr"
            );
        }
    }

    // Every data source is a placeholder that the dashboard declares: a
    // data source variable, or an import input. A uid would name one
    // Grafana's data source and break everywhere else.
    let mut declared: HashSet<String> = d["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect();
    declared.extend(
        d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "datasource")
            .filter_map(|v| v["name"].as_str().map(str::to_owned)),
    );
    let mut sources = Vec::new();
    datasources(&d, &mut sources);
    assert!(sources.len() >= panels.len(), "panels name a data source");
    for ds in sources {
        let uid = match ds {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("uid").and_then(Value::as_str).unwrap_or_default(),
            other => panic!("datasource {other}: not a placeholder"),
        };
        let name = uid
            .strip_prefix("${")
            .and_then(|n| n.strip_suffix('}'))
            .or_else(|| uid.strip_prefix('$'))
            .unwrap_or_else(|| panic!("datasource {ds}: a hard-coded uid, not a placeholder"));
        assert!(
            declared.contains(name),
            "datasource {ds}: ${name} is not declared"
        );
    }
}

/// Every panel, those inside collapsed rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    all.retain(|p| p["type"] != "row");
    all
}

/// Every `datasource` value anywhere in the model.
fn datasources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "datasource" {
                    out.push(v);
                } else {
                    datasources(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| datasources(v, out)),
        _ => {}
    }
}

/// The exported family `name` is a sample of: itself, or a histogram whose
/// `_bucket`, `_sum` or `_count` it is. A histogram's own name has no samples.
fn family(metrics: &str, name: &str) -> Option<String> {
    let kind = |n: &str| {
        let head = format!("# TYPE {n} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&head).map(str::to_owned))
    };
    match kind(name).as_deref() {
        Some("histogram" | "summary") => None,
        Some(_) => Some(name.to_string()),
        None => ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            matches!(kind(base).as_deref(), Some("histogram" | "summary")).then(|| base.into())
        }),
    }
}

/// What the tests need of a Prometheus rules file: each rule's `expr`, and
/// the names recorded. Reads the YAML this repository writes (`expr:` plain,
/// quoted, or a `|`/`>` block), and checks that it found one expression per
/// rule, so a rule it misread fails the test instead of going unchecked.
#[derive(Default)]
struct Rules {
    exprs: Vec<String>,
    records: BTreeSet<String>,
}

impl Rules {
    fn parse(yaml: &str) -> Rules {
        let lines: Vec<&str> = yaml.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let (mut rules, mut alerts, mut i) = (Rules::default(), 0, 0);
        while i < lines.len() {
            let (line, column) = (lines[i], indent(lines[i]));
            let body = line.trim_start();
            let body = body.strip_prefix("- ").unwrap_or(body);
            i += 1;
            if let Some(v) = body.strip_prefix("record:") {
                rules.records.insert(scalar(v));
            } else if body.starts_with("alert:") {
                alerts += 1;
            } else if let Some(v) = body.strip_prefix("expr:") {
                if v.trim_start().starts_with(['|', '>']) {
                    let mut block = Vec::new();
                    while i < lines.len()
                        && (lines[i].trim().is_empty() || indent(lines[i]) > column)
                    {
                        block.push(lines[i].trim());
                        i += 1;
                    }
                    rules.exprs.push(block.join("\n"));
                } else {
                    rules.exprs.push(scalar(v));
                }
            }
        }
        assert_eq!(
            rules.exprs.len(),
            alerts + rules.records.len(),
            "one expr per alert and record"
        );
        assert!(rules.exprs.len() >= 10, "{} rules", rules.exprs.len());
        rules
    }
}

/// A one-line YAML scalar: quoted, or plain up to a comment.
fn scalar(v: &str) -> String {
    let v = v.trim();
    if let Some(q) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        q.replace("''", "'")
    } else if let Some(q) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        q.replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        v.split(" #").next().unwrap().trim().to_string()
    }
}

/// The metric selectors of a PromQL expression (Grafana variables allowed):
/// each metric name with the text inside its braces, if any.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let s = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b'#' => i = expr[i..].find('\n').map_or(s.len(), |n| i + n),
            b'"' | b'\'' | b'`' => i = past_string(s, i),
            b'{' => i = past(s, i, b'{', b'}'),
            b'[' => i = past(s, i, b'[', b']'),
            b'$' if s.get(i + 1) == Some(&b'{') => i = past(s, i + 1, b'{', b'}'),
            b'$' => {
                i += 1;
                while i < s.len() && word(s[i]) {
                    i += 1;
                }
            }
            // A number or duration, an exponent's sign included (1e-05).
            b'0'..=b'9' | b'.' => {
                i += 1;
                while i < s.len()
                    && (s[i].is_ascii_alphanumeric()
                        || s[i] == b'.'
                        || (matches!(s[i], b'+' | b'-') && matches!(s[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
            }
            c if word(c) => {
                let start = i;
                while i < s.len() && word(s[i]) {
                    i += 1;
                }
                let name = &expr[start..i];
                let lower = name.to_ascii_lowercase();
                let next = i + s[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
                let next_char = s.get(next).copied();
                // `sum by (job) (…)`: an aggregation with its clause first.
                let clause_follows = ["by", "without"].iter().any(|k| {
                    let rest = &s[next..];
                    rest.len() > k.len()
                        && rest[..k.len()].eq_ignore_ascii_case(k.as_bytes())
                        && !word(rest[k.len()])
                });
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next_char == Some(b'(') {
                        i = past(s, next, b'(', b')');
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || next_char == Some(b'(')
                    || clause_follows
                {
                    // An operator, or a function or aggregation.
                } else if next_char == Some(b'{') {
                    let end = past(s, next, b'{', b'}');
                    out.push((name.to_string(), expr[next + 1..end - 1].to_string()));
                    i = end;
                } else {
                    out.push((name.to_string(), String::new()));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The index just past the bracket that closes the one at `open_at`
/// (brackets inside strings do not count).
fn past(s: &[u8], open_at: usize, open: u8, close: u8) -> usize {
    let (mut depth, mut i) = (0, open_at);
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => {
                i = past_string(s, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!(
        "unclosed {} in {}",
        open as char,
        String::from_utf8_lossy(s)
    )
}

/// The index just past the string literal starting at `at`.
fn past_string(s: &[u8], at: usize) -> usize {
    let quote = s[at];
    let mut i = at + 1;
    while i < s.len() && s[i] != quote {
        i += if s[i] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    assert!(
        i < s.len(),
        "unclosed string in {}",
        String::from_utf8_lossy(s)
    );
    i + 1
}

/// The `label="value"` matchers of a selector's braces (not `!=`, `=~`,
/// `!~`, nor Grafana variables).
fn equality_matchers(matchers: &str) -> Vec<(String, String)> {
    let s = matchers.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if !(s[i].is_ascii_alphabetic() || s[i] == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
            i += 1;
        }
        let label = &matchers[start..i];
        let op_start = i + s[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        let op_len = s[op_start..]
            .iter()
            .take_while(|c| matches!(c, b'=' | b'!' | b'~'))
            .count();
        let op = &matchers[op_start..op_start + op_len];
        let value_at = op_start
            + op_len
            + s[op_start + op_len..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        assert!(
            matches!(s.get(value_at), Some(b'"' | b'\'' | b'`')),
            "cannot read the matchers {{{matchers}}}"
        );
        i = past_string(s, value_at);
        let value = &matchers[value_at + 1..i - 1];
        if op == "=" && !value.starts_with('$') {
            out.push((label.to_string(), value.to_string()));
        }
    }
    out
}

#[test]
fn selectors_find_metrics_not_functions_labels_or_variables() {
    let got = selectors(
        "sum by (job, le) (rate(a_bucket{le=\"0.8\", x=~\"$v\"}[$__rate_interval])) \
         / on (job) group_left b:rec:rate5m > 1e-05 and bool c offset 5m # d\n\
         + histogram_quantile(0.99, e) * ${x} unless absent(f{y=\"}\"})",
    );
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b:rec:rate5m", "c", "e", "f"]);
    assert_eq!(
        equality_matchers(&got[0].1),
        [("le".to_string(), "0.8".to_string())]
    );
    assert_eq!(
        equality_matchers(&got[4].1),
        [("y".to_string(), "}".to_string())]
    );
}
