//! `colloquy nlu test BOT_DIR CASES.tsv`: how well a bot understands what
//! its users type. The bot is loaded and trained exactly as the server
//! loads it; every case is parsed as a message would be, and the answer is
//! right, a fallback (nothing above the bot's threshold: the user is asked
//! again) or a wrong intent (the bot acts on a misunderstanding, which is
//! worse). A bot author runs it to improve a bot; CI runs it on the
//! shipped bots.

use anyhow::Context;
use colloquy_core::bot::values_equal;
use colloquy_core::{NluResult, Value};
use colloquy_nlu::eval::{ConfidenceDeciles, OOS};
use colloquy_nlu::{normalize, BotNlu, TrainConfig};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TestArgs {
    /// The bot directory, trained as the server trains it.
    bot: PathBuf,
    /// `text<TAB>intent[<TAB>entity=value,…]` per line; `#` starts a comment
    /// line. The intent `oos` marks a message the bot should not understand.
    cases: PathBuf,
    /// Exit 1 when the share of right answers (0 to 1) is below this.
    #[arg(long, default_value_t = 0.0)]
    min_accuracy: f64,
    /// Exit 1 when more cases than this get a wrong intent: another
    /// intent the bot acts on (a fallback is a miss; a wrong intent is
    /// worse).
    #[arg(long)]
    max_wrong: Option<usize>,
    /// Leave out cases that are training examples word for word (after
    /// normalisation): they test memory, not paraphrase. For a held-out
    /// set, so that its accuracy says how the bot does on what it was
    /// never shown.
    #[arg(long)]
    exclude_examples: bool,
    /// Train this many times, the server's seed first and the next
    /// seeds after it, and add the mean and range of accuracy and wrong
    /// intents: the seed alone can move a small bot's results by a case
    /// or two, as one example more or less can. The rest of the report
    /// and the bars stay the server's seed's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    seeds: u64,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

/// One line of a cases file.
#[derive(Debug, Clone, PartialEq)]
struct Case {
    line: usize,
    text: String,
    intent: String,
    /// `(entity, value)` pairs the message must yield.
    entities: Vec<(String, String)>,
}

/// Reads a cases file; the error is `line: problem`.
fn parse_cases(content: &str) -> Result<Vec<Case>, (usize, String)> {
    let mut cases = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = raw.split('\t').map(str::trim).collect();
        let (text, intent, entities) = match fields[..] {
            [text, intent] => (text, intent, ""),
            [text, intent, entities] => (text, intent, entities),
            _ => {
                return Err((
                    line,
                    format!(
                        "expected text<TAB>intent or text<TAB>intent<TAB>entities, found {} tab-separated fields",
                        fields.len()
                    ),
                ))
            }
        };
        if text.is_empty() {
            return Err((line, "empty text".into()));
        }
        if intent.is_empty() {
            return Err((line, "empty intent".into()));
        }
        let entities = entities
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                    Ok((name.trim().to_string(), value.trim().to_string()))
                }
                _ => Err((
                    line,
                    format!("entity `{pair}` is not written as name=value"),
                )),
            })
            .collect::<Result<_, _>>()?;
        cases.push(Case {
            line,
            text: text.to_string(),
            intent: intent.to_string(),
            entities,
        });
    }
    if cases.is_empty() {
        return Err((0, "no cases".into()));
    }
    Ok(cases)
}

