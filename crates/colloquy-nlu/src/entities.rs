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
    fn is_numeric(self) -> bool {
        !matches!(self, ValueType::Text)
    }

    fn convert(self, text: &str) -> Option<Value> {
        // A capture may hold the unit a half needs (`三十九码半`): then the
        // one number found in it is its value.
        let number = || {
            parse_number(text).or_else(|| match find_numbers(text)[..] {
                [(_, _, n)] => Some(n),
                _ => None,
            })
        };
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
    /// Phrases long enough to be matched with a typo, by first character,
    /// in the order of the table (so ties are broken the same way on
    /// every run).
    fuzzy: HashMap<char, Vec<(Vec<char>, String)>>,
}

/// Phrases shorter than this are matched exactly: one typo in `veg` or
/// `星云` leaves too little to be sure of.
const FUZZY_MIN_CHARS: usize = 4;

/// Whether `a` and `b` differ by one insertion, deletion or substitution
/// (or not at all).
fn within_one_edit(a: &[char], b: &[char]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if prefix == short.len() {
        return true;
    }
    // Past the first difference, the rest must agree once one character
    // is skipped: in both (substitution) or in the longer (insertion).
    let skip = usize::from(short.len() == long.len());
    short[prefix + skip..] == long[prefix + 1..]
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
                            let (start, end) = (char_at(m.start()), char_at(m.end()));
                            // `39到40码` names two sizes but writes the unit
                            // once: the lower end is a match too.
                            if entity.value_type.is_numeric() {
                                if let Some((s, e)) = range_start(normalised, &bytes, start) {
                                    emit(s, e, &normalised[bytes[s]..bytes[e]]);
                                }
                            }
                            emit(start, end, m.as_str());
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

/// Words that join the two ends of a range: `39到40`, `39-40`, `39~40`.
const RANGE_JOINERS: &[&str] = &["到", "至", "-", "~", "～", "—", "–", " to "];

/// The span of the number that opens a range ending in a match at char
/// `start`: `39` in `39到40码`.
fn range_start(text: &str, bytes: &[usize], start: usize) -> Option<(usize, usize)> {
    let before = text[..bytes[start]].trim_end();
    let joined = RANGE_JOINERS
        .iter()
        .find_map(|j| before.strip_suffix(j.trim_start()))?
        .trim_end();
    let end = joined.chars().count();
    let (s, e, _) = find_numbers(joined).pop()?;
    (e == end).then_some((s, e))
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
        let mut fuzzy: HashMap<char, Vec<(Vec<char>, String)>> = HashMap::new();
        for (canonical, synonyms) in table {
            for phrase in std::iter::once(canonical).chain(synonyms) {
                let chars: Vec<char> = normalize(phrase).chars().collect();
                if chars.len() >= FUZZY_MIN_CHARS {
                    fuzzy
                        .entry(chars[0])
                        .or_default()
                        .push((chars, canonical.clone()));
                }
            }
        }
        Ok(Lookup {
            phrases,
            longest,
            fuzzy,
        })
    }

    /// The longest span from `start` that is one typo away from a phrase of
    /// at least `FUZZY_MIN_CHARS` characters, if longer than `exact` (the
    /// length of the exact match there). The span must begin and end with
    /// the phrase's first and last characters: typos fall inside words,
    /// while a changed ending is more often another word (`larger` is not
    /// `large`, `星云跑鞋s`'s `s` is not part of the name).
    fn fuzzy_at(
        &self,
        chars: &[char],
        start: usize,
        exact: usize,
        bounded: &dyn Fn(usize, usize) -> bool,
    ) -> Option<(usize, &str)> {
        let mut best: Option<(usize, &str)> = None;
        for (phrase, canonical) in self.fuzzy.get(&chars[start])? {
            let last = phrase[phrase.len() - 1];
            for len in [phrase.len() + 1, phrase.len(), phrase.len() - 1] {
                let end = start + len;
                let better = len > best.map_or(exact, |(e, _)| e - start);
                if !better || end > chars.len() || chars[end - 1] != last {
                    continue;
                }
                if within_one_edit(&chars[start..end], phrase) && bounded(start, end) {
                    best = Some((end, canonical.as_str()));
                }
            }
        }
        best
    }

    /// Longest match first, left to right, without overlaps; a phrase of
    /// four characters or more also matches with one typo (`pepperonni`,
    /// `山岳徒歩鞋`), and an exact match wins over a typo of the same
    /// length. A phrase that starts or ends with a Latin letter or digit
    /// must not continue a word (`red` does not match in `bored`); Chinese
    /// has no such boundaries.
    fn find<'a>(&'a self, text: &str, bytes: &[usize]) -> Vec<(usize, usize, &'a str)> {
        let chars: Vec<char> = text.chars().collect();
        let joins = |a: usize, b: usize| is_word_char(chars[a]) && is_word_char(chars[b]);
        let bounded = |start: usize, end: usize| {
            (start == 0 || !joins(start - 1, start)) && (end == chars.len() || !joins(end - 1, end))
        };
        let mut found = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let longest = self.longest.min(chars.len() - start);
            let exact = (1..=longest).rev().find_map(|len| {
                let end = start + len;
                let canonical = self.phrases.get(&text[bytes[start]..bytes[end]])?;
                bounded(start, end).then_some((end, canonical.as_str()))
            });
            let exact_len = exact.map_or(0, |(end, _)| end - start);
            let hit = self.fuzzy_at(&chars, start, exact_len, &bounded).or(exact);
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
    fn lookups_forgive_one_typo_in_long_phrases_only() {
        let x = extractor(vec![
            (
                "model",
                lookup(&[("山岳徒步鞋", &["山岳"]), ("星云跑鞋", &["星云"])]),
            ),
            (
                "pizza",
                lookup(&[("pepperoni", &[]), ("margherita", &[]), ("veg", &[])]),
            ),
            ("size", lookup(&[("large", &[])])),
        ]);
        let hits = |text: &str, entity: &str| -> Vec<(Value, String, usize, usize)> {
            of(&x.extract(text), entity)
                .into_iter()
                .map(|(v, t, s, e)| (v.clone(), t.to_string(), s, e))
                .collect()
        };
        let text = |v: &str| Value::Text(v.into());
        let model = |t: &str| hits(t, "model");
        // Substitution, beating the shorter exact synonym 山岳.
        assert_eq!(
            model("山岳徒歩鞋还有吗"),
            vec![(text("山岳徒步鞋"), "山岳徒歩鞋".to_string(), 0, 5)]
        );
        // Deletion and insertion.
        assert_eq!(
            model("星跑鞋"),
            vec![(text("星云跑鞋"), "星跑鞋".to_string(), 0, 3)]
        );
        assert_eq!(
            model("晨云跑鞋").len(),
            0,
            "the first character must be right"
        );
        assert_eq!(
            model("星云跑跑鞋"),
            vec![(text("星云跑鞋"), "星云跑跑鞋".to_string(), 0, 5)]
        );
        let pizza = |t: &str| hits(t, "pizza");
        assert_eq!(
            pizza("a pepperonni please"),
            vec![(text("pepperoni"), "pepperonni".to_string(), 2, 12)]
        );
        assert_eq!(pizza("one margheritta").len(), 1);
        assert_eq!(pizza("one margrita").len(), 0, "two typos");
        assert_eq!(pizza("a vag pizza").len(), 0, "too short for a typo");
        assert_eq!(pizza("xpepperonni").len(), 0, "inside another word");
        // An exact match is not stretched over the next character.
        assert_eq!(
            model("星云跑鞋s"),
            vec![(text("星云跑鞋"), "星云跑鞋".to_string(), 0, 4)]
        );
        let size = |t: &str| hits(t, "size");
        assert_eq!(size("a lage one").len(), 1);
        assert_eq!(size("larger"), vec![], "a changed ending is another word");
    }

    #[test]
    fn one_edit() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        for (a, b, expected) in [
            ("abcd", "abcd", true),
            ("abcd", "abxd", true),
            ("abcd", "abd", true),
            ("abcd", "abcde", true),
            ("abcd", "xbcd", true),
            ("abcd", "badc", false),
            ("abcd", "ab", false),
            ("abcd", "axcy", false),
            ("", "a", true),
        ] {
            assert_eq!(within_one_edit(&c(a), &c(b)), expected, "{a} {b}");
            assert_eq!(within_one_edit(&c(b), &c(a)), expected, "{b} {a}");
        }
    }

    #[test]
    fn numeric_regexes_take_halves_and_both_ends_of_a_range() {
        let x = extractor(vec![
            (
                "size",
                regex(r"([0-9一二三四五六七八九十两]+)\s*(?:码|号)", Some("int")),
            ),
            (
                "half",
                regex(r"([0-9一二三四五六七八九十两]+\s*码半?)", Some("float")),
            ),
            ("code", regex(r"([0-9]+)号", None)),
        ]);
        let sizes = |text: &str| -> Vec<Value> {
            of(&x.extract(&normalize(text)), "size")
                .into_iter()
                .map(|(v, ..)| v.clone())
                .collect()
        };
        assert_eq!(sizes("39到40码"), vec![Value::Int(39), Value::Int(40)]);
        assert_eq!(sizes("39 - 40码"), vec![Value::Int(39), Value::Int(40)]);
        assert_eq!(
            sizes("三十九至四十码"),
            vec![Value::Int(39), Value::Int(40)]
        );
        assert_eq!(sizes("３９～４０碼"), vec![Value::Int(39), Value::Int(40)]);
        assert_eq!(sizes("要40码"), vec![Value::Int(40)]);
        assert_eq!(sizes("兩碼"), vec![Value::Int(2)]);
        assert_eq!(
            of(&x.extract("三十九码半"), "half"),
            vec![(&Value::Float(39.5), "三十九码半", 0, 5)]
        );
        assert_eq!(
            of(&x.extract("39码"), "half"),
            vec![(&Value::Float(39.0), "39码", 0, 3)]
        );
        // A text entity is not a number: no range.
        assert_eq!(of(&x.extract("1到2号"), "code").len(), 1);
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
