//! Entity extraction: a bot's regex, lookup-list and builtin-number
//! entities, matched against normalised text.

use crate::numbers::{find_numbers, parse_number};
use crate::{normalize, NluError};
use colloquy_core::bot::spec::EntitySpec;
use colloquy_core::{EntityMatch, Value};
use regex::{Regex, RegexBuilder};
use std::collections::{BTreeMap, HashMap};

/// The entity name under which numbers are always reported, so the policy
/// can fill a numeric slot it asked for even if the bot defines no entity
/// for it. A bot entity of this name replaces it.
pub const NUMBER: &str = "number";

/// How matched text becomes a value.
#[derive(Debug, Clone, Copy)]
enum ValueType {
    Text,
    /// Integral numbers only; other matches are dropped.
    Int,
    Float,
    /// `Int` when integral, else `Float`: the builtin's default.
    Number,
}

impl ValueType {
    fn convert(self, text: &str) -> Option<Value> {
        let number = || parse_number(text);
        match self {
            ValueType::Text => Some(Value::Text(text.to_string())),
            ValueType::Float => number().map(Value::Float),
            ValueType::Int => number().and_then(integral).map(Value::Int),
            ValueType::Number => number().map(|n| integral(n).map_or(Value::Float(n), Value::Int)),
        }
    }
}

fn integral(n: f64) -> Option<i64> {
    (n.fract() == 0.0 && n.abs() < 9.0e15).then_some(n as i64)
}

#[derive(Debug)]
enum Matcher {
    Regex { regex: Regex, group: usize },
    Lookup(Lookup),
    Number,
}

/// Phrases (normalised canonical names and synonyms) → canonical name,
/// matched longest first.
#[derive(Debug)]
struct Lookup {
    phrases: HashMap<String, String>,
    longest: usize,
}

#[derive(Debug)]
struct Entity {
    name: String,
    matcher: Matcher,
    value_type: ValueType,
}

/// A bot's entities, compiled once.
#[derive(Debug)]
pub struct EntityExtractor {
    entities: Vec<Entity>,
}

impl EntityExtractor {
    /// Compiles regexes (case-insensitively, since the text they see is
    /// lowercased) and lookup lists, and adds the reserved `number` entity
    /// unless the bot defines one.
    pub fn new(specs: &BTreeMap<String, EntitySpec>) -> Result<EntityExtractor, NluError> {
        let mut entities = specs
            .iter()
            .map(|(name, spec)| compile(name, spec))
            .collect::<Result<Vec<_>, _>>()?;
        if !specs.contains_key(NUMBER) {
            entities.push(Entity {
                name: NUMBER.to_string(),
                matcher: Matcher::Number,
                value_type: ValueType::Number,
            });
        }
        Ok(EntityExtractor { entities })
    }

    /// Every match of every entity in `normalised` (the output of
    /// `normalize`), ordered by start, longer first, then by entity name;
    /// matches of different entities may overlap. A regex with a capture group reports the
    /// group's text and offsets. Offsets are in chars.
    pub fn extract(&self, normalised: &str) -> Vec<EntityMatch> {
        // Byte offset of every char, plus the end, to turn regex byte
        // offsets into char offsets and char windows into slices.
        let bytes: Vec<usize> = normalised
            .char_indices()
            .map(|(b, _)| b)
            .chain([normalised.len()])
            .collect();
        let char_at = |byte: usize| bytes.partition_point(|&b| b < byte);
        let mut found = Vec::new();
        for entity in &self.entities {
            let mut emit = |start: usize, end: usize, raw: &str| {
                if let Some(value) = entity.value_type.convert(raw) {
                    found.push(EntityMatch {
                        entity: entity.name.clone(),
                        value,
                        text: normalised[bytes[start]..bytes[end]].to_string(),
                        start,
                        end,
                    });
                }
            };
            match &entity.matcher {
                Matcher::Regex { regex, group } => {
                    for captures in regex.captures_iter(normalised) {
                        if let Some(m) = captures.get(*group) {
                            emit(char_at(m.start()), char_at(m.end()), m.as_str());
                        }
                    }
                }
                Matcher::Lookup(lookup) => {
                    for (start, end, canonical) in lookup.find(normalised, &bytes) {
                        emit(start, end, canonical);
                    }
                }
                Matcher::Number => {
                    for (start, end, _) in find_numbers(normalised) {
                        emit(start, end, &normalised[bytes[start]..bytes[end]]);
                    }
                }
            }
        }
        found.sort_by(|a, b| {
            (a.start, std::cmp::Reverse(a.end), &a.entity).cmp(&(
                b.start,
                std::cmp::Reverse(b.end),
                &b.entity,
            ))
        });
        found
    }
}