#[derive(Debug, Default, Serialize, PartialEq)]
struct IntentReport {
    cases: usize,
    right: usize,
    fallbacks: usize,
    wrong: usize,
    /// Intent recognised instead → how many times.
    confused_with: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum MissKind {
    /// Nothing above the threshold: the bot says it did not understand.
    Fallback,
    /// Another intent above the threshold: the bot acts on it.
    Wrong,
    /// The intent was right or not, but an expected entity is missing.
    Entities,
}

#[derive(Debug, Serialize, PartialEq)]
struct Miss {
    line: usize,
    kind: MissKind,
    text: String,
    expected: String,
    /// The top-ranked intent, even below the threshold, and its confidence.
    top: Option<(String, f32)>,
    /// For `entities`: the `name=value` pairs not found.
    missing: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    bot: BotInfo,
    /// Cases scored: with `--exclude-examples`, those that are not
    /// training examples.
    cases: usize,
    /// Lines of the cases that are training examples word for word.
    examples: Vec<usize>,
    /// Whether those cases were left out of every count.
    examples_excluded: bool,
    /// With `--seeds` above 1: the spread over seeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    seeds: Option<SeedSpread>,
    right: usize,
    accuracy: f64,
    fallbacks: usize,
    wrong: usize,
    entity_checks: usize,
    entity_misses: usize,
    intents: BTreeMap<String, IntentReport>,
    /// Top confidences of right, wrong and out-of-scope answers, whether
    /// or not they cleared the threshold: where the threshold could go.
    confidence: ConfidenceDeciles,
    misses: Vec<Miss>,
}

/// Accuracy and wrong intents over several training seeds.
#[derive(Debug, Serialize, PartialEq)]
struct SeedSpread {
    seeds: usize,
    accuracy_mean: f64,
    accuracy_min: f64,
    accuracy_max: f64,
    wrong_mean: f64,
    wrong_max: usize,
}

impl SeedSpread {
    /// `runs` holds `(accuracy, wrong)` per seed; it is not empty.
    fn of(runs: &[(f64, usize)]) -> SeedSpread {
        let n = runs.len() as f64;
        let accuracies = runs.iter().map(|&(a, _)| a);
        SeedSpread {
            seeds: runs.len(),
            accuracy_mean: accuracies.clone().sum::<f64>() / n,
            accuracy_min: accuracies.clone().fold(f64::INFINITY, f64::min),
            accuracy_max: accuracies.fold(f64::NEG_INFINITY, f64::max),
            wrong_mean: runs.iter().map(|&(_, w)| w as f64).sum::<f64>() / n,
            wrong_max: runs.iter().map(|&(_, w)| w).max().unwrap_or(0),
        }
    }
}

/// What the report says of the bot tested. The NLU applies the threshold
/// and thesaurus; they are only reported here.
#[derive(Debug, Clone, Serialize)]
struct BotInfo {
    /// Name and version.
    bot: String,
    threshold: f32,
    /// Synonym groups of its `thesaurus`: an author converting one sees
    /// that it was loaded.
    thesaurus_groups: usize,
}

/// Scores `cases` on a trained bot.
fn score(bot: BotInfo, nlu: &BotNlu, cases: &[Case]) -> Report {
    let mut intents: BTreeMap<String, IntentReport> = BTreeMap::new();
    let mut misses = Vec::new();
    let (mut entity_checks, mut entity_misses) = (0, 0);
    let mut confidence = ConfidenceDeciles::default();
    for case in cases {
        let result = nlu.parse(&case.text);
        let per = intents.entry(case.intent.clone()).or_default();
        per.cases += 1;
        let expected = (case.intent != OOS).then_some(case.intent.as_str());
        let top = result
            .intents
            .first()
            .map(|s| (s.name.clone(), s.confidence));
        if let Some((name, c)) = &top {
            confidence.add(&case.intent, name, *c);
        }
        let kind = match (result.intent.as_deref(), expected) {
            (got, want) if got == want => None,
            (None, _) => Some(MissKind::Fallback),
            (Some(got), _) => {
                *per.confused_with.entry(got.to_string()).or_default() += 1;
                Some(MissKind::Wrong)
            }
        };
        match kind {
            None => per.right += 1,
            Some(MissKind::Fallback) => per.fallbacks += 1,
            Some(_) => per.wrong += 1,
        }
        let missing = missing_entities(&result, &case.entities);
        entity_checks += case.entities.len();
        entity_misses += missing.len();
        let miss = |kind, missing| Miss {
            line: case.line,
            kind,
            text: case.text.clone(),
            expected: case.intent.clone(),
            top: top.clone(),
            missing,
        };
        if let Some(kind) = kind {
            misses.push(miss(kind, Vec::new()));
        }
        if !missing.is_empty() {
            misses.push(miss(MissKind::Entities, missing));
        }
    }
    let right: usize = intents.values().map(|i| i.right).sum();
    Report {
        bot,
        cases: cases.len(),
        examples: Vec::new(),
        examples_excluded: false,
        seeds: None,
        right,
        accuracy: right as f64 / cases.len().max(1) as f64,
        fallbacks: intents.values().map(|i| i.fallbacks).sum(),
        wrong: intents.values().map(|i| i.wrong).sum(),
        entity_checks,
        entity_misses,
        intents,
        confidence,
        misses,
    }
}

/// The expected `name=value` pairs that no entity of the message matches.
fn missing_entities(result: &NluResult, expected: &[(String, String)]) -> Vec<String> {
    expected
        .iter()
        .filter(|(name, value)| {
            let want = Value::Text(value.clone());
            !result
                .entities
                .iter()
                .any(|m| &m.entity == name && values_equal(&m.value, &want))
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

fn print(report: &Report, cases_path: &Path) {
    let thesaurus = match report.bot.thesaurus_groups {
        0 => String::new(),
        n => format!(", thesaurus of {n} groups"),
    };
    println!(
        "bot            {} (threshold {:.2}{thesaurus})",
        report.bot.bot, report.bot.threshold
    );
    println!("cases          {}", report.cases);
    if !report.examples.is_empty() {
        let (n, lines) = (report.examples.len(), line_list(&report.examples));
        if report.examples_excluded {
            println!("excluded       {n} cases that are training examples word for word ({lines})");
        } else {
            println!(
                "examples       {n} cases are training examples word for word ({lines}): \
                 they test memory, not paraphrase (--exclude-examples leaves them out)"
            );
        }
    }
    println!(
        "accuracy       {:.2}% ({}/{})",
        report.accuracy * 100.0,
        report.right,
        report.cases
    );
    println!(
        "fallbacks      {} (the right intent or none, below the threshold)",
        report.fallbacks
    );
    println!(
        "wrong intents  {} (another intent acted on: above the threshold, or below it with the nearest example agreeing)",
        report.wrong
    );
    if let Some(spread) = &report.seeds {
        println!(
            "seeds          {}: accuracy mean {:.2}% ({:.2}–{:.2}%), wrong intents mean {:.1} (at most {}); all else is the server's seed",
            spread.seeds,
            spread.accuracy_mean * 100.0,
            spread.accuracy_min * 100.0,
            spread.accuracy_max * 100.0,
            spread.wrong_mean,
            spread.wrong_max
        );
    }
    if report.entity_checks > 0 {
        println!(
            "entities       {}/{} found",
            report.entity_checks - report.entity_misses,
            report.entity_checks
        );
    }
    println!();
    println!(
        "{:<20} {:>5} {:>5} {:>8} {:>5} {:>8}  confused with",
        "intent", "cases", "right", "fallback", "wrong", "accuracy"
    );
    for (name, i) in &report.intents {
        let confused: Vec<String> = i
            .confused_with
            .iter()
            .map(|(other, n)| format!("{other}×{n}"))
            .collect();
        println!(
            "{:<20} {:>5} {:>5} {:>8} {:>5} {:>7.1}%  {}",
            name,
            i.cases,
            i.right,
            i.fallbacks,
            i.wrong,
            i.right as f64 * 100.0 / i.cases as f64,
            confused.join(", ")
        );
    }
    println!();
    println!(
        "top confidence  {} (threshold {:.2})",
        ConfidenceDeciles::header(),
        report.bot.threshold
    );
    for (kind, bins) in report.confidence.rows() {
        println!("{kind:<15} {bins}");
    }
    if !report.misses.is_empty() {
        println!();
        println!("misses:");
    }
    for m in &report.misses {
        let top = m
            .top
            .as_ref()
            .map(|(name, c)| format!("{name} {c:.2}"))
            .unwrap_or_else(|| "nothing".into());
        let what = match m.kind {
            MissKind::Fallback => format!("fallback  expected {}, top {top}", m.expected),
            MissKind::Wrong => {
                // The NLU also acts below the threshold when the nearest
                // example agrees clearly; without saying so a confidence
                // under the threshold reads like a bug.
                let why = match &m.top {
                    Some((_, c)) if *c < report.bot.threshold => {
                        " (below the threshold; its nearest example agreed)"
                    }
                    _ => "",
                };
                format!("WRONG     expected {}, got {top}{why}", m.expected)
            }
            MissKind::Entities => format!("entities  missing {}", m.missing.join(", ")),
        };
        println!(
            "  {}:{}  {what}  {:?}",
            cases_path.display(),
            m.line,
            m.text
        );
    }
}

/// A text as the classifier reads it: normalised words without the
/// punctuation between them, so that `Heya!` is the example `heya`.
fn wording(text: &str) -> String {
    normalize(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `lines 3, 17, 40`, the first few of many.
fn line_list(lines: &[usize]) -> String {
    const SHOWN: usize = 12;
    let mut list: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    if lines.len() > SHOWN {
        list.push("…".into());
    }
    let noun = if lines.len() == 1 { "line" } else { "lines" };
    format!("{noun} {}", list.join(", "))
}

/// Exit 2 for input that cannot be tested (bot, file, unknown intent),
/// 1 for a bot below the bar, 0 otherwise.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let usage = |message: String| {
        eprintln!("error: {message}");
        Ok(ExitCode::from(2))
    };
    let loaded = match colloquy_worker::load_bot(&args.bot) {
        Ok(loaded) => loaded,
        Err(e) => return usage(format!("{}: {e}", args.bot.display())),
    };
    let content = match std::fs::read_to_string(&args.cases) {
        Ok(c) => c,
        Err(e) => return usage(format!("{}: {e}", args.cases.display())),
    };
    let mut cases = match parse_cases(&content) {
        Ok(cases) => cases,
        Err((line, problem)) => {
            return usage(format!("{}:{line}: {problem}", args.cases.display()))
        }
    };
    let known: BTreeSet<&str> = loaded.bot.intents.keys().map(String::as_str).collect();
    if let Some(case) = cases
        .iter()
        .find(|c| c.intent != OOS && !known.contains(c.intent.as_str()))
    {
        let names: Vec<&str> = known.into_iter().collect();
        return usage(format!(
            "{}:{}: unknown intent `{}` (the bot has {}; `{OOS}` marks a message it should not understand)",
            args.cases.display(),
            case.line,
            case.intent,
            names.join(", ")
        ));
    }
    let trained: HashSet<String> = loaded
        .training_set()
        .into_iter()
        .map(|(text, _)| wording(&text))
        .collect();
    let examples: Vec<usize> = cases
        .iter()
        .filter(|c| trained.contains(&wording(&c.text)))
        .map(|c| c.line)
        .collect();
    if args.exclude_examples {
        cases.retain(|c| !examples.contains(&c.line));
        if cases.is_empty() {
            return usage(format!(
                "{}: every case is a training example word for word; nothing is left to test",
                args.cases.display()
            ));
        }
    }
    let bot = &loaded.bot;
    let info = BotInfo {
        bot: format!("{} {}", bot.id.name, bot.id.version),
        threshold: bot.threshold,
        thesaurus_groups: bot.thesaurus.len(),
    };
    let mut report = Report {
        examples,
        examples_excluded: args.exclude_examples,
        ..score(info.clone(), &loaded.nlu, &cases)
    };
    if args.seeds > 1 {
        let first = TrainConfig::few_shot().seed;
        let mut runs = vec![(report.accuracy, report.wrong)];
        for i in 1..args.seeds {
            let nlu = loaded.retrain(first.wrapping_add(i))?;
            let other = score(info.clone(), &nlu, &cases);
            runs.push((other.accuracy, other.wrong));
        }
        report.seeds = Some(SeedSpread::of(&runs));
    }
    print(&report, &args.cases);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut failed = false;
    if report.accuracy < args.min_accuracy {
        eprintln!(
            "FAIL: accuracy {:.2}% is below --min-accuracy {:.2}%",
            report.accuracy * 100.0,
            args.min_accuracy * 100.0
        );
        failed = true;
    }
    if let Some(max) = args.max_wrong.filter(|&max| report.wrong > max) {
        eprintln!(
            "FAIL: {} wrong intents, more than --max-wrong {max}",
            report.wrong
        );
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_core::bot::spec::EntitySpec;

    #[test]
    fn the_spread_over_seeds_is_mean_min_and_max() {
        let spread = SeedSpread::of(&[(0.9, 1), (0.8, 0), (1.0, 2)]);
        assert_eq!(spread.seeds, 3);
        assert!((spread.accuracy_mean - 0.9).abs() < 1e-9);
        assert_eq!((spread.accuracy_min, spread.accuracy_max), (0.8, 1.0));
        assert!((spread.wrong_mean - 1.0).abs() < 1e-9);
        assert_eq!(spread.wrong_max, 2);
    }

    #[test]
    fn reads_cases_with_and_without_entities() {
        let cases =
            parse_cases("# comment\n\n有39码吗\task\tsize=39, model=a\nhi there\tgreet\n").unwrap();
        assert_eq!(
            cases,
            vec![
                Case {
                    line: 3,
                    text: "有39码吗".into(),
                    intent: "ask".into(),
                    entities: vec![("size".into(), "39".into()), ("model".into(), "a".into())],
                },
                Case {
                    line: 4,
                    text: "hi there".into(),
                    intent: "greet".into(),
                    entities: vec![],
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = |text: &str| parse_cases(text).unwrap_err();
        assert_eq!(err("a\tb\nno tab\n").0, 2);
        assert!(err("no tab").1.contains("found 1 tab-separated fields"));
        assert_eq!(err("a\tb\tc\td").1, "expected text<TAB>intent or text<TAB>intent<TAB>entities, found 4 tab-separated fields");
        assert_eq!(err(" \tgreet"), (1, "empty text".into()));
        assert_eq!(err("hi\t "), (1, "empty intent".into()));
        assert_eq!(
            err("hi\tgreet\tsize"),
            (1, "entity `size` is not written as name=value".into())
        );
        assert_eq!(err("# only a comment\n"), (0, "no cases".into()));
    }

    fn nlu() -> BotNlu {
        let intents = [
            ("greet", &["hello", "hi there", "good morning"][..]),
            (
                "order",
                &["i want a pizza", "order a pizza please", "one pizza"],
            ),
            ("track", &["where is my order", "track my delivery"]),
        ];
        let intents: Vec<(String, Vec<String>)> = intents
            .iter()
            .map(|(n, e)| (n.to_string(), e.iter().map(|s| s.to_string()).collect()))
            .collect();
        let entities = BTreeMap::from([(
            "pizza".to_string(),
            EntitySpec {
                lookup: Some(BTreeMap::from([("pepperoni".to_string(), vec![])])),
                ..EntitySpec::default()
            },
        )]);
        BotNlu::train(&intents, &entities, &[], 0.5).unwrap()
    }

    fn case(line: usize, text: &str, intent: &str, entities: &[(&str, &str)]) -> Case {
        Case {
            line,
            text: text.into(),
            intent: intent.into(),
            entities: entities
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn scores_right_fallback_wrong_and_entities_apart() {
        let nlu = nlu();
        let cases = [
            case(1, "hello", "greet", &[]),
            case(
                2,
                "i want a pepperoni pizza",
                "order",
                &[("pizza", "pepperoni")],
            ),
            // A greeting labelled as tracking: a wrong intent.
            case(3, "good morning", "track", &[]),
            // Nothing like any example: a fallback.
            case(4, "qwxz", "order", &[("pizza", "margherita")]),
            case(5, "zzz", OOS, &[]),
        ];
        let info = BotInfo {
            bot: "t 1".into(),
            threshold: 0.5,
            thesaurus_groups: 0,
        };
        let r = score(info, &nlu, &cases);
        assert_eq!((r.cases, r.right, r.fallbacks, r.wrong), (5, 3, 1, 1));
        assert!((r.accuracy - 0.6).abs() < 1e-9);
        assert_eq!((r.entity_checks, r.entity_misses), (2, 1));
        assert_eq!(r.intents["track"].confused_with["greet"], 1);
        assert_eq!(r.intents["order"].fallbacks, 1);
        assert_eq!(r.intents[OOS].right, 1);
        // Every case counted once by its top answer, accepted or not: the
        // greeting labelled as tracking and the gibberish (whose top is
        // the first intent, at 0) are wrong answers.
        assert_eq!(r.confidence.correct.iter().sum::<usize>(), 2);
        assert_eq!(r.confidence.wrong.iter().sum::<usize>(), 2);
        assert_eq!(r.confidence.wrong[0], 1);
        assert_eq!(r.confidence.oos.iter().sum::<usize>(), 1);
        let kinds: Vec<(usize, &MissKind)> = r.misses.iter().map(|m| (m.line, &m.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (3, &MissKind::Wrong),
                (4, &MissKind::Fallback),
                (4, &MissKind::Entities)
            ]
        );
        assert_eq!(r.misses[2].missing, vec!["pizza=margherita"]);
    }
}
