//! Measuring a classifier on labelled data: accuracy on in-scope examples,
//! recall of out-of-scope ones (label `oos`, never trained on) at a
//! confidence threshold, and speed.

use crate::{Classifier, NluError, TrainConfig};
use serde::Serialize;
use std::time::Instant;

/// The label of out-of-scope examples in test and validation data.
pub const OOS: &str = "oos";

/// Threshold used when none is configured and no validation set can
/// choose one: the one a bot gets when it sets none.
pub const DEFAULT_THRESHOLD: f32 = 0.4;

/// A line of a `text<TAB>intent` file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {problem}")]
pub struct TsvError {
    /// 1-based.
    pub line: usize,
    pub problem: &'static str,
}

/// Reads `text<TAB>intent` lines, skipping blank ones. Exactly one tab is
/// required: with two it would be unclear which one ends the text.
pub fn parse_tsv(content: &str) -> Result<Vec<(String, String)>, TsvError> {
    let mut examples = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let error = |problem| TsvError {
            line: i + 1,
            problem,
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(text), Some(intent), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(error("expected exactly one tab between text and intent"));
        };
        let (text, intent) = (text.trim(), intent.trim());
        if text.is_empty() {
            return Err(error("empty text"));
        }
        if intent.is_empty() {
            return Err(error("empty intent"));
        }
        examples.push((text.to_string(), intent.to_string()));
    }
    Ok(examples)
}

#[derive(Debug, Clone, Default)]
pub struct EvalConfig {
    pub train: TrainConfig,
    /// Fixed threshold; when `None` it is chosen on `val` if that holds
    /// out-of-scope examples, else `DEFAULT_THRESHOLD`.
    pub threshold: Option<f32>,
    /// Validation examples (in-scope and `oos`) for choosing the threshold.
    pub val: Vec<(String, String)>,
    /// Passes over the test set when timing classification (at least one).
    pub timing_passes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub train_examples: usize,
    pub test_examples: usize,
    pub intents: usize,
    /// Correct intent with confidence at or above the threshold.
    pub in_scope_accuracy: f64,
    /// Out-of-scope examples below the threshold; `None` without any.
    pub oos_recall: Option<f64>,
    /// Of the examples below the threshold, how many were out of scope.
    pub oos_precision: Option<f64>,
    pub threshold: f32,
    /// `config`, `val` or `default`.
    pub threshold_source: &'static str,
    pub train_seconds: f64,
    /// Single-threaded, normalisation included.
    pub classifications_per_second: f64,
}

