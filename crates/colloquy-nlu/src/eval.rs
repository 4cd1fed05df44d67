//! Measuring a classifier on labelled data: accuracy on in-scope examples,
//! recall of out-of-scope ones (label `oos`, never trained on) under a
//! fallback rule (threshold and margin), the distribution of confidences,
//! and speed; for colloquy's classifier and for the reference baseline.

use crate::baseline::Baseline;
use crate::classifier::Fallback;
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
    /// Fixed threshold; when `None` it is chosen on `val` (with the
    /// margin) if that holds out-of-scope examples, else
    /// `DEFAULT_THRESHOLD`. `f32::NEG_INFINITY` accepts every answer.
    pub threshold: Option<f32>,
    /// Fixed margin with a fixed threshold; `None` means 0 there.
    pub margin: Option<f32>,
    /// Validation examples (in-scope and `oos`) for choosing the
    /// threshold and margin.
    pub val: Vec<(String, String)>,
    /// Passes over the test set when timing classification (at least one).
    pub timing_passes: usize,
    /// When set, the report also gives top-1 accuracy in this many folds
    /// of cross-validation on the training set (`cross_validate`).
    pub folds: Option<usize>,
}

/// How many examples of each kind had their top confidence in each tenth
/// of [0, 1]: bin `i` holds confidences in `[i/10, (i+1)/10)`, the last
/// one includes 1. Only for models whose scores are probabilities.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConfidenceDeciles {
    /// In scope, right intent (whether or not it cleared the threshold).
    pub correct: [usize; 10],
    /// In scope, wrong intent.
    pub wrong: [usize; 10],
    /// Out of scope.
    pub oos: [usize; 10],
}

impl ConfidenceDeciles {
    fn count(examples: &[(String, String)], predictions: &[Prediction<'_>]) -> Self {
        let mut d = ConfidenceDeciles::default();
        for ((_, label), p) in examples.iter().zip(predictions) {
            d.add(label, p.intent, p.confidence);
        }
        d
    }

    /// Counts one answer: the `expected` intent (or `OOS`), the top-ranked
    /// intent and its confidence.
    pub fn add(&mut self, expected: &str, top: &str, confidence: f32) {
        let bin = ((confidence.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        let counts = if expected == OOS {
            &mut self.oos
        } else if top == expected {
            &mut self.correct
        } else {
            &mut self.wrong
        };
        counts[bin] += 1;
    }

    /// The column heads of `rows`: the lower bound of each tenth.
    pub fn header() -> String {
        (0..10).map(|i| format!("{:>6}", format!(".{i}"))).collect()
    }

    /// `(kind, counts)` per kind of answer that occurred, the counts
    /// aligned under `header`.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        [
            ("correct", &self.correct),
            ("wrong", &self.wrong),
            ("oos", &self.oos),
        ]
        .into_iter()
        .filter(|(_, counts)| counts.iter().any(|&c| c > 0))
        .map(|(kind, counts)| (kind, counts.iter().map(|c| format!("{c:>6}")).collect()))
        .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub train_examples: usize,
    pub test_examples: usize,
    pub intents: usize,
    /// Correct intent and accepted by the fallback rule.
    pub in_scope_accuracy: f64,
    /// Out-of-scope examples that fell back; `None` without any.
    pub oos_recall: Option<f64>,
    /// Of the examples that fell back, how many were out of scope.
    pub oos_precision: Option<f64>,
    /// Share of all test examples handled right: in scope with the right
    /// intent accepted, or out of scope and fallen back. What the
    /// threshold chosen on `val` maximises there; moving along the
    /// trade-off between the two rates above does not raise it.
    pub handled: f64,
    /// Lowest accepted top confidence.
    pub threshold: f32,
    /// Lowest accepted lead of the top confidence over the runner-up.
    pub margin: f32,
    /// `config`, `val` or `default`.
    pub threshold_source: &'static str,
    pub train_seconds: f64,
    /// Single-threaded, normalisation included.
    pub classifications_per_second: f64,
    /// `None` for a model whose scores are not probabilities.
    pub confidence_deciles: Option<ConfidenceDeciles>,
    /// Top-1 accuracy in cross-validation on the training set (see
    /// `cross_validate`), with `EvalConfig::folds`.
    pub cross_validated: Option<f64>,
}

/// What `evaluate` needs of a trained model.
trait Scorer {
    /// Whether confidences are probabilities, so their deciles mean
    /// something.
    const PROBABILITIES: bool;
    fn score<'a>(&'a self, text: &str) -> Prediction<'a>;
    fn intent_count(&self) -> usize;
}

/// The top intent, its score and its lead over the runner-up.
#[derive(Debug, Clone, Copy)]
struct Prediction<'a> {
    intent: &'a str,
    confidence: f32,
    margin: f32,
}

