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
    /// no intent. Training takes milliseconds for a bot with a few dozen
    /// examples. A bot with a single intent still gets meaningful
    /// confidences: how much of the message its examples cover (see
    /// `classifier`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_core::Value;

    fn intents(data: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        data.iter()
            .map(|(intent, texts)| {
                (
                    intent.to_string(),
                    texts.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn shop() -> BotNlu {
        let entities = BTreeMap::from([(
            "size".to_string(),
            EntitySpec {
                regex: Some(r"([0-9一二三四五六七八九十两]+)\s*(?:码|号)".into()),
                group: None,
                lookup: None,
                builtin: None,
                value_type: Some("int".into()),
            },
        )]);
        let intents = intents(&[
            ("greet", &["你好", "您好", "在吗", "哈喽", "有人吗"]),
            ("thanks", &["谢谢", "多谢", "谢谢你", "感谢"]),
            (
                "ask_stock",
                &[
                    "星云跑鞋有39码吗",
                    "还有40码的吗",
                    "有没有42码",
                    "这款还有货吗",
                    "还有库存吗",
                ],
            ),
            (
                "order_status",
                &["我的订单到哪了", "查一下订单", "快递到哪里了", "发货了吗"],
            ),
        ]);
        BotNlu::train(&intents, &entities, 0.4).unwrap()
    }

    #[test]
    fn parses_intent_and_entities() {
        let result = shop().parse("ＸＸ还有三十九码吗？");
        assert_eq!(result.intent.as_deref(), Some("ask_stock"));
        assert_eq!(result.confidence, result.intents[0].confidence);
        assert!(result.intents.len() == 4);
        let size: Vec<&Value> = result
            .entities
            .iter()
            .filter(|m| m.entity == "size")
            .map(|m| &m.value)
            .collect();
        assert_eq!(size, vec![&Value::Int(39)]);
        // Offsets refer to the normalised text: full-width letters became ASCII.
        assert_eq!((result.entities[0].start, result.entities[0].end), (4, 7));
    }

    #[test]
    fn below_threshold_no_intent_but_still_entities() {
        let result = shop().parse("今天天气不错 42");
        assert_eq!(result.intent, None, "{result:?}");
        assert!(result.confidence < 0.4);
        assert_eq!(result.entities[0].entity, "number");
        assert_eq!(result.entities[0].value, Value::Int(42));
    }

    #[test]
    fn top_five_at_most() {
        let many: Vec<(String, Vec<String>)> = (0..8)
            .map(|i| (format!("intent{i}"), vec![format!("example number {i}")]))
            .collect();
        let nlu = BotNlu::train(&many, &BTreeMap::new(), 0.5).unwrap();
        assert_eq!(nlu.parse("example").intents.len(), 5);
    }

    #[test]
    fn bot_without_intents_extracts_entities() {
        let nlu = BotNlu::train(&[], &BTreeMap::new(), 0.5).unwrap();
        let result = nlu.parse("我要三双");
        assert_eq!(
            (result.intent, result.confidence, result.intents.len()),
            (None, 0.0, 0)
        );
        assert_eq!(result.entities[0].value, Value::Int(3));
    }

    #[test]
    fn intent_without_examples_is_an_error() {
        let err = BotNlu::train(
            &intents(&[("greet", &["hi"]), ("empty", &[])]),
            &BTreeMap::new(),
            0.5,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "intent `empty` has no examples");
    }
}
