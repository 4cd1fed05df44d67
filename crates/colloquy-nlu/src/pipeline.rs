//! The NLU stage of a bot: classifier and entity extractor trained from
//! its definition, turning a message into an `NluResult`.

use crate::classifier::top_two;
use crate::neighbours::{Neighbours, SecondOpinion};
use crate::numbers::{chinese_numeral, find_numbers};
use crate::{normalize, Classifier, EntityExtractor, NluError, Thesaurus, TrainConfig};
use colloquy_core::bot::spec::EntitySpec;
use colloquy_core::{IntentScore, NluResult};
use std::collections::{BTreeMap, BTreeSet};

/// How many ranked intents an `NluResult` carries.
const RANKED: usize = 5;

/// At most this many variants of one example from substituting lookup
/// values: enough for every model of a small catalogue, bounded so that a
/// bot with long lookup lists still trains in milliseconds.
const VARIANTS_PER_EXAMPLE: usize = 8;

/// The training set: every example, plus variants that teach the
/// classifier what the examples imply but cannot list. An example naming
/// a value of a lookup entity ("星云跑鞋有39码吗") gets the other values
/// and synonyms in its place (every model asked about the same way), and
/// one whose number is written in digits gets it in Chinese numerals, or
/// the other way round (三十九码 is said like 39码: the tokenizer folds
/// digit runs into one feature, but numerals are Chinese characters).
/// `BotNlu::train` trains on it; `colloquy nlu test` uses it to tell a
/// test case that is a training example word for word.
pub fn training_set(
    intents: &[(String, Vec<String>)],
    entities: &BTreeMap<String, EntitySpec>,
) -> Vec<(String, String)> {
    // Per lookup entity: (phrase, canonical) in table order.
    let lookups: Vec<Vec<(String, &str)>> = entities
        .values()
        .filter_map(|e| e.lookup.as_ref())
        .map(|table| {
            table
                .iter()
                .flat_map(|(canonical, synonyms)| {
                    std::iter::once(canonical)
                        .chain(synonyms)
                        .map(move |p| (normalize(p), canonical.as_str()))
                })
                .filter(|(p, _)| !p.is_empty())
                .collect()
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (intent, examples) in intents {
        let mut add = |text: &String| {
            if seen.insert((text.clone(), intent.clone())) {
                out.push((text.clone(), intent.clone()));
            }
        };
        examples.iter().for_each(&mut add);
        let per_example: Vec<Vec<String>> = examples
            .iter()
            .map(|example| {
                let text = normalize(example);
                let mut variants: Vec<String> = respelled_number(&text).into_iter().collect();
                for phrases in &lookups {
                    variants.extend(substituted(&text, phrases));
                }
                variants
            })
            .collect();
        // At most as many variants as examples, taken in turns across the
        // examples: an intent with many entity-laden examples must not
        // outweigh the others (its phrasing would win every close call,
        // "get me a human" becoming an order because "get me a pepperoni"
        // was said a dozen ways).
        let rounds = per_example.iter().map(Vec::len).max().unwrap_or(0);
        (0..rounds)
            .flat_map(|i| per_example.iter().filter_map(move |v| v.get(i)))
            .take(examples.len())
            .for_each(&mut add);
    }
    out
}

/// `text` with its longest phrase of one lookup entity replaced by the
/// phrases of the other values: their canonical names first, then their
/// synonyms, taking each value in turn so that a few variants still
/// cover every value.
fn substituted(text: &str, phrases: &[(String, &str)]) -> Vec<String> {
    let Some((found, canonical)) = phrases
        .iter()
        .filter(|(p, _)| text.contains(p.as_str()))
        .max_by_key(|(p, _)| p.chars().count())
    else {
        return Vec::new();
    };
    let mut by_value: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (phrase, value) in phrases.iter().filter(|(_, v)| v != canonical) {
        by_value.entry(value).or_default().push(phrase);
    }
    let rounds = by_value.values().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|i| by_value.values().filter_map(move |p| p.get(i)))
        .take(VARIANTS_PER_EXAMPLE)
        .map(|phrase| text.replacen(found.as_str(), phrase, 1))
        .collect()
}

/// `text` with its first whole number below 10 000 written the other way:
/// `39` as `三十九`, `三十九` as `39`.
fn respelled_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let (start, end, value) = find_numbers(text)
        .into_iter()
        .find(|&(_, _, n)| n.fract() == 0.0 && (0.0..10_000.0).contains(&n))?;
    let written: String = chars[start..end].iter().collect();
    let n = value as u32;
    let other = if written.chars().all(|c| c.is_ascii_digit()) {
        chinese_numeral(n)?
    } else if written.chars().any(|c| c.is_ascii_digit()) {
        return None;
    } else {
        n.to_string()
    };
    let before: String = chars[..start].iter().collect();
    let after: String = chars[end..].iter().collect();
    Some(format!("{before}{other}{after}"))
}