impl Scorer for Classifier {
    const PROBABILITIES: bool = true;
    fn score<'a>(&'a self, text: &str) -> Prediction<'a> {
        let (intent, confidence, margin) = self.predict_top_margin(text);
        Prediction {
            intent,
            confidence,
            margin,
        }
    }
    fn intent_count(&self) -> usize {
        self.intents().len()
    }
}

impl Scorer for Baseline {
    const PROBABILITIES: bool = false;
    fn score<'a>(&'a self, text: &str) -> Prediction<'a> {
        let (intent, confidence, margin) = self.predict_top_margin(text);
        Prediction {
            intent,
            confidence,
            margin,
        }
    }
    fn intent_count(&self) -> usize {
        self.intents().len()
    }
}

/// Trains colloquy's classifier on `train` and scores `test`, where
/// examples labelled `oos` are out of scope.
pub fn evaluate(
    train: &[(String, String)],
    test: &[(String, String)],
    cfg: &EvalConfig,
) -> Result<EvalReport, NluError> {
    check_training(train)?;
    let started = Instant::now();
    let model = Classifier::train(train, &cfg.train)?;
    measure(
        (&model, Model::Colloquy),
        started.elapsed().as_secs_f64(),
        train,
        test,
        cfg,
    )
}

/// `evaluate` for the TF-IDF + linear SVM reference (`cfg.train` does
/// not apply to it).
pub fn evaluate_baseline(
    train: &[(String, String)],
    test: &[(String, String)],
    cfg: &EvalConfig,
) -> Result<EvalReport, NluError> {
    check_training(train)?;
    let started = Instant::now();
    let model = Baseline::train(train)?;
    measure(
        (&model, Model::Baseline),
        started.elapsed().as_secs_f64(),
        train,
        test,
        cfg,
    )
}

/// The models `cross_validate` can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// colloquy's classifier, with `cfg.train`.
    Colloquy,
    /// The TF-IDF + linear SVM reference.
    Baseline,
}

/// Top-1 accuracy (every answer accepted) of `model` in `folds`-fold
/// cross-validation on `examples`: each example is held out once, from a
/// model trained on the other folds. A fixed test split of a few hundred
/// examples decides a comparison by which examples it happens to hold
/// (SNIPS's 700 test examples put colloquy 3 behind the baseline, while
/// its training set, cross-validated, puts colloquy ahead), so the
/// benchmark prints both. Folds are drawn by a fixed hash of each
/// example's position: the same data always gives the same folds.
pub fn cross_validate(
    examples: &[(String, String)],
    folds: usize,
    model: Model,
    cfg: &TrainConfig,
) -> Result<f64, NluError> {
    check_training(examples)?;
    if folds < 2 || folds > examples.len() {
        return Err(NluError::InvalidConfig(
            "cross-validation needs at least 2 folds and no more than examples",
        ));
    }
    // Fibonacci hashing spreads consecutive positions (data sets often
    // come sorted by intent) evenly over the folds.
    let fold_of =
        |i: usize| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % folds;
    let mut right = 0;
    for fold in 0..folds {
        let (held_out, train): (Vec<_>, Vec<_>) = examples
            .iter()
            .enumerate()
            .partition(|&(i, _)| fold_of(i) == fold);
        let train: Vec<(String, String)> = train.into_iter().map(|(_, e)| e.clone()).collect();
        if train.is_empty() {
            return Err(NluError::NoExamples);
        }
        right += match model {
            Model::Colloquy => top_right(&Classifier::train(&train, cfg)?, &held_out),
            Model::Baseline => top_right(&Baseline::train(&train)?, &held_out),
        };
    }
    Ok(ratio(right, examples.len()))
}