/// Trains on `train` and scores `test`, where examples labelled `oos` are
/// out of scope.
pub fn evaluate(
    train: &[(String, String)],
    test: &[(String, String)],
    cfg: &EvalConfig,
) -> Result<EvalReport, NluError> {
    if train.iter().any(|(_, intent)| intent == OOS) {
        return Err(NluError::OosInTraining);
    }
    let started = Instant::now();
    let model = Classifier::train(train, &cfg.train)?;
    let train_seconds = started.elapsed().as_secs_f64();

    let (threshold, threshold_source) = match cfg.threshold {
        Some(t) => (t, "config"),
        None => match choose_threshold(&model, &cfg.val) {
            Some(t) => (t, "val"),
            None => (DEFAULT_THRESHOLD, "default"),
        },
    };

    let started = Instant::now();
    let passes = cfg.timing_passes.max(1);
    let mut predictions = Vec::with_capacity(test.len());
    for pass in 0..passes {
        for (text, _) in test {
            let prediction = model.predict_top(text);
            if pass == 0 {
                predictions.push(prediction);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let scores = Scores::count(test, &predictions, threshold);
    Ok(EvalReport {
        train_examples: train.len(),
        test_examples: test.len(),
        intents: model.intents().len(),
        in_scope_accuracy: ratio(scores.in_scope_correct, scores.in_scope),
        oos_recall: (scores.oos > 0).then(|| ratio(scores.oos_rejected, scores.oos)),
        oos_precision: (scores.oos > 0).then(|| ratio(scores.oos_rejected, scores.rejected)),
        threshold,
        threshold_source,
        train_seconds,
        classifications_per_second: (passes * test.len()) as f64 / elapsed.max(1e-9),
    })
}

struct Scores {
    in_scope: usize,
    in_scope_correct: usize,
    oos: usize,
    oos_rejected: usize,
    rejected: usize,
}

impl Scores {
    fn count(examples: &[(String, String)], predictions: &[(&str, f32)], threshold: f32) -> Scores {
        let mut s = Scores {
            in_scope: 0,
            in_scope_correct: 0,
            oos: 0,
            oos_rejected: 0,
            rejected: 0,
        };
        for ((_, label), &(predicted, confidence)) in examples.iter().zip(predictions) {
            let accepted = confidence >= threshold;
            s.rejected += usize::from(!accepted);
            if label == OOS {
                s.oos += 1;
                s.oos_rejected += usize::from(!accepted);
            } else {
                s.in_scope += 1;
                s.in_scope_correct += usize::from(accepted && predicted == label);
            }
        }
        s
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The threshold under which most of `val` is handled correctly: in-scope
/// examples accepted with the right intent plus out-of-scope examples
/// rejected, every example counting once. Ties go to the lower threshold.
/// `None` if `val` lacks either kind of example.
fn choose_threshold(model: &Classifier, val: &[(String, String)]) -> Option<f32> {
    let predictions: Vec<(&str, f32)> = val
        .iter()
        .map(|(text, _)| model.predict_top(text))
        .collect();
    let mut candidates: Vec<f32> = predictions.iter().map(|&(_, c)| c).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best: Option<(usize, f32)> = None;
    for t in candidates {
        let s = Scores::count(val, &predictions, t);
        if s.oos == 0 || s.in_scope == 0 {
            return None;
        }
        let handled = s.in_scope_correct + s.oos_rejected;
        if best.is_none_or(|(b, _)| handled > b) {
            best = Some((handled, t));
        }
    }
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(data: &[(&str, &str)]) -> Vec<(String, String)> {
        data.iter()
            .map(|(t, i)| (t.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn parses_tsv() {
        let parsed = parse_tsv("hello there\tgreet\r\n\n  \nwhere is my order\ttrack\n").unwrap();
        assert_eq!(
            parsed,
            pairs(&[("hello there", "greet"), ("where is my order", "track")])
        );
        assert_eq!(parse_tsv("").unwrap(), vec![]);
    }

    #[test]
    fn tsv_errors_name_the_line() {
        let cases = [
            (
                "a\tb\nno tab here\n",
                2,
                "expected exactly one tab between text and intent",
            ),
            (
                "a\tb\n\na\tb\tc\n",
                3,
                "expected exactly one tab between text and intent",
            ),
            (" \tgreet\n", 1, "empty text"),
            ("hello\t \n", 1, "empty intent"),
        ];
        for (content, line, problem) in cases {
            let err = parse_tsv(content).unwrap_err();
            assert_eq!(err, TsvError { line, problem }, "{content:?}");
        }
        assert_eq!(
            parse_tsv("x\n").unwrap_err().to_string(),
            "line 1: expected exactly one tab between text and intent"
        );
    }

    fn toy_train() -> Vec<(String, String)> {
        pairs(&[
            ("hi", "greet"),
            ("hello", "greet"),
            ("good morning", "greet"),
            ("hey there", "greet"),
            ("where is my order", "track"),
            ("track my package", "track"),
            ("has my order shipped", "track"),
            ("when will my parcel arrive", "track"),
        ])
    }

    #[test]
    fn evaluates_with_a_threshold_chosen_on_val() {
        let test = pairs(&[
            ("hello there", "greet"),
            ("track my order", "track"),
            ("what is the capital of peru", OOS),
        ]);
        let val = pairs(&[
            ("hi there", "greet"),
            ("where is my package", "track"),
            ("play some jazz", OOS),
        ]);
        let cfg = EvalConfig {
            val,
            ..EvalConfig::default()
        };
        let report = evaluate(&toy_train(), &test, &cfg).unwrap();
        assert_eq!(
            (report.train_examples, report.test_examples, report.intents),
            (8, 3, 2)
        );
        assert_eq!(report.threshold_source, "val");
        assert_eq!(report.in_scope_accuracy, 1.0);
        assert_eq!(report.oos_recall, Some(1.0));
        assert_eq!(report.oos_precision, Some(1.0));
        assert!(report.classifications_per_second > 0.0);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["oos_recall"], 1.0);
    }

    #[test]
    fn threshold_from_config_or_default() {
        let test = pairs(&[("hello", "greet"), ("where is my order", "track")]);
        let fixed = EvalConfig {
            threshold: Some(1.5),
            ..EvalConfig::default()
        };
        let report = evaluate(&toy_train(), &test, &fixed).unwrap();
        assert_eq!((report.threshold, report.threshold_source), (1.5, "config"));
        assert_eq!(
            report.in_scope_accuracy, 0.0,
            "nothing clears a threshold above 1"
        );
        assert_eq!(report.oos_recall, None);

        // A validation set without out-of-scope examples cannot place it.
        let val = pairs(&[("hi", "greet")]);
        let report = evaluate(
            &toy_train(),
            &test,
            &EvalConfig {
                val,
                ..EvalConfig::default()
            },
        )
        .unwrap();
        assert_eq!(
            (report.threshold, report.threshold_source),
            (DEFAULT_THRESHOLD, "default")
        );
        assert_eq!(report.in_scope_accuracy, 1.0);
    }

    #[test]
    fn oos_in_training_is_an_error() {
        let mut train = toy_train();
        train.push(("blah".into(), OOS.into()));
        let err = evaluate(&train, &toy_train(), &EvalConfig::default()).unwrap_err();
        assert_eq!(err, NluError::OosInTraining);
    }
}
