//! Intent classification benchmark on public data sets: CLINC150 (with
//! out-of-scope queries), SNIPS and CAIS (Chinese). Reads the data from
//! `$COLLOQUY_DATA` (default: `shared/data` beside the workspace), prints
//! per data set one line for colloquy's classifier and one for the
//! reference baseline (TF-IDF + linear SVM, `colloquy_nlu::baseline`):
//! accuracy on the test split and, in `cv acc`, top-1 accuracy in 5-fold
//! cross-validation on the training set (`eval::cross_validate`); with
//! out-of-scope queries, also their recall and the share of all test
//! examples `handled` right at the threshold chosen on validation. Then it
//! prints how colloquy's top confidences are distributed for right, wrong
//! and out-of-scope answers, and writes all reports as JSON to `nlu.json`
//! in `$COLLOQUY_BENCH_OUT` (default: `bench-results/` in the workspace).
//!
//! Run with `cargo bench -p colloquy-nlu --bench intent`.

#[path = "../../../benches/report.rs"]
mod report;

use colloquy_nlu::eval::{
    evaluate, evaluate_baseline, ConfidenceDeciles, EvalConfig, EvalReport, OOS,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::{env, fs};

type Examples = Vec<(String, String)>;

/// Folds of the cross-validation on each training set.
const FOLDS: usize = 5;

/// A data set as the benchmark runs it: train, test and how to choose
/// the fallback rule.
struct DataSet {
    train: Examples,
    test: Examples,
    cfg: EvalConfig,
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in <workspace>/crates/<name>");
    let data = env::var_os("COLLOQUY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/data"));

    let mut reports = BTreeMap::new();
    let mut deciles = Vec::new();
    println!(
        "{:<10} {:<9} {:>6} {:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>11}",
        "data set",
        "model",
        "train",
        "test",
        "intents",
        "accuracy",
        "cv acc",
        "oos rec",
        "handled",
        "threshold",
        "margin",
        "train s",
        "classify/s"
    );
    for (name, load) in [
        ("clinc150", clinc as fn(&Path) -> DataSet),
        ("snips", snips),
        ("cais", cais),
    ] {
        let set = load(&data);
        let cfg = EvalConfig {
            folds: Some(FOLDS),
            ..set.cfg
        };
        let colloquy = evaluate(&set.train, &set.test, &cfg).expect("colloquy evaluates");
        let baseline = evaluate_baseline(&set.train, &set.test, &cfg).expect("baseline evaluates");
        for (model, report) in [("colloquy", &colloquy), ("tfidf-svm", &baseline)] {
            print_line(name, model, report);
        }
        if let Some(d) = &colloquy.confidence_deciles {
            deciles.push((name, d.clone()));
        }
        reports.insert(
            name,
            BTreeMap::from([("colloquy", colloquy), ("tfidf_svm", baseline)]),
        );
    }
    println!("\ncolloquy's top confidence by tenths of [0, 1] (count of test examples per bin)");
    println!(
        "{:<10} {:<8} {}",
        "data set",
        "answer",
        ConfidenceDeciles::header()
    );
    for (name, d) in deciles {
        for (kind, bins) in d.rows() {
            println!("{name:<10} {kind:<8} {bins}");
        }
    }
    report::write("nlu.json", &reports);
}

fn print_line(name: &str, model: &str, report: &EvalReport) {
    let rule = |x: f32| {
        if x.is_finite() {
            format!("{x:.3}")
        } else {
            "-".to_string()
        }
    };
    println!(
        "{name:<10} {model:<9} {:>6} {:>6} {:>7} {:>8.2}% {:>8} {:>8} {:>7.2}% {:>9} {:>7} {:>8.2} {:>11.0}",
        report.train_examples,
        report.test_examples,
        report.intents,
        100.0 * report.in_scope_accuracy,
        report
            .cross_validated
            .map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a)),
        report
            .oos_recall
            .map_or("-".to_string(), |r| format!("{:.2}%", 100.0 * r)),
        100.0 * report.handled,
        rule(report.threshold),
        rule(if report.threshold.is_finite() {
            report.margin
        } else {
            f32::NAN
        }),
        report.train_seconds,
        report.classifications_per_second,
    );
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

/// Threshold and margin chosen on `val` + `oos_val`; tested on `test` +
/// `oos_test`.
fn clinc(data: &Path) -> DataSet {
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
    DataSet {
        train: split("train"),
        test: [split("test"), split("oos_test")].concat(),
        cfg: EvalConfig {
            val: [split("val"), split("oos_val")].concat(),
            timing_passes: 3,
            ..EvalConfig::default()
        },
    }
}

/// No out-of-scope data, so every answer is accepted: plain accuracy.
fn closed_set(train: Examples, test: Examples) -> DataSet {
    let cfg = EvalConfig {
        threshold: Some(f32::NEG_INFINITY),
        timing_passes: 3,
        ..EvalConfig::default()
    };
    DataSet { train, test, cfg }
}

/// The Goo et al. (2018) split: line-aligned `seq.in` and `label`.
fn snips(data: &Path) -> DataSet {
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
    closed_set(split("train"), split("test"))
}

/// `ch.<split>` has one `char TAG` per line (the char may be a space) and a blank line after each
/// utterance; `ch.<split>.intent` has one label per utterance.
fn cais(data: &Path) -> DataSet {
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
    closed_set(split("train"), test)
}