fn compile(name: &str, spec: &EntitySpec) -> Result<Entity, NluError> {
    let error = |problem: String| NluError::Entity {
        entity: name.to_string(),
        problem,
    };
    let value_type = match spec.value_type.as_deref() {
        None => None,
        Some("text") => Some(ValueType::Text),
        Some("int") => Some(ValueType::Int),
        Some("float") => Some(ValueType::Float),
        Some(other) => {
            return Err(error(format!(
                "unknown type `{other}` (expected int, float or text)"
            )))
        }
    };
    let (matcher, default_type) = match (&spec.regex, &spec.lookup, &spec.builtin) {
        (Some(pattern), None, None) => {
            let regex = RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| error(format!("invalid regex: {e}")))?;
            let groups = regex.captures_len() - 1;
            let group = spec.group.unwrap_or(usize::from(groups > 0));
            if group > groups {
                return Err(error(format!(
                    "regex has no capture group {group} (it has {groups})"
                )));
            }
            (Matcher::Regex { regex, group }, ValueType::Text)
        }
        (None, Some(table), None) => (
            Matcher::Lookup(Lookup::new(table).map_err(error)?),
            ValueType::Text,
        ),
        (None, None, Some(builtin)) if builtin == NUMBER => (Matcher::Number, ValueType::Number),
        (None, None, Some(other)) => {
            return Err(error(format!(
                "unknown builtin `{other}` (expected number)"
            )))
        }
        _ => {
            return Err(error(
                "exactly one of regex, lookup or builtin must be set".to_string(),
            ))
        }
    };
    Ok(Entity {
        name: name.to_string(),
        matcher,
        value_type: value_type.unwrap_or(default_type),
    })
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !crate::tokenize::is_cjk(c)
}

impl Lookup {
    fn new(table: &BTreeMap<String, Vec<String>>) -> Result<Lookup, String> {
        let mut phrases: HashMap<String, String> = HashMap::new();
        for (canonical, synonyms) in table {
            for phrase in std::iter::once(canonical).chain(synonyms) {
                let key = normalize(phrase);
                if key.is_empty() {
                    return Err(format!("empty synonym of `{canonical}`"));
                }
                if let Some(other) = phrases.insert(key, canonical.clone()) {
                    if other != *canonical {
                        return Err(format!(
                            "`{phrase}` is listed under both `{other}` and `{canonical}`"
                        ));
                    }
                }
            }
        }
        let longest = phrases.keys().map(|p| p.chars().count()).max().unwrap_or(0);
        Ok(Lookup { phrases, longest })
    }

