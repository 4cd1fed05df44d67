//! Measuring a classifier on labelled data: accuracy on in-scope examples,
//! recall of out-of-scope ones (label `oos`, never trained on) at a
//! confidence threshold, and speed.

use crate::{Classifier, NluError, TrainConfig};
use serde::Serialize;
use std::time::Instant;

/// The label of out-of-scope examples in test and validation data.
pub const OOS: &str = "oos";

/// Threshold used when none is configured and no validation set can
/// choose one.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// A line of a `text<TAB>intent` file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {problem}")]
pub struct TsvError {
    /// 1-based.
    pub line: usize,
    pub problem: &'static str,
}

/// Reads `text<TAB>intent` lines, skipping blank ones. The text may not
/// contain a tab (the intent is after the last one would be ambiguous), so
/// exactly one tab is required.
pub fn parse_tsv(content: &str) -> Result<Vec<(String, String)>, TsvError> {
    let mut examples = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let error = |problem| TsvError { line: i + 1, problem };
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
        let mut s = Scores { in_scope: 0, in_scope_correct: 0, oos: 0, oos_rejected: 0, rejected: 0 };
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

/// The threshold that maximises in-scope accuracy plus out-of-scope recall
/// on `val` (both as fractions, so the usually much smaller out-of-scope
/// set weighs as much as the in-scope one); ties go to the lower threshold.
/// `None` if `val` lacks either kind of example.
fn choose_threshold(model: &Classifier, val: &[(String, String)]) -> Option<f32> {
    let predictions: Vec<(&str, f32)> = val.iter().map(|(text, _)| model.predict_top(text)).collect();
    let mut candidates: Vec<f32> = predictions.iter().map(|&(_, c)| c).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best: Option<(f64, f32)> = None;
    for t in candidates {
        let s = Scores::count(val, &predictions, t);
        if s.oos == 0 || s.in_scope == 0 {
            return None;
        }
        let score = ratio(s.in_scope_correct, s.in_scope) + ratio(s.oos_rejected, s.oos);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, t));
        }
    }
    best.map(|(_, t)| t)
}
