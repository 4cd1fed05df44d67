//! Intent classifier: TF-IDF weighted hashed features (see `tokenize`) fed
//! to a multinomial logistic regression trained with row-wise Adagrad.

use crate::tokenize;
use crate::{normalize, NluError};
use colloquy_core::IntentScore;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Training hyper-parameters. The defaults are tuned on CLINC150's
/// validation set and work unchanged for bots with a handful of examples.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Small sets get more epochs until they see at least this many updates.
    pub min_updates: usize,
    /// Adagrad's base step size.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
    /// Seeds the shuffling between epochs; the same seed, examples and
    /// config always give the same model.
    pub seed: u64,
    /// Divides the logits at prediction time.
    pub temperature: f32,
    /// Logit of an implicit "none of these" outcome that has no examples
    /// and no weights.
    pub background_logit: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            min_updates: 20_000,
            learning_rate: 0.5,
            l2: 1e-5,
            seed: 0x5eed,
            temperature: 1.0,
            background_logit: f32::NEG_INFINITY,
        }
    }
}

/// Feature hashes from `tokenize` are already well mixed; hashing them
/// again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 feature hashes are used as keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FeatureRows = HashMap<u64, u32, BuildHasherDefault<PassThrough>>;

/// A trained intent classifier. Only features seen in training get a
/// weight row, so memory grows with the training set, not a hash space.
pub struct Classifier {
    intents: Vec<String>,
    rows: FeatureRows,
    idf: Vec<f32>,
    /// Weight of a feature never seen in training: it has no row, but it
    /// still counts in the length of the vector, so text made mostly of
    /// unknown words scores low everywhere.
    unseen_idf: f32,
    /// `rows × intents`, row-major.
    weights: Vec<f32>,
    bias: Vec<f32>,
    temperature: f32,
    background_logit: f32,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("intents", &self.intents)
            .field("features", &self.rows.len())
            .finish_non_exhaustive()
    }
}

/// SplitMix64: a tiny deterministic generator for shuffling.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

type Sparse = Vec<(u32, f32)>;

