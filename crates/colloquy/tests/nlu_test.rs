//! `colloquy nlu test` as a bot author and CI run it: the shipped bots on
//! their paraphrase sets, the exit codes, the report and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nlu_test(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .current_dir(root())
        .env_remove("RUST_LOG")
        .args(["nlu", "test"])
        .args(args)
        .output()
        .expect("run colloquy nlu test")
}

/// A temporary directory holding `cases.tsv` with `content`; the
/// directory lives as long as the returned guard.
fn cases_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.tsv");
    std::fs::write(&cases, content).unwrap();
    (dir, cases)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `nlu_test` writing its report with `--json` to a temporary file, and
/// that report (`Null` when the run wrote none).
fn nlu_test_json(args: &[&str]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = nlu_test(&[args, &["--json", json.to_str().unwrap()]].concat());
    let report = std::fs::read_to_string(&json).map_or(serde_json::Value::Null, |content| {
        serde_json::from_str(&content).unwrap()
    });
    (out, report)
}

/// Asserts that a run exited with `code` and said `needle` on stderr.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

/// The bar CI holds the shipped bots to, per bot: on paraphrases they
/// were never trained on (`nlu-tests.tsv`, less the few lines that a
/// bot's examples came to say word for word: those test memory), the
/// share of right intents (a fallback is a miss) and no wrong intent at
/// all, since the bot would act on it; on messages they should not
/// understand (`nlu-oos.tsv`), at most this many wrong intents. The
/// target for paraphrases is 95%: the shoe store holds it (69 of 72), the
/// pizza shop is just under it (74 of 78; all four misses fallbacks), and
/// its bar holds what it reaches. The target for out-of-scope messages is
/// none, and the bar there holds what the classifier reaches, so that no
/// change lets more through.
const SHIPPED: [(&str, &str, &str); 2] = [("shoe-store", "0.95", "2"), ("pizza-shop", "0.94", "2")];

/// The same for the dev sets the bots' examples were tuned against
/// (`nlu-dev.tsv`, `nlu-dev-oos.tsv`): they are not held out, so their
/// bars hold where tuning left them (104 of 107 and 162 of 170 right; 8
/// and 14 wrong intents out of scope), and a change to the classifier or
/// the examples that undoes the tuning shows here first.
const TUNED: [(&str, &str, &str); 2] = [("shoe-store", "0.97", "8"), ("pizza-shop", "0.95", "14")];

