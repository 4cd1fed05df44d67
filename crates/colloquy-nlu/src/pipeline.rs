//! The NLU stage of a bot: classifier and entity extractor trained from
//! its definition, turning a message into an `NluResult`.

use crate::{normalize, Classifier, EntityExtractor, NluError, TrainConfig};
use colloquy_core::bot::spec::EntitySpec;
use colloquy_core::NluResult;
use std::collections::BTreeMap;

/// How many ranked intents an `NluResult` carries.
const RANKED: usize = 5;

#[derive(Debug)]
pub struct BotNlu {
    /// `None` for a bot without intents: it still extracts entities.
    classifier: Option<Classifier>,
    entities: EntityExtractor,
    threshold: f32,
}

impl BotNlu {
    /// Trains on `(intent, examples)`; every intent needs at least one
    /// example. `threshold` is the confidence below which `parse` reports
    /// no intent.
    pub fn train(
        intents: &[(String, Vec<String>)],
        entities: &BTreeMap<String, EntitySpec>,
        threshold: f32,
    ) -> Result<BotNlu, NluError> {
        if let Some((intent, _)) = intents.iter().find(|(_, examples)| examples.is_empty()) {
            return Err(NluError::IntentWithoutExamples(intent.clone()));
        }
        let examples: Vec<(String, String)> = intents
            .iter()
            .flat_map(|(intent, examples)| examples.iter().map(|e| (e.clone(), intent.clone())))
            .collect();
        let classifier = if examples.is_empty() {
            None
        } else {
            Some(Classifier::train(&examples, &TrainConfig::default())?)
        };
        Ok(BotNlu {
            classifier,
            entities: EntityExtractor::new(entities)?,
            threshold,
        })
    }

    pub fn parse(&self, text: &str) -> NluResult {
        let normalised = normalize(text);
        let mut intents = match &self.classifier {
            Some(classifier) => classifier.rank(&normalised),
            None => Vec::new(),
        };
        intents.truncate(RANKED);
        let confidence = intents.first().map_or(0.0, |top| top.confidence);
        NluResult {
            intent: intents
                .first()
                .filter(|top| top.confidence >= self.threshold)
                .map(|top| top.name.clone()),
            confidence,
            intents,
            entities: self.entities.extract(&normalised),
        }
    }
}