/// The classifier's ranking of `normalised` and whether its top intent is
/// accepted: at or above `threshold`, or below it when the nearest
/// examples agree with the network clearly (see `SecondOpinion`).
fn classify(
    classifier: &Classifier,
    neighbours: &Neighbours,
    threshold: f32,
    normalised: &str,
) -> (Vec<IntentScore>, bool) {
    let vector = classifier.vectorize(normalised);
    let net = classifier.confidences_of(&vector);
    let (best, _) = top_two(&net);
    let accepted = net[best] >= threshold
        || SecondOpinion::default().accepts(threshold, &net, &neighbours.similarities(&vector));
    let mut scores: Vec<IntentScore> = net
        .into_iter()
        .zip(classifier.intents())
        .map(|(confidence, name)| IntentScore {
            name: name.clone(),
            confidence,
        })
        .collect();
    // Stable: ties keep the alphabetical order of intents, and the first
    // is the `best` of `top_two`.
    scores.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    (scores, accepted)
}

#[derive(Debug)]
pub struct BotNlu {
    /// `None` for a bot without intents: it still extracts entities.
    classifier: Option<(Classifier, Neighbours)>,
    entities: EntityExtractor,
    threshold: f32,
}

impl BotNlu {
    /// Trains on `(intent, examples)`; every intent needs at least one
    /// example. Words of one `thesaurus` group count as alike (see
    /// `thesaurus`). `threshold` is the confidence below which `parse` reports
    /// no intent, unless the network and the nearest examples both point
    /// clearly at the same one (`neighbours::SecondOpinion`). Training takes milliseconds for a bot with a few dozen
    /// examples. A bot with a single intent still gets meaningful
    /// confidences: how much of the message its examples cover (see
    /// `classifier`).
    pub fn train(
        intents: &[(String, Vec<String>)],
        entities: &BTreeMap<String, EntitySpec>,
        thesaurus: &[Vec<String>],
        threshold: f32,
    ) -> Result<BotNlu, NluError> {
        let seed = TrainConfig::few_shot().seed;
        BotNlu::train_seeded(intents, entities, thesaurus, threshold, seed)
    }

    /// `train` with another seed for the network's initialisation and
    /// shuffling. The server always trains with the default one; a few
    /// others show how much of a test result is the luck of that draw
    /// (`colloquy nlu test --seeds`).
    pub fn train_seeded(
        intents: &[(String, Vec<String>)],
        entities: &BTreeMap<String, EntitySpec>,
        thesaurus: &[Vec<String>],
        threshold: f32,
        seed: u64,
    ) -> Result<BotNlu, NluError> {
        if let Some((intent, _)) = intents.iter().find(|(_, examples)| examples.is_empty()) {
            return Err(NluError::IntentWithoutExamples(intent.clone()));
        }
        let examples = training_set(intents, entities);
        let classifier = if examples.is_empty() {
            None
        } else {
            let classifier = Classifier::train_with(
                &examples,
                &TrainConfig {
                    seed,
                    ..TrainConfig::few_shot()
                },
                Thesaurus::new(thesaurus),
            )?;
            let neighbours = Neighbours::new(&classifier, &examples);
            Some((classifier, neighbours))
        };
        Ok(BotNlu {
            classifier,
            entities: EntityExtractor::new(entities)?,
            threshold,
        })
    }

