//! The reference baseline the intent benchmark prints beside colloquy's
//! classifier: TF-IDF and a one-vs-rest linear SVM, as scikit-learn's
//! `TfidfVectorizer` + `LinearSVC` with their defaults. It exists so that
//! every benchmark run measures the claim "ahead of the classic baseline"
//! on the same data, machine and build; bots never use it.
//!
//! Features follow scikit-learn: for English, lowercased words of two or
//! more word characters (its default `token_pattern`) as unigrams and
//! bigrams; for text with CJK characters, character 1- to 3-grams (the
//! `char` analyzer). Raw term counts times smoothed IDF, L2-normalised.
//! The SVM is liblinear's L2-regularised squared hinge loss solved in the
//! dual by coordinate descent (`LinearSVC(C=1)`), with the bias as an
//! extra constant feature that is regularised too, as liblinear does.

use crate::classifier::top_two;
use crate::tokenize::is_cjk;
use crate::{normalize, NluError};
use std::collections::{BTreeSet, HashMap};

/// Regularisation: scikit-learn's default `C`.
const C: f32 = 1.0;
/// Stop when the projected gradients span less than this (liblinear's
/// default for the dual solvers).
const EPSILON: f32 = 0.1;
const MAX_ITERATIONS: usize = 1000;

/// A sparse L2-normalised TF-IDF row: `(feature, value)`.
type Row = Vec<(u32, f32)>;

#[derive(Debug)]
pub struct Baseline {
    intents: Vec<String>,
    vocabulary: HashMap<String, u32>,
    idf: Vec<f32>,
    /// `features × intents`, feature-major, so scoring a message reads
    /// one contiguous run per feature it has.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// The terms of a normalised text, as strings, repeated as often as they
/// occur.
fn terms(text: &str) -> Vec<String> {
    if text.chars().any(is_cjk) {
        let chars: Vec<char> = text.chars().collect();
        (1..=3)
            .flat_map(|n| chars.windows(n).map(|g| g.iter().collect()))
            .collect()
    } else {
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|w| w.chars().count() >= 2)
            .collect();
        let bigrams = words.windows(2).map(|w| format!("{} {}", w[0], w[1]));
        words.iter().map(|w| w.to_string()).chain(bigrams).collect()
    }
}

impl Baseline {
    /// Trains on `(text, intent)` pairs; texts are normalised here.
    pub fn train(examples: &[(String, String)]) -> Result<Baseline, NluError> {
        if examples.is_empty() {
            return Err(NluError::NoExamples);
        }
        let intents: Vec<String> = examples
            .iter()
            .map(|(_, intent)| intent.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let term_lists: Vec<Vec<String>> = examples
            .iter()
            .map(|(text, _)| terms(&normalize(text)))
            .collect();
        let mut vocabulary = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        for list in &term_lists {
            let unique: BTreeSet<&String> = list.iter().collect();
            for term in unique {
                let next = vocabulary.len() as u32;
                let id = *vocabulary.entry(term.clone()).or_insert(next);
                if id == next {
                    df.push(0);
                }
                df[id as usize] += 1;
            }
        }
        let n = examples.len() as f32;
        let mut model = Baseline {
            idf: df
                .iter()
                .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
                .collect(),
            weights: Vec::new(),
            bias: Vec::new(),
            vocabulary,
            intents,
        };
        let rows: Vec<Row> = term_lists.iter().map(|t| model.row(t)).collect();
        let labels: Vec<usize> = examples
            .iter()
            .map(|(_, intent)| model.intents.binary_search(intent).unwrap_or_default())
            .collect();
        let (d, k) = (model.idf.len(), model.intents.len());
        model.weights = vec![0.0; d * k];
        model.bias = vec![0.0; k];
        for class in 0..k {
            let y: Vec<f32> = labels
                .iter()
                .map(|&l| if l == class { 1.0 } else { -1.0 })
                .collect();
            let (w, b) = svm_dual_cd(&rows, &y, d);
            for (feature, weight) in w.into_iter().enumerate() {
                model.weights[feature * k + class] = weight;
            }
            model.bias[class] = b;
        }
        Ok(model)
    }

    fn row(&self, terms: &[String]) -> Row {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for term in terms {
            if let Some(&id) = self.vocabulary.get(term) {
                *counts.entry(id).or_default() += 1.0;
            }
        }
        let mut row: Row = counts
            .into_iter()
            .map(|(id, tf)| (id, tf * self.idf[id as usize]))
            .collect();
        row.sort_unstable_by_key(|&(id, _)| id);
        let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut row {
                *v /= norm;
            }
        }
        row
    }