/// How many of `examples` get their own intent as the top answer.
fn top_right<M: Scorer>(model: &M, examples: &[(usize, &(String, String))]) -> usize {
    examples
        .iter()
        .filter(|(_, (text, intent))| model.score(text).intent == intent)
        .count()
}

fn check_training(train: &[(String, String)]) -> Result<(), NluError> {
    if train.iter().any(|(_, intent)| intent == OOS) {
        return Err(NluError::OosInTraining);
    }
    Ok(())
}

/// Scores `test` on `model`, trained on `train`; `which` says which kind
/// it is, to cross-validate the same kind.
fn measure<M: Scorer>(
    (model, which): (&M, Model),
    train_seconds: f64,
    train: &[(String, String)],
    test: &[(String, String)],
    cfg: &EvalConfig,
) -> Result<EvalReport, NluError> {
    let (fallback, threshold_source) = match cfg.threshold {
        Some(threshold) => (
            Fallback {
                threshold,
                margin: cfg.margin.unwrap_or(0.0),
            },
            "config",
        ),
        None => match choose_fallback(model, &cfg.val) {
            Some(f) => (f, "val"),
            None => (
                Fallback {
                    threshold: DEFAULT_THRESHOLD,
                    margin: 0.0,
                },
                "default",
            ),
        },
    };

    let started = Instant::now();
    let passes = cfg.timing_passes.max(1);
    let mut predictions = Vec::with_capacity(test.len());
    for pass in 0..passes {
        for (text, _) in test {
            let prediction = model.score(text);
            if pass == 0 {
                predictions.push(prediction);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let scores = Scores::count(test, &predictions, fallback);
    let cross_validated = cfg
        .folds
        .map(|folds| cross_validate(train, folds, which, &cfg.train))
        .transpose()?;
    Ok(EvalReport {
        train_examples: train.len(),
        test_examples: test.len(),
        intents: model.intent_count(),
        in_scope_accuracy: ratio(scores.in_scope_correct, scores.in_scope),
        oos_recall: (scores.oos > 0).then(|| ratio(scores.oos_rejected, scores.oos)),
        oos_precision: (scores.oos > 0).then(|| ratio(scores.oos_rejected, scores.rejected)),
        handled: ratio(
            scores.in_scope_correct + scores.oos_rejected,
            scores.in_scope + scores.oos,
        ),
        threshold: fallback.threshold,
        margin: fallback.margin,
        threshold_source,
        train_seconds,
        classifications_per_second: (passes * test.len()) as f64 / elapsed.max(1e-9),
        confidence_deciles: M::PROBABILITIES.then(|| ConfidenceDeciles::count(test, &predictions)),
        cross_validated,
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
    fn count(
        examples: &[(String, String)],
        predictions: &[Prediction<'_>],
        fallback: Fallback,
    ) -> Scores {
        let mut s = Scores {
            in_scope: 0,
            in_scope_correct: 0,
            oos: 0,
            oos_rejected: 0,
            rejected: 0,
        };
        for ((_, label), p) in examples.iter().zip(predictions) {
            let accepted = fallback.accepts(p.confidence, p.margin);
            s.rejected += usize::from(!accepted);
            if label == OOS {
                s.oos += 1;
                s.oos_rejected += usize::from(!accepted);
            } else {
                s.in_scope += 1;
                s.in_scope_correct += usize::from(accepted && p.intent == label);
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

/// The threshold and margin under which most of `val` is handled
/// correctly: in-scope examples accepted with the right intent plus
/// out-of-scope examples rejected, every example counting once. Margins
/// are tried at 0 and at every twentieth quantile of `val`'s margins; ties
/// go to the lower margin, then the lower threshold. `None` if `val` lacks
/// either kind of example.
fn choose_fallback<M: Scorer>(model: &M, val: &[(String, String)]) -> Option<Fallback> {
    let oos = val.iter().filter(|(_, intent)| intent == OOS).count();
    if oos == 0 || oos == val.len() {
        return None;
    }
    let predictions: Vec<Prediction<'_>> = val.iter().map(|(text, _)| model.score(text)).collect();
    let mut margins: Vec<f32> = predictions.iter().map(|p| p.margin).collect();
    margins.sort_by(f32::total_cmp);
    let mut candidates: Vec<f32> = (0..20)
        .map(|q| margins[q * (margins.len() - 1) / 20])
        .filter(|&m| m > 0.0)
        .collect();
    candidates.insert(0, 0.0);
    candidates.dedup();
    // Sweep thresholds upwards over examples sorted by confidence: at
    // each one, handled = out-of-scope rejected (by margin, or below the
    // threshold) + right answers that clear both.
    let mut order: Vec<usize> = (0..val.len()).collect();
    order.sort_by(|&a, &b| {
        predictions[a]
            .confidence
            .total_cmp(&predictions[b].confidence)
    });
    let is_oos: Vec<bool> = val.iter().map(|(_, intent)| intent == OOS).collect();
    let correct: Vec<bool> = val
        .iter()
        .zip(&predictions)
        .map(|((_, intent), p)| p.intent == intent)
        .collect();
    let mut best: Option<(usize, Fallback)> = None;
    for &margin in &candidates {
        let eligible = |i: usize| predictions[i].margin >= margin;
        let mut oos_rejected = (0..val.len())
            .filter(|&i| is_oos[i] && !eligible(i))
            .count();
        let mut correct_accepted = (0..val.len())
            .filter(|&i| !is_oos[i] && correct[i] && eligible(i))
            .count();
        let mut i = 0;
        while i < order.len() {
            let threshold = predictions[order[i]].confidence;
            let handled = oos_rejected + correct_accepted;
            if best.is_none_or(|(b, _)| handled > b) {
                best = Some((handled, Fallback { threshold, margin }));
            }
            // Raising the threshold past this confidence rejects all
            // examples that have it.
            while i < order.len() && predictions[order[i]].confidence == threshold {
                let e = order[i];
                if eligible(e) {
                    oos_rejected += usize::from(is_oos[e]);
                    correct_accepted -= usize::from(!is_oos[e] && correct[e]);
                }
                i += 1;
            }
        }
    }
    best.map(|(_, f)| f)
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

    #[test]
    fn cross_validation_tests_each_example_on_a_model_that_never_saw_it() {
        let cfg = TrainConfig {
            min_updates: 500,
            ..TrainConfig::few_shot()
        };
        // Each held-out example shares words with its intent's others.
        let data = pairs(&[
            ("hello there", "greet"),
            ("hello friend", "greet"),
            ("hi there friend", "greet"),
            ("hi friend", "greet"),
            ("hello hi", "greet"),
            ("hi there", "greet"),
            ("where is my order", "track"),
            ("where is my parcel", "track"),
            ("track my order", "track"),
            ("track my parcel", "track"),
            ("my order status", "track"),
            ("my parcel status", "track"),
        ]);
        for model in [Model::Colloquy, Model::Baseline] {
            let accuracy = cross_validate(&data, 3, model, &cfg).unwrap();
            assert!(accuracy >= 0.75, "{model:?}: {accuracy}");
            assert_eq!(cross_validate(&data, 3, model, &cfg).unwrap(), accuracy);
        }
        // Every text its own made-up word: a model that had seen the
        // held-out examples would get them all right; one that had not
        // can only guess.
        let words: Vec<(String, String)> = (0..12)
            .map(|i| (format!("zq{i}x{}", i * 7), ["a", "b"][i % 2].to_string()))
            .collect();
        for model in [Model::Colloquy, Model::Baseline] {
            let accuracy = cross_validate(&words, 3, model, &cfg).unwrap();
            assert!(accuracy <= 0.75, "{model:?}: {accuracy}");
        }
        for folds in [0, 1, data.len() + 1] {
            assert!(matches!(
                cross_validate(&data, folds, Model::Colloquy, &cfg),
                Err(NluError::InvalidConfig(_))
            ));
        }
        let mut with_oos = data.clone();
        with_oos.push(("what is the weather".into(), OOS.into()));
        assert_eq!(
            cross_validate(&with_oos, 3, Model::Baseline, &cfg),
            Err(NluError::OosInTraining)
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
        assert_eq!(report.handled, 1.0);
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
        assert_eq!(report.handled, 0.0);
        let with_oos = pairs(&[
            ("hello", "greet"),
            ("where is my order", "track"),
            ("what is the capital of peru", OOS),
        ]);
        let report = evaluate(&toy_train(), &with_oos, &fixed).unwrap();
        assert_eq!(report.handled, 1.0 / 3.0, "only the out-of-scope one");

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
    fn baseline_evaluates_side_by_side() {
        let test = pairs(&[("hello there", "greet"), ("track my order", "track")]);
        let cfg = EvalConfig {
            threshold: Some(f32::NEG_INFINITY),
            ..EvalConfig::default()
        };
        let report = evaluate_baseline(&toy_train(), &test, &cfg).unwrap();
        assert_eq!(report.in_scope_accuracy, 1.0);
        assert_eq!(report.confidence_deciles, None, "decision values");
        let report = evaluate(&toy_train(), &test, &cfg).unwrap();
        let deciles = report.confidence_deciles.unwrap();
        assert_eq!(deciles.correct.iter().sum::<usize>(), 2);
        assert_eq!(deciles.wrong.iter().sum::<usize>(), 0);
        assert_eq!(report.cross_validated, None, "not asked for");
        // Asked for, each report cross-validates its own kind of model.
        let folds = EvalConfig {
            folds: Some(2),
            ..cfg.clone()
        };
        for (report, model) in [
            (evaluate(&toy_train(), &test, &folds), Model::Colloquy),
            (
                evaluate_baseline(&toy_train(), &test, &folds),
                Model::Baseline,
            ),
        ] {
            let expected = cross_validate(&toy_train(), 2, model, &folds.train).unwrap();
            assert_eq!(report.unwrap().cross_validated, Some(expected), "{model:?}");
        }
    }

    #[test]
    fn a_margin_is_chosen_when_it_rejects_more_out_of_scope() {
        // Out-of-scope examples sure of themselves but tied: only the
        // margin separates them from the right answers.
        struct Fixed(Vec<(&'static str, f32, f32)>);
        impl Scorer for Fixed {
            const PROBABILITIES: bool = true;
            fn score<'a>(&'a self, text: &str) -> Prediction<'a> {
                let i: usize = text.parse().unwrap();
                let (intent, confidence, margin) = self.0[i];
                Prediction {
                    intent,
                    confidence,
                    margin,
                }
            }
            fn intent_count(&self) -> usize {
                2
            }
        }
        let model = Fixed(vec![
            ("greet", 0.9, 0.8),
            ("track", 0.6, 0.5),
            ("greet", 0.8, 0.05),
            ("track", 0.7, 0.02),
        ]);
        let val = pairs(&[("0", "greet"), ("1", "track"), ("2", OOS), ("3", OOS)]);
        let fallback = choose_fallback(&model, &val).unwrap();
        assert!(
            fallback.margin > 0.05 && fallback.margin <= 0.5,
            "{fallback:?}"
        );
        assert!(fallback.threshold <= 0.6, "{fallback:?}");
        assert_eq!(choose_fallback(&model, &val[..2]), None);
    }

    #[test]
    fn oos_in_training_is_an_error() {
        let mut train = toy_train();
        train.push(("blah".into(), OOS.into()));
        let err = evaluate(&train, &toy_train(), &EvalConfig::default()).unwrap_err();
        assert_eq!(err, NluError::OosInTraining);
    }
}