/// Runs `colloquy nlu test` on a shipped bot's cases file and asserts it
/// passes the given bars having scored at least `min_cases` cases (with
/// `--exclude-examples`, those that are not training examples).
fn holds(bot: &str, cases: &str, min_cases: u64, bars: &[&str]) {
    let bot_dir = format!("bots/{bot}");
    let (out, report) = nlu_test_json(&[&[bot_dir.as_str(), cases], bars].concat());
    assert!(
        out.status.success(),
        "{bot}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let scored = report["cases"].as_u64().unwrap();
    assert!(scored >= min_cases, "{cases}: only {scored} cases scored");
}

#[test]
fn the_shipped_bots_understand_their_paraphrases() {
    for (bot, min, _) in SHIPPED {
        let cases = format!("bots/{bot}/nlu-tests.tsv");
        holds(
            bot,
            &cases,
            60,
            &[
                "--exclude-examples",
                "--min-accuracy",
                min,
                "--max-wrong",
                "0",
            ],
        );
    }
}

#[test]
fn the_shipped_bots_fall_back_on_what_they_do_not_handle() {
    for (bot, _, max_wrong) in SHIPPED {
        let cases = format!("bots/{bot}/nlu-oos.tsv");
        holds(
            bot,
            &cases,
            20,
            &["--exclude-examples", "--max-wrong", max_wrong],
        );
    }
}

#[test]
fn the_shipped_bots_keep_what_their_dev_sets_tuned() {
    for (bot, min, max_wrong) in TUNED {
        let cases = format!("bots/{bot}/nlu-dev.tsv");
        holds(
            bot,
            &cases,
            80,
            &["--min-accuracy", min, "--max-wrong", "0"],
        );
        let cases = format!("bots/{bot}/nlu-dev-oos.tsv");
        holds(bot, &cases, 50, &["--max-wrong", max_wrong]);
    }
}

/// A wrong intent under the threshold was acted on because the nearest
/// example agreed; the miss says so, and only then.
#[test]
fn a_wrong_intent_below_the_threshold_says_why_it_was_acted_on() {
    // Out-of-scope messages the pizza shop acts on (with its examples of
    // this commit): the first two under its threshold of 0.5, the last
    // over it.
    let (_dir, cases) = cases_file(
        "what are apartment prices now\toos\ni'd like to renew my subscription to playboy\toos\nis my flight on time\toos\n",
    );
    let out = nlu_test(&["bots/pizza-shop", cases.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    let wrong: Vec<&str> = stdout.lines().filter(|l| l.contains("WRONG")).collect();
    assert_eq!(wrong.len(), 3, "{stdout}");
    let mut below = 0;
    for line in wrong {
        let confidence: f32 = line
            .split_whitespace()
            .find_map(|w| w.parse().ok().filter(|c: &f32| *c < 1.0))
            .unwrap_or_else(|| panic!("no confidence in {line}"));
        assert_eq!(
            line.contains("(below the threshold; its nearest example agreed)"),
            confidence < 0.5,
            "{line}"
        );
        below += usize::from(confidence < 0.5);
    }
    assert_eq!(below, 2, "{stdout}");
}

#[test]
fn reports_misses_writes_json_and_fails_below_the_bar() {
    let (_dir, cases) = cases_file(
        "# a right answer, a wrong intent, and an entity the message lacks\nhello\tgreet\nwhere is my order\thours\ncan i get a large pepperoni\torder_pizza\tpizza=veggie\n",
    );
    let (out, report) = nlu_test_json(&["bots/pizza-shop", cases.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("accuracy       66.67% (2/3)"), "{stdout}");
    assert!(stdout.contains("wrong intents  1"), "{stdout}");
    assert!(
        stdout.contains(":3  WRONG     expected hours, got track_order"),
        "{stdout}"
    );
    assert!(
        stdout.contains(":4  entities  missing pizza=veggie"),
        "{stdout}"
    );
    assert_eq!(report["cases"], 3);
    assert_eq!(report["wrong"], 1);
    assert_eq!(
        report["intents"]["hours"]["confused_with"]["track_order"],
        1
    );
    assert_eq!(report["misses"][0]["kind"], "wrong");
    // The confidence table: the two right answers and the wrong one, each
    // in the tenth of its top confidence.
    assert!(stdout.contains("top confidence"), "{stdout}");
    let counted = |kind: &str| -> u64 {
        report["confidence"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum()
    };
    assert_eq!((counted("correct"), counted("wrong")), (2, 1));

    let below = nlu_test(&[
        "bots/pizza-shop",
        cases.to_str().unwrap(),
        "--min-accuracy",
        "0.9",
    ]);
    assert_fails(&below, 1, "below --min-accuracy 90.00%");
    let wrong = nlu_test(&[
        "bots/pizza-shop",
        cases.to_str().unwrap(),
        "--max-wrong",
        "0",
    ]);
    assert_fails(&wrong, 1, "1 wrong intents, more than --max-wrong 0");
}

/// A case that is a training example word for word (here `heya`, after
/// normalisation) is named, and `--exclude-examples` leaves it out.
#[test]
fn cases_that_are_training_examples_are_named_and_can_be_left_out() {
    let (_dir, cases) = cases_file("Heya!\tgreet\nheya pal, you open?\thours\n");
    let run = |extra: &[&str]| {
        nlu_test_json(&[&["bots/pizza-shop", cases.to_str().unwrap()], extra].concat())
    };

    let (out, report) = run(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("1 cases are training examples word for word (line 1)"),
        "{stdout}"
    );
    assert_eq!(report["cases"], 2);
    assert_eq!(report["examples"], serde_json::json!([1]));
    assert_eq!(report["examples_excluded"], false);

    let (out, report) = run(&["--exclude-examples"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("excluded       1 cases"), "{stdout}");
    assert_eq!(report["cases"], 1);
    assert_eq!(report["intents"]["greet"], serde_json::Value::Null);
    assert_eq!(report["intents"]["hours"]["cases"], 1);

    std::fs::write(&cases, "heya\tgreet\nthx\tthanks\n").unwrap();
    let out = nlu_test(&[
        "bots/pizza-shop",
        cases.to_str().unwrap(),
        "--exclude-examples",
    ]);
    assert_fails(&out, 2, "every case is a training example word for word");
}

/// `--seeds` trains again with other seeds and reports the spread; the
/// report and its bars stay the server's seed's.
#[test]
fn seeds_report_the_spread_around_the_servers_seed() {
    // The last line is right on one of the first three seeds only, so
    // the spread moves when (and only when) the seed does.
    let (_dir, cases) = cases_file(
        "r u guys open on sundays\thours\nwhere's my food at\ttrack_order\nlemme get a big veggie\torder_pizza\ncan u get me a manager\thuman\nthx a bunch\tthanks\nordered like 45 mins ago still waiting\ttrack_order\n",
    );
    let cases = cases.to_str().unwrap();
    let report = |args: &[&str]| -> serde_json::Value {
        let (out, report) = nlu_test_json(&[&["bots/pizza-shop", cases], args].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        report
    };
    let one = report(&[]);
    assert!(one.get("seeds").is_none());
    let three = report(&["--seeds", "3"]);
    assert_eq!(three["accuracy"], one["accuracy"]);
    assert_eq!(three["misses"], one["misses"]);
    let spread = &three["seeds"];
    assert_eq!(spread["seeds"], 3);
    let value = |v: &serde_json::Value| v.as_f64().unwrap();
    let (min, mean, max) = (
        value(&spread["accuracy_min"]),
        value(&spread["accuracy_mean"]),
        value(&spread["accuracy_max"]),
    );
    assert!(
        min <= value(&one["accuracy"]) && value(&one["accuracy"]) <= max,
        "{spread}"
    );
    assert!(min <= mean && mean <= max, "{spread}");
    assert!(min < max, "the seeds gave one model: {spread}");
    assert!(value(&spread["wrong_mean"]) <= value(&spread["wrong_max"]));

    let zero = nlu_test(&["bots/pizza-shop", cases, "--seeds", "0"]);
    assert_fails(&zero, 2, "--seeds");
}

#[test]
fn bad_cases_are_reported_with_file_and_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    for (content, expected) in [
        (
            "hello\tgreet\nno tab here\n",
            "bad.tsv:2: expected text<TAB>intent",
        ),
        (
            "hello\tgreet\n\nhi\tgreeting\n",
            "bad.tsv:3: unknown intent `greeting`",
        ),
        (
            "hello\tgreet\tsize\n",
            "bad.tsv:1: entity `size` is not written as name=value",
        ),
    ] {
        std::fs::write(&bad, content).unwrap();
        let out = nlu_test(&["bots/pizza-shop", bad.to_str().unwrap()]);
        assert_fails(&out, 2, expected);
    }
    let out = nlu_test(&["bots/no-such-bot", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bots_thesaurus_is_loaded_and_reported() {
    let (dir, cases) = cases_file("hello\tgreet\n");
    let bot = dir.path().join("pizza-shop");
    std::fs::create_dir(&bot).unwrap();
    for entry in std::fs::read_dir(root().join("bots/pizza-shop")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, bot.join(path.file_name().unwrap())).unwrap();
        }
    }
    let run = || nlu_test_json(&[bot.to_str().unwrap(), cases.to_str().unwrap()]);

    let (out, report) = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("thesaurus"));
    assert_eq!(report["thesaurus_groups"], 0);

    std::fs::write(
        bot.join("thesaurus.yaml"),
        "thesaurus:\n  - [human, person, agent]\n  - [pie, pizza]\n",
    )
    .unwrap();
    let (out, report) = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(threshold 0.50, thesaurus of 2 groups)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(report["thesaurus_groups"], 2);

    // A group of one word: the bot does not load, and the error says where.
    std::fs::write(bot.join("thesaurus.yaml"), "thesaurus:\n  - [pie]\n").unwrap();
    let (out, _) = run();
    assert_fails(&out, 2, "thesaurus.yaml:2: thesaurus[0]");
}