    pub fn parse(&self, text: &str) -> NluResult {
        let normalised = normalize(text);
        let (mut intents, accepted) = match &self.classifier {
            Some((classifier, neighbours)) => {
                classify(classifier, neighbours, self.threshold, &normalised)
            }
            None => (Vec::new(), false),
        };
        intents.truncate(RANKED);
        let confidence = intents.first().map_or(0.0, |top| top.confidence);
        NluResult {
            intent: intents
                .first()
                .filter(|_| accepted)
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
        shop_with(&[])
    }

    fn shop_with(thesaurus: &[Vec<String>]) -> BotNlu {
        let entities = BTreeMap::from([
            (
                "size".to_string(),
                EntitySpec {
                    regex: Some(r"([0-9一二三四五六七八九十两]+)\s*(?:码|号)".into()),
                    group: None,
                    lookup: None,
                    builtin: None,
                    value_type: Some("int".into()),
                },
            ),
            (
                "model".to_string(),
                EntitySpec {
                    lookup: Some(BTreeMap::from([
                        ("星云跑鞋".to_string(), vec![]),
                        ("疾风板鞋".to_string(), vec![]),
                    ])),
                    ..EntitySpec::default()
                },
            ),
        ]);
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
        BotNlu::train(&intents, &entities, thesaurus, 0.4).unwrap()
    }

    #[test]
    fn thesaurus_lets_synonyms_stand_for_the_examples_words() {
        let groups = [
            vec!["发货".to_string(), "寄出".into(), "发出".into()],
            vec!["快递".to_string(), "快件".into(), "包裹".into()],
        ];
        let (without, with) = (shop(), shop_with(&groups));
        // Paraphrases of "发货了吗" and "快递到哪里了" in the groups' other
        // words: the examples' intent gains confidence.
        for text in ["包裹寄出了吗", "快件发出了吗", "寄出了吗"] {
            let (a, b) = (without.parse(text), with.parse(text));
            assert_eq!(b.intents[0].name, "order_status", "{text}: {b:?}");
            assert!(
                b.confidence > a.confidence + 0.03,
                "{text}: {} without, {} with",
                a.confidence,
                b.confidence
            );
        }
        // Messages without a thesaurus word keep their answers.
        for text in ["星云跑鞋有39码吗", "谢谢你", "今天天气不错"] {
            assert_eq!(
                with.parse(text).intent,
                without.parse(text).intent,
                "{text}"
            );
        }
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
    fn augmentation_substitutes_lookup_values_and_respells_numbers() {
        let entities = BTreeMap::from([(
            "model".to_string(),
            EntitySpec {
                lookup: Some(BTreeMap::from([
                    ("星云跑鞋".to_string(), vec!["星云".to_string()]),
                    ("疾风板鞋".to_string(), vec!["疾风".to_string()]),
                    ("云朵休闲鞋".to_string(), vec![]),
                ])),
                ..EntitySpec::default()
            },
        )]);
        let data = intents(&[("ask", &["星云跑鞋有39码吗", "有货吗"]), ("hi", &["你好"])]);
        let texts: Vec<String> = training_set(&data, &entities)
            .into_iter()
            .map(|(text, intent)| format!("{intent}:{text}"))
            .collect();
        // As many variants as examples, the first of each example first.
        assert_eq!(
            texts,
            vec![
                "ask:星云跑鞋有39码吗",
                "ask:有货吗",
                "ask:星云跑鞋有三十九码吗",
                "ask:云朵休闲鞋有39码吗",
                "hi:你好",
            ]
        );
        let model: Vec<(String, &str)> = [
            ("星云跑鞋", "星云跑鞋"),
            ("星云", "星云跑鞋"),
            ("疾风板鞋", "疾风板鞋"),
            ("疾风", "疾风板鞋"),
            ("云朵休闲鞋", "云朵休闲鞋"),
        ]
        .iter()
        .map(|&(p, v)| (p.to_string(), v))
        .collect();
        // Every other value first, then their synonyms; the longest phrase
        // found is the one replaced.
        assert_eq!(
            substituted("星云跑鞋有货吗", &model),
            vec!["云朵休闲鞋有货吗", "疾风板鞋有货吗", "疾风有货吗"]
        );
        assert_eq!(substituted("有货吗", &model), Vec::<String>::new());
        assert_eq!(respelled_number("三十九码半"), None, "not a whole number");
        assert_eq!(respelled_number("要三十九码"), Some("要39码".into()));
        assert_eq!(respelled_number("订单2026110101"), None);
    }

    #[test]
    fn augmentation_is_bounded_per_example() {
        let table: BTreeMap<String, Vec<String>> = (0..50)
            .map(|i| (format!("value{i:02}"), vec![format!("alias{i:02}")]))
            .collect();
        let entities = BTreeMap::from([(
            "thing".to_string(),
            EntitySpec {
                lookup: Some(table),
                ..EntitySpec::default()
            },
        )]);
        let data = intents(&[("want", &["i want value07 now", "nothing here"])]);
        let out = training_set(&data, &entities);
        // Two examples, two variants: the intent keeps its weight.
        assert_eq!(out.len(), 4);
        let phrases: Vec<(String, &str)> = (0..50)
            .map(|i| (format!("value{i:02}"), "v"))
            .chain([("value07".to_string(), "w")])
            .collect();
        assert_eq!(
            substituted("i want value07 now", &phrases).len(),
            VARIANTS_PER_EXAMPLE
        );
    }

    #[test]
    fn augmentation_teaches_other_models_and_numerals() {
        // Trained on one model asked in digits, the bot understands another
        // model asked in Chinese numerals.
        let result = shop().parse("疾风板鞋有四十二码吗");
        assert_eq!(result.intent.as_deref(), Some("ask_stock"), "{result:?}");
    }

    #[test]
    fn top_five_at_most() {
        let many: Vec<(String, Vec<String>)> = (0..8)
            .map(|i| (format!("intent{i}"), vec![format!("example number {i}")]))
            .collect();
        let nlu = BotNlu::train(&many, &BTreeMap::new(), &[], 0.5).unwrap();
        assert_eq!(nlu.parse("example").intents.len(), 5);
    }

    #[test]
    fn bot_without_intents_extracts_entities() {
        let nlu = BotNlu::train(&[], &BTreeMap::new(), &[], 0.5).unwrap();
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
            &[],
            0.5,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "intent `empty` has no examples");
    }

    /// `train` is the default seed; another seed is another draw of the
    /// same model, and the same seed the same model.
    #[test]
    fn a_seed_is_a_reproducible_draw() {
        let data = intents(&[
            ("greet", &["hi", "hello there", "good morning"]),
            ("order", &["i want a pizza", "get me a large pepperoni"]),
            ("track", &["where is my order", "is my pizza on its way"]),
        ]);
        let train = |seed| BotNlu::train_seeded(&data, &BTreeMap::new(), &[], 0.5, seed).unwrap();
        let top = |nlu: &BotNlu| nlu.parse("hello, is my pepperoni coming").intents;
        let shipped = top(&BotNlu::train(&data, &BTreeMap::new(), &[], 0.5).unwrap());
        assert_eq!(top(&train(TrainConfig::few_shot().seed)), shipped);
        assert_eq!(top(&train(7)), top(&train(7)));
        assert_ne!(top(&train(7)), shipped);
    }
}