    /// The best intent, its SVM decision value (not a probability: it is
    /// around 1 for a typical training example and can be negative) and
    /// its lead over the runner-up's.
    pub fn predict_top_margin(&self, text: &str) -> (&str, f32, f32) {
        let k = self.intents.len();
        let mut scores = self.bias.clone();
        for (feature, x) in self.row(&terms(&normalize(text))) {
            let f = feature as usize;
            for (s, w) in scores.iter_mut().zip(&self.weights[f * k..(f + 1) * k]) {
                *s += x * w;
            }
        }
        let (best, margin) = top_two(&scores);
        (&self.intents[best], scores[best], margin)
    }

    pub fn intents(&self) -> &[String] {
        &self.intents
    }
}

/// One binary L2-loss SVM (labels ±1) by dual coordinate descent
/// (Hsieh et al., 2008), visiting examples in a fixed order so runs are
/// reproducible. Returns the weights and the bias.
fn svm_dual_cd(rows: &[Row], y: &[f32], features: usize) -> (Vec<f32>, f32) {
    let diag = 0.5 / C;
    let mut w = vec![0.0f32; features];
    let mut b = 0.0f32;
    let mut alpha = vec![0.0f32; rows.len()];
    // The constant bias feature adds 1 to every squared norm.
    let q: Vec<f32> = rows
        .iter()
        .map(|r| r.iter().map(|(_, v)| v * v).sum::<f32>() + 1.0 + diag)
        .collect();
    for _ in 0..MAX_ITERATIONS {
        let (mut max_pg, mut min_pg) = (f32::NEG_INFINITY, f32::INFINITY);
        for (i, row) in rows.iter().enumerate() {
            let margin = row.iter().map(|&(f, v)| w[f as usize] * v).sum::<f32>() + b;
            let g = y[i] * margin - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            max_pg = max_pg.max(pg);
            min_pg = min_pg.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / q[i]).max(0.0);
                let step = (alpha[i] - old) * y[i];
                for &(f, v) in row {
                    w[f as usize] += step * v;
                }
                b += step;
            }
        }
        if max_pg - min_pg < EPSILON {
            break;
        }
    }
    (w, b)
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
    fn svm_separates_a_separable_set() {
        // Feature 0 marks the positives, feature 1 the negatives.
        let rows: Vec<Row> = vec![
            vec![(0, 1.0)],
            vec![(0, 0.8), (2, 0.6)],
            vec![(1, 1.0)],
            vec![(1, 0.8), (2, 0.6)],
        ];
        let y = [1.0, 1.0, -1.0, -1.0];
        let (w, b) = svm_dual_cd(&rows, &y, 3);
        for (row, label) in rows.iter().zip(y) {
            let score = row.iter().map(|&(f, v)| w[f as usize] * v).sum::<f32>() + b;
            assert!(score * label > 0.0, "{row:?}: {score}");
        }
        assert!(w[0] > 0.0 && w[1] < 0.0, "{w:?}");
    }

    #[test]
    fn terms_follow_scikit_learn() {
        assert_eq!(
            terms("book a flight to paris"),
            [
                "book",
                "flight",
                "to",
                "paris",
                "book flight",
                "flight to",
                "to paris"
            ]
        );
        assert_eq!(terms("听歌"), ["听", "歌", "听歌"]);
    }

    #[test]
    fn classifies_in_both_languages() {
        let model = Baseline::train(&pairs(&[
            ("hello there", "greet"),
            ("good morning", "greet"),
            ("你好", "greet"),
            ("where is my order", "track"),
            ("track my package", "track"),
            ("我的快递到哪了", "track"),
        ]))
        .unwrap();
        assert_eq!(model.intents(), ["greet", "track"]);
        assert_eq!(model.predict_top_margin("hello").0, "greet");
        assert_eq!(model.predict_top_margin("where is my package").0, "track");
        assert_eq!(model.predict_top_margin("快递到了吗").0, "track");
        assert!(Baseline::train(&[]).is_err());
    }
}
