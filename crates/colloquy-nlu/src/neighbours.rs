//! Nearest-example similarity: for each intent, the highest cosine
//! between a message and any one of its training examples, on the
//! classifier's own TF-IDF features (words, word bigrams and sub-words for
//! English, character n-grams for Chinese; see `tokenize`).
//!
//! A bot has ten or twenty examples per intent. A network trained on so
//! few learns which features separate the intents it was shown, and a
//! paraphrase that shares a word or two with one example but little with
//! the rest gets a flat softmax. The nearest example does not average the
//! evidence away: "heya" is closest to "hey there", "still open?" to "are
//! you open now". It is the classic few-shot classifier, and `BotNlu`
//! combines it with the network.

use crate::classifier::top_two;
use crate::classifier::{Classifier, Vector};
use crate::normalize;

/// Training examples as an inverted index over the classifier's feature
/// rows, so that scoring a message touches only the examples that share a
/// feature with it.
#[derive(Debug)]
pub(crate) struct Neighbours {
    /// Per feature row: `(example, weight)` for every example that has it.
    postings: Vec<Vec<(u32, f32)>>,
    /// Per example: its intent, an index into `Classifier::intents`.
    labels: Vec<u32>,
    intents: usize,
}

impl Neighbours {
    /// Indexes `examples` (`(text, intent)`), which must be the
    /// ones `classifier` was trained on, so every feature has a row.
    pub(crate) fn new(classifier: &Classifier, examples: &[(String, String)]) -> Neighbours {
        let mut postings = vec![Vec::new(); classifier.feature_rows()];
        let mut labels = Vec::with_capacity(examples.len());
        for (text, intent) in examples {
            let Ok(label) = classifier.intents().binary_search(intent) else {
                continue;
            };
            labels.push(label as u32);
            let id = (labels.len() - 1) as u32;
            for &(row, weight) in &classifier.vectorize(&normalize(text)).entries {
                postings[row as usize].push((id, weight));
            }
        }
        Neighbours {
            postings,
            labels,
            intents: classifier.intents().len(),
        }
    }

    /// Per intent (in the order of `Classifier::intents`), the cosine
    /// between `vector` and the intent's closest example, in `[0, 1]`.
    /// Features the classifier never saw count in the message's length,
    /// so a message half made of unknown words is at most 0.7 similar to
    /// anything.
    pub(crate) fn similarities(&self, vector: &Vector) -> Vec<f32> {
        let mut dots = vec![0.0f32; self.labels.len()];
        for &(row, x) in &vector.entries {
            for &(example, w) in &self.postings[row as usize] {
                dots[example as usize] += x * w;
            }
        }
        let mut best = vec![0.0f32; self.intents];
        for (dot, &label) in dots.iter().zip(&self.labels) {
            let b = &mut best[label as usize];
            *b = b.max(dot.min(1.0));
        }
        best
    }
}

/// When a bot acts on its top intent although the network's confidence is
/// below the bot's threshold: when two different views of the message
/// agree on it, each clearly. The network's top intent must reach
/// `floor` times the threshold and lead the runner-up `net_ratio` times
/// over; the intent's nearest example must be at least `min_similarity`
/// close and `similarity_ratio` times closer than any other intent's.
///
/// Below the threshold a paraphrase and an unrelated message look alike
/// to the network: both reuse a word or two of the examples, so both have
/// low coverage. What tells them apart is whether the evidence points one
/// way. "r u open today" is nearest to "are you open now" and nothing else
/// is close; "my kid is obsessed with pepperoni lately" shares a word with
/// an order and little with anything, and stays a fallback. A near tie in
/// either view is a fallback: a question back costs less than acting on a
/// misunderstanding.
///
/// The defaults were chosen so that out-of-scope messages (CLINC150's
/// out-of-scope and other-domain validation queries against the pizza
/// shop, CAIS's against the shoe store) are accepted no more often than
/// with the bare threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SecondOpinion {
    pub floor: f32,
    pub net_ratio: f32,
    pub min_similarity: f32,
    pub similarity_ratio: f32,
}

impl Default for SecondOpinion {
    fn default() -> Self {
        SecondOpinion {
            floor: 0.6,
            net_ratio: 2.0,
            min_similarity: 0.25,
            similarity_ratio: 3.0,
        }
    }
}

impl SecondOpinion {
    /// `net` and `similarity` are per intent, in the same order.
    pub(crate) fn accepts(&self, threshold: f32, net: &[f32], similarity: &[f32]) -> bool {
        if net.is_empty() || net.len() != similarity.len() {
            return false;
        }
        let (best, _) = top_two(net);
        let (nearest, _) = top_two(similarity);
        let runner_up = |scores: &[f32]| {
            scores
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != best)
                .map(|(_, &s)| s)
                .fold(0.0f32, f32::max)
        };
        best == nearest
            && net[best] >= self.floor * threshold
            && net[best] >= self.net_ratio * runner_up(net)
            && similarity[best] >= self.min_similarity
            && similarity[best] >= self.similarity_ratio * runner_up(similarity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainConfig;

    #[test]
    fn second_opinion_accepts_a_clear_winner_below_threshold() {
        let rule = SecondOpinion::default();
        // 0.3 is below 0.4 but above 0.6 × 0.4, far ahead in both views.
        assert!(rule.accepts(0.4, &[0.3, 0.05, 0.0], &[0.4, 0.1, 0.05]));
        // A near tie in the network, or in the nearest examples.
        assert!(!rule.accepts(0.4, &[0.3, 0.2, 0.0], &[0.4, 0.1, 0.05]));
        assert!(!rule.accepts(0.4, &[0.3, 0.05, 0.0], &[0.4, 0.3, 0.05]));
        // The two views disagree.
        assert!(!rule.accepts(0.4, &[0.3, 0.05, 0.0], &[0.1, 0.4, 0.05]));
        // Too little confidence, or no example close enough.
        assert!(!rule.accepts(0.4, &[0.2, 0.01, 0.0], &[0.4, 0.1, 0.05]));
        assert!(!rule.accepts(0.4, &[0.3, 0.05, 0.0], &[0.2, 0.01, 0.0]));
        // A single intent: nothing to disagree with, still the floors.
        assert!(rule.accepts(0.4, &[0.3], &[0.3]));
        assert!(!rule.accepts(0.4, &[0.3], &[0.1]));
        assert!(!rule.accepts(0.4, &[], &[]));
    }

    #[test]
    fn nearest_example_similarity_per_intent() {
        let examples: Vec<(String, String)> = [
            ("are you open now", "hours"),
            ("when do you close", "hours"),
            ("where is my order", "track"),
        ]
        .iter()
        .map(|&(t, i)| (t.to_string(), i.to_string()))
        .collect();
        let model = Classifier::train(
            &examples,
            &TrainConfig {
                min_updates: 100,
                ..TrainConfig::few_shot()
            },
        )
        .unwrap();
        let index = Neighbours::new(&model, &examples);
        let of = |text: &str| index.similarities(&model.vectorize(&normalize(text)));
        // An example itself is 1 similar to its intent.
        let exact = of("where is my order");
        assert!((exact[1] - 1.0).abs() < 1e-4, "{exact:?}");
        // A paraphrase is nearest to its intent; unknown words lower it.
        let open = of("r u open today");
        assert!(
            open[0] > 0.15 && open[0] < 1.0 && open[1] < open[0] / 3.0,
            "{open:?}"
        );
        assert_eq!(of("qwzx"), vec![0.0, 0.0]);
    }
}
