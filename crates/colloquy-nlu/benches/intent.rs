//! Intent classification benchmark on public data sets: CLINC150 (with
//! out-of-scope queries), SNIPS and CAIS (Chinese). Reads the data from
//! `$COLLOQUY_DATA` (default: `shared/data` beside the workspace), prints
//! one line per data set and writes all reports as JSON to `nlu.json` in
//! `$COLLOQUY_BENCH_OUT` (default: `bench-results/` in the workspace).
//!
//! Run with `cargo bench -p colloquy-nlu --bench intent`.

#[path = "../../../benches/report.rs"]
mod report;

use colloquy_nlu::eval::{evaluate, EvalConfig, EvalReport, OOS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::{env, fs};

type Examples = Vec<(String, String)>;

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in <workspace>/crates/<name>");
    let data = env::var_os("COLLOQUY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/data"));

    let mut reports = BTreeMap::new();
    println!(
        "{:<10} {:>6} {:>6} {:>7} {:>9} {:>8} {:>9} {:>8} {:>12}",
        "data set",
        "train",
        "test",
        "intents",
        "accuracy",
        "oos rec",
        "threshold",
        "train s",
        "classify/s"
    );
    for (name, run) in [
        ("clinc150", clinc as fn(&Path) -> EvalReport),
        ("snips", snips),
        ("cais", cais),
    ] {
        let report = run(&data);
        println!(
            "{name:<10} {:>6} {:>6} {:>7} {:>8.2}% {:>8} {:>9.3} {:>8.2} {:>12.0}",
            report.train_examples,
            report.test_examples,
            report.intents,
            100.0 * report.in_scope_accuracy,
            report
                .oos_recall
                .map_or("-".to_string(), |r| format!("{:.2}%", 100.0 * r)),
            report.threshold,
            report.train_seconds,
            report.classifications_per_second,
        );
        reports.insert(name, report);
    }
    report::write("nlu.json", &reports);
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The data sets are not ours; each directory must say under which terms
/// it may be used (CAIS's upstream states no licence, which its README
/// records).
fn require_terms(dir: &Path, file: &str) {
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: under which terms may this data be used?",
        path.display()
    );
}

/// Threshold chosen on `val` + `oos_val`; tested on `test` + `oos_test`.
fn clinc(data: &Path) -> EvalReport {
    let dir = data.join("clinc150");
    require_terms(&dir, "LICENSE");
    let json: serde_json::Value =
        serde_json::from_str(&read(&dir.join("data_full.json"))).expect("data_full.json is JSON");
    let split = |key: &str| -> Examples {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("data_full.json has no `{key}` list"))
            .iter()
            .map(|pair| {
                let text = pair[0].as_str().expect("[text, intent]");
                let intent = pair[1].as_str().expect("[text, intent]");
                (text.to_string(), intent.to_string())
            })
            .collect()
    };
    let cfg = EvalConfig {
        val: [split("val"), split("oos_val")].concat(),
        timing_passes: 3,
        ..EvalConfig::default()
    };
    evaluate(
        &split("train"),
        &[split("test"), split("oos_test")].concat(),
        &cfg,
    )
    .expect("clinc150 evaluates")
}

/// No out-of-scope data, so the threshold is 0: plain accuracy.
fn closed_set_config() -> EvalConfig {
    EvalConfig {
        threshold: Some(0.0),
        timing_passes: 3,
        ..EvalConfig::default()
    }
}

/// The Goo et al. (2018) split: line-aligned `seq.in` and `label`.
fn snips(data: &Path) -> EvalReport {
    let dir = data.join("snips");
    require_terms(&dir, "LICENSE");
    let split = |name: &str| -> Examples {
        let texts = read(&dir.join("goo2018-split").join(name).join("seq.in"));
        let labels = read(&dir.join("goo2018-split").join(name).join("label"));
        let examples: Examples = texts
            .lines()
            .zip(labels.lines())
            .map(|(t, l)| (t.trim().to_string(), l.trim().to_string()))
            .collect();
        assert_eq!(
            examples.len(),
            labels.lines().count(),
            "snips {name}: seq.in and label differ in length"
        );
        examples
    };
    evaluate(&split("train"), &split("test"), &closed_set_config()).expect("snips evaluates")
}

/// `ch.<split>` has one `char TAG` per line (the char may be a space) and a blank line after each
/// utterance; `ch.<split>.intent` has one label per utterance.
fn cais(data: &Path) -> EvalReport {
    let dir = data.join("cais");
    require_terms(&dir, "README.md");
    let split = |name: &str| -> Examples {
        let chars = read(&dir.join(name).join(format!("ch.{name}")));
        let labels = read(&dir.join(name).join(format!("ch.{name}.intent")));
        let texts: Vec<String> = chars
            .split("\n\n")
            .map(|block| {
                block
                    .lines()
                    .filter_map(|line| line.rsplit_once(' ').map(|(c, _)| c))
                    .collect::<String>()
            })
            .filter(|text| !text.is_empty())
            .collect();
        let labels: Vec<&str> = labels
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            texts.len(),
            labels.len(),
            "cais {name}: utterances and intents differ in number"
        );
        texts
            .into_iter()
            .zip(labels)
            .map(|(t, l)| (t, l.to_string()))
            .collect()
    };
    let test = split("test");
    assert!(test.iter().all(|(_, intent)| intent != OOS));
    evaluate(&split("train"), &test, &closed_set_config()).expect("cais evaluates")
}