    /// Longest match first, left to right, without overlaps. A phrase that
    /// starts or ends with a Latin letter or digit must not continue a word
    /// (`red` does not match in `bored`); Chinese has no such boundaries.
    fn find<'a>(&'a self, text: &str, bytes: &[usize]) -> Vec<(usize, usize, &'a str)> {
        let chars: Vec<char> = text.chars().collect();
        let joins = |a: usize, b: usize| is_word_char(chars[a]) && is_word_char(chars[b]);
        let mut found = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let longest = self.longest.min(chars.len() - start);
            let hit = (1..=longest).rev().find_map(|len| {
                let end = start + len;
                let canonical = self.phrases.get(&text[bytes[start]..bytes[end]])?;
                let bounded = (start == 0 || !joins(start - 1, start))
                    && (end == chars.len() || !joins(end - 1, end));
                bounded.then_some((end, canonical.as_str()))
            });
            match hit {
                Some((end, canonical)) => {
                    found.push((start, end, canonical));
                    start = end;
                }
                None => start += 1,
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str, value_type: Option<&str>) -> EntitySpec {
        EntitySpec {
            regex: Some(pattern.to_string()),
            group: None,
            lookup: None,
            builtin: None,
            value_type: value_type.map(String::from),
        }
    }

    fn lookup(table: &[(&str, &[&str])]) -> EntitySpec {
        EntitySpec {
            regex: None,
            group: None,
            lookup: Some(
                table
                    .iter()
                    .map(|(canonical, synonyms)| {
                        (
                            canonical.to_string(),
                            synonyms.iter().map(|s| s.to_string()).collect(),
                        )
                    })
                    .collect(),
            ),
            builtin: None,
            value_type: None,
        }
    }

    fn builtin(name: &str) -> EntitySpec {
        EntitySpec {
            regex: None,
            group: None,
            lookup: None,
            builtin: Some(name.to_string()),
            value_type: None,
        }
    }

    fn extractor(specs: Vec<(&str, EntitySpec)>) -> EntityExtractor {
        let specs: BTreeMap<String, EntitySpec> =
            specs.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
        EntityExtractor::new(&specs).unwrap()
    }

    fn error(name: &str, spec: EntitySpec) -> String {
        EntityExtractor::new(&BTreeMap::from([(name.to_string(), spec)]))
            .unwrap_err()
            .to_string()
    }

    fn of<'a>(found: &'a [EntityMatch], entity: &str) -> Vec<(&'a Value, &'a str, usize, usize)> {
        found
            .iter()
            .filter(|m| m.entity == entity)
            .map(|m| (&m.value, m.text.as_str(), m.start, m.end))
            .collect()
    }

    #[test]
    fn regex_capture_converted_to_int() {
        let x = extractor(vec![(
            "size",
            regex(r"([0-9一二三四五六七八九十两]+)\s*(?:码|号)", Some("int")),
        )]);
        let found = x.extract("星云跑鞋有三十九码吗");
        assert_eq!(of(&found, "size"), vec![(&Value::Int(39), "三十九", 5, 8)]);
        assert_eq!(
            of(&x.extract("要 40 号的"), "size"),
            vec![(&Value::Int(40), "40", 2, 4)]
        );
        // Not a number after all: dropped rather than reported as text.
        assert_eq!(of(&x.extract("十十码"), "size"), vec![]);
    }

    #[test]
    fn regex_float_whole_match_and_explicit_group() {
        let x = extractor(vec![
            (
                "foot",
                regex(r"([0-9]+(?:\.[0-9]+)?)\s*(?:cm|厘米)", Some("float")),
            ),
            ("code", regex(r"[a-z]{2}\d{3}", None)),
            (
                "route",
                EntitySpec {
                    group: Some(2),
                    ..regex(r"from (\w+) to (\w+)", None)
                },
            ),
        ]);
        let found = x.extract("脚长25.5CM, code ab123, from paris to rome");
        assert_eq!(
            of(&found, "foot"),
            vec![(&Value::Float(25.5), "25.5", 2, 6)]
        );
        assert_eq!(
            of(&found, "code"),
            vec![(&Value::Text("ab123".into()), "ab123", 15, 20)]
        );
        assert_eq!(
            of(&found, "route"),
            vec![(&Value::Text("rome".into()), "rome", 36, 40)]
        );
    }

    #[test]
    fn lookup_matches_synonyms_longest_first() {
        let x = extractor(vec![(
            "model",
            lookup(&[
                ("星云跑鞋", &["星云", "星云跑步鞋"]),
                ("疾风板鞋", &["疾风"]),
            ]),
        )]);
        let found = x.extract("星云跑步鞋和疾风哪个好");
        assert_eq!(
            of(&found, "model"),
            vec![
                (&Value::Text("星云跑鞋".into()), "星云跑步鞋", 0, 5),
                (&Value::Text("疾风板鞋".into()), "疾风", 6, 8),
            ]
        );
    }

    #[test]
    fn lookup_respects_latin_word_boundaries_and_case() {
        let x = extractor(vec![
            ("color", lookup(&[("red", &["Crimson"])])),
            ("size", lookup(&[("large", &["14 inch", "big"])])),
        ]);
        assert_eq!(
            of(&x.extract("i'm bored of red"), "color"),
            vec![(&Value::Text("red".into()), "red", 13, 16)]
        );
        assert_eq!(of(&x.extract("crimson"), "color").len(), 1);
        assert_eq!(
            of(&x.extract("a 14 inch pizza"), "size"),
            vec![(&Value::Text("large".into()), "14 inch", 2, 9)]
        );
        assert_eq!(of(&x.extract("bigger"), "size"), vec![]);
        // Chinese text has no word boundaries to respect.
        assert_eq!(of(&x.extract("要big的"), "size").len(), 1);
    }

    #[test]
    fn numbers_always_reported() {
        let x = extractor(vec![]);
        let found = x.extract("两双39码, 一共三百五十块");
        assert_eq!(
            of(&found, NUMBER),
            vec![
                (&Value::Int(39), "39", 2, 4),
                (&Value::Int(350), "三百五十", 9, 13)
            ]
        );
        assert_eq!(
            of(&x.extract("3.5 kg"), NUMBER),
            vec![(&Value::Float(3.5), "3.5", 0, 3)]
        );
    }

    #[test]
    fn a_bot_entity_named_number_replaces_the_reserved_one() {
        let x = extractor(vec![("number", regex(r"#(\d+)", Some("int")))]);
        assert_eq!(
            of(&x.extract("#12 and 7"), NUMBER),
            vec![(&Value::Int(12), "12", 1, 3)]
        );
        let x = extractor(vec![("qty", builtin("number"))]);
        let found = x.extract("7");
        assert_eq!(of(&found, "qty"), of(&found, NUMBER));
    }

    #[test]
    fn sorted_by_start_longest_first() {
        let x = extractor(vec![
            ("size", regex(r"(\d+)码", Some("int"))),
            ("all", regex(r"\d+码", None)),
        ]);
        let found = x.extract("40码或39码");
        let spans: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|m| (m.start, m.end, m.entity.as_str()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 3, "all"),
                (0, 2, "number"),
                (0, 2, "size"),
                (4, 7, "all"),
                (4, 6, "number"),
                (4, 6, "size")
            ]
        );
    }

    #[test]
    fn clear_errors() {
        assert!(error("size", regex("([0-9]+", None)).starts_with("entity `size`: invalid regex: "));
        assert_eq!(
            error(
                "size",
                EntitySpec {
                    group: Some(2),
                    ..regex("([0-9]+)", None)
                }
            ),
            "entity `size`: regex has no capture group 2 (it has 1)"
        );
        assert_eq!(
            error("size", regex("x", Some("integer"))),
            "entity `size`: unknown type `integer` (expected int, float or text)"
        );
        assert_eq!(
            error("n", builtin("date")),
            "entity `n`: unknown builtin `date` (expected number)"
        );
        assert_eq!(
            error(
                "n",
                EntitySpec {
                    builtin: Some("number".into()),
                    ..regex("x", None)
                }
            ),
            "entity `n`: exactly one of regex, lookup or builtin must be set"
        );
        assert_eq!(
            error("m", lookup(&[("a", &[" "])])),
            "entity `m`: empty synonym of `a`"
        );
        assert_eq!(
            error("m", lookup(&[("a", &["x"]), ("b", &["X"])])),
            "entity `m`: `X` is listed under both `a` and `b`"
        );
    }
}