impl Classifier {
    /// Trains on `(text, intent)` pairs; texts are normalised here.
    pub fn train(examples: &[(String, String)], cfg: &TrainConfig) -> Result<Classifier, NluError> {
        if examples.is_empty() {
            return Err(NluError::NoExamples);
        }
        if cfg.epochs == 0 || cfg.learning_rate <= 0.0 || cfg.l2 < 0.0 || cfg.temperature <= 0.0 {
            return Err(NluError::InvalidConfig(
                "epochs, learning_rate and temperature must be positive and l2 not negative",
            ));
        }
        let intents: Vec<String> = examples
            .iter()
            .map(|(_, intent)| intent.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let labels: Vec<usize> = examples
            .iter()
            .map(|(_, intent)| intents.binary_search(intent).unwrap_or_default())
            .collect();

        let mut rows = FeatureRows::default();
        let mut df: Vec<u32> = Vec::new();
        for (text, _) in examples {
            let mut features = Vec::new();
            tokenize::features(&normalize(text), &mut features);
            features.sort_unstable();
            features.dedup();
            for &f in &features {
                let next = rows.len() as u32;
                let row = *rows.entry(f).or_insert(next);
                if row == next {
                    df.push(0);
                }
                df[row as usize] += 1;
            }
        }
        let n = examples.len() as f32;
        let mut model = Classifier {
            idf: df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect(),
            unseen_idf: (1.0 + n).ln() + 1.0,
            weights: vec![0.0; rows.len() * intents.len()],
            bias: vec![0.0; intents.len()],
            rows,
            intents,
            temperature: 1.0,
            background_logit: cfg.background_logit,
        };
        let vectors: Vec<Sparse> = examples
            .iter()
            .map(|(text, _)| model.vectorize(&normalize(text)))
            .collect();
        model.fit(&vectors, &labels, cfg);
        model.temperature = cfg.temperature;
        Ok(model)
    }

    fn fit(&mut self, vectors: &[Sparse], labels: &[usize], cfg: &TrainConfig) {
        let k = self.intents.len();
        let epochs = cfg.epochs.max(cfg.min_updates.div_ceil(vectors.len()));
        let mut row_sq = vec![0.0f32; self.idf.len()];
        let mut bias_sq = vec![0.0f32; k];
        let mut order: Vec<usize> = (0..vectors.len()).collect();
        let mut rng = SplitMix(cfg.seed);
        let mut probs = vec![0.0f32; k];
        for _ in 0..epochs {
            rng.shuffle(&mut order);
            for &e in &order {
                self.logits(&vectors[e], &mut probs);
                self.softmax(&mut probs);
                probs[labels[e]] -= 1.0;
                let grad = &probs;
                for (c, g) in grad.iter().enumerate() {
                    bias_sq[c] += g * g;
                    self.bias[c] -= cfg.learning_rate * g / (bias_sq[c].sqrt() + 1e-6);
                }
                for &(row, x) in &vectors[e] {
                    let r = row as usize;
                    let w = &mut self.weights[r * k..(r + 1) * k];
                    let sq: f32 = w
                        .iter()
                        .zip(grad)
                        .map(|(w, g)| {
                            let d = x * g + cfg.l2 * w;
                            d * d
                        })
                        .sum();
                    row_sq[r] += sq / k as f32;
                    let step = cfg.learning_rate / (row_sq[r].sqrt() + 1e-6);
                    for (w, g) in w.iter_mut().zip(grad) {
                        *w -= step * (x * g + cfg.l2 * *w);
                    }
                }
            }
        }
    }

    /// Sublinear TF times IDF, scaled to unit length.
    fn vectorize(&self, normalised: &str) -> Sparse {
        let mut features = Vec::with_capacity(4 * normalised.len());
        tokenize::features(normalised, &mut features);
        features.sort_unstable();
        let mut vector = Vec::with_capacity(features.len());
        let mut norm_sq = 0.0f32;
        for run in features.chunk_by(|a, b| a == b) {
            let tf = 1.0 + (run.len() as f32).ln();
            let value = match self.rows.get(&run[0]) {
                Some(&row) => {
                    let value = tf * self.idf[row as usize];
                    vector.push((row, value));
                    value
                }
                None => tf * self.unseen_idf,
            };
            norm_sq += value * value;
        }
        if norm_sq > 0.0 {
            let scale = norm_sq.sqrt().recip();
            for (_, value) in &mut vector {
                *value *= scale;
            }
        }
        vector.sort_unstable_by_key(|&(row, _)| row);
        vector
    }

    fn logits(&self, vector: &Sparse, out: &mut [f32]) {
        let k = self.intents.len();
        out.copy_from_slice(&self.bias);
        for &(row, x) in vector {
            let r = row as usize;
            for (o, w) in out.iter_mut().zip(&self.weights[r * k..(r + 1) * k]) {
                *o += x * w;
            }
        }
    }

    /// Turns logits into probabilities in place; with a finite background
    /// logit they sum to less than one.
    fn softmax(&self, z: &mut [f32]) {
        let max = z.iter().copied().fold(self.background_logit, f32::max);
        let mut sum = (self.background_logit - max).exp();
        for v in z.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in z.iter_mut() {
            *v /= sum;
        }
    }

    fn probabilities(&self, normalised: &str) -> Vec<f32> {
        let mut z = vec![0.0; self.intents.len()];
        self.logits(&self.vectorize(normalised), &mut z);
        for v in &mut z {
            *v /= self.temperature;
        }
        self.softmax(&mut z);
        z
    }

    /// All intents ranked by confidence, best first.
    pub fn predict(&self, text: &str) -> Vec<IntentScore> {
        self.rank(&normalize(text))
    }

    pub(crate) fn rank(&self, normalised: &str) -> Vec<IntentScore> {
        let mut scores: Vec<IntentScore> = self
            .probabilities(normalised)
            .into_iter()
            .zip(&self.intents)
            .map(|(confidence, name)| IntentScore { name: name.clone(), confidence })
            .collect();
        // Stable sort: ties keep the (alphabetical) intent order.
        scores.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        scores
    }

    /// The best intent and its confidence, without building the ranking.
    pub fn predict_top(&self, text: &str) -> (&str, f32) {
        let probs = self.probabilities(&normalize(text));
        let (best, confidence) = probs
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
        (&self.intents[best], confidence)
    }

    /// The intents this classifier knows, in alphabetical order.
    pub fn intents(&self) -> &[String] {
        &self.intents
    }
}
