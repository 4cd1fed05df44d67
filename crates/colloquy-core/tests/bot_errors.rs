//! `compile` reports each problem with file, line and field.

use colloquy_core::bot::{compile, BotError, SourceFile};

const BOT: &str = "bot:\n  name: t\n  version: '1'\n  fallback: fallback\n";
const RESPONSES: &str =
    "responses:\n  fallback: sorry\n  ask_size: which size?\n  hi: hello {size}\n";

fn files(extra: &[(&str, &str)]) -> Vec<SourceFile> {
    let mut v = vec![
        SourceFile {
            path: "bot.yaml".into(),
            text: BOT.into(),
        },
        SourceFile {
            path: "responses.yaml".into(),
            text: RESPONSES.into(),
        },
        SourceFile {
            path: "slots.yaml".into(),
            text: "slots:\n  size: {type: int, range: [35, 46]}\n".into(),
        },
    ];
    v.extend(extra.iter().map(|(p, t)| SourceFile {
        path: p.to_string(),
        text: t.to_string(),
    }));
    v
}

fn errors(extra: &[(&str, &str)]) -> Vec<BotError> {
    compile(&files(extra)).expect_err("expected errors")
}

fn one(extra: &[(&str, &str)]) -> BotError {
    let e = errors(extra);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn a_good_bot_compiles() {
    let bot = compile(&files(&[(
        "flows.yaml",
        "intents:\n  buy: {examples: [buy shoes]}\nflows:\n  f:\n    intents: [buy]\n    steps:\n      - ask: size\n      - say: hi\n",
    )]))
    .expect("compiles");
    assert_eq!(bot.id.name, "t");
    assert_eq!(bot.intent_flows["buy"], "f");
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let e = one(&[("flows.yaml", "flows:\n  f:\n    steps:\n      - sey: hi\n")]);
    assert_eq!(e.file, "flows.yaml");
    assert_eq!(e.line, Some(4));
    assert!(e.field.contains("flows.f.steps[0]"), "{e}");
    assert!(e.message.contains("unknown field `sey`"), "{e}");
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let e = one(&[("broken.yaml", "flows:\n  f:\n    steps: [\n")]);
    assert_eq!(e.file, "broken.yaml");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn unknown_slot_in_ask_is_reported_at_its_line() {
    let e = one(&[(
        "flows.yaml",
        "flows:\n  f:\n    steps:\n      - say: hi\n      - ask: colour\n        prompt: hi\n",
    )]);
    assert_eq!(
        (e.file.as_str(), e.line, e.field.as_str()),
        ("flows.yaml", Some(5), "flows.f.steps[1].ask")
    );
    assert!(e.message.contains("unknown slot `colour`"), "{e}");
    assert_eq!(
        e.to_string(),
        "flows.yaml:5: flows.f.steps[1].ask: unknown slot `colour`"
    );
}

#[test]
fn unknown_response_and_template_slot() {
    let errs = errors(&[(
        "more.yaml",
        "responses:\n  bad: 'hello {nobody}'\nflows:\n  f:\n    steps:\n      - say: missing\n",
    )]);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t
                .contains("more.yaml:2: responses.bad[0]: template uses unknown slot `{nobody}`")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("more.yaml:6: flows.f.steps[0].say: unknown response `missing`")),
        "{text:#?}"
    );
}

#[test]
fn duplicate_names_across_files() {
    let e = one(&[("dup.yaml", "slots:\n  size: {type: text}\n")]);
    assert_eq!(e.file, "dup.yaml");
    assert!(
        e.message.contains("duplicate slots name `size`") && e.message.contains("slots.yaml:2"),
        "{e}"
    );
}

#[test]
fn type_errors() {
    let errs = errors(&[(
        "t.yaml",
        "slots:\n  flag: {type: bool}\n  colour: {type: enum}\n  n: {type: nmber}\nflows:\n  f:\n    steps:\n      - set: {flag: 3}\n      - add: {flag: 1}\n      - if: {slot: flag, gt: 2}\n        then: x\n      - label: x\n        end: true\n",
    )]);
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("slots.colour.values: an enum slot needs"),
        "{text}"
    );
    assert!(
        text.contains("slots.n.type: unknown slot type `nmber`"),
        "{text}"
    );
    assert!(
        text.contains("steps[0].set.flag: value `3` does not fit a bool slot"),
        "{text}"
    );
    assert!(
        text.contains("steps[1].add.flag: `add` needs an int or float slot"),
        "{text}"
    );
    assert!(text.contains("`flag` is not a number slot"), "{text}");
}

#[test]
fn unreachable_steps_and_unknown_labels() {
    let errs = errors(&[(
        "f.yaml",
        "flows:\n  f:\n    steps:\n      - say: hi\n      - end: true\n      - say: hi\n      - goto: nowhere\n",
    )]);
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("f.yaml:6: flows.f.steps[2]: unreachable step"),
        "{text}"
    );
    assert!(
        text.contains("f.yaml:7: flows.f.steps[3].goto: unknown label `nowhere`"),
        "{text}"
    );
}

#[test]
fn a_step_does_one_thing() {
    let e = one(&[(
        "f.yaml",
        "flows:\n  f:\n    steps:\n      - say: hi\n        ask: size\n",
    )]);
    assert!(e.message.contains("has ask and say"), "{e}");
    let e = one(&[(
        "f.yaml",
        "flows:\n  f:\n    steps:\n      - say: hi\n        then: x\n",
    )]);
    assert!(
        e.message.contains("`then` only applies to an `if` step"),
        "{e}"
    );
}

#[test]
fn bad_regex_and_entity_kinds() {
    let errs = errors(&[("e.yaml", "entities:\n  a: {regex: '(unclosed'}\n  b: {regex: x, lookup: {y: []}}\n  c: {builtin: date}\n")]);
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("e.yaml:2: entities.a.regex: invalid regular expression"),
        "{text}"
    );
    assert!(
        text.contains("entities.b: an entity needs exactly one of"),
        "{text}"
    );
    assert!(
        text.contains("entities.c.builtin: unknown builtin `date`"),
        "{text}"
    );
}

#[test]
fn missing_bot_section_and_intent_conflicts() {
    let e = compile(&[SourceFile {
        path: "x.yaml".into(),
        text: "slots: {}\n".into(),
    }])
    .unwrap_err();
    assert_eq!(e[0].field, "bot");
    let errs = errors(&[(
        "i.yaml",
        "intents:\n  buy: {examples: [x]}\nflows:\n  f: {intents: [buy, sell], steps: [{say: hi}]}\n  g: {intents: [buy], steps: [{say: hi}]}\n",
    )]);
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("unknown intent `sell`"), "{text}");
    assert!(
        text.contains("intent `buy` already starts flow `f`"),
        "{text}"
    );
}

#[test]
fn bad_slot_mappings_name_file_line_and_field() {
    let errs = errors(&[(
        "m.yaml",
        "intents:\n  buy: {examples: [x], response: hi}\nentities:\n  model: {lookup: {a: []}}\nslots:\n  model:\n    type: text\n    from:\n      - entity: model\n        intents: [buy, sell]\n      - entity: colour\n        when: sometimes\n      - entity: model\n        intents: [buy]\n        not_intents: [buy]\n      - {entity: number, not_intents: []}\n  pick:\n    type: text\n    entity: model\n    from: []\n",
    )]);
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "m.yaml:10: slots.model.from[0].intents[1]: unknown intent `sell`",
        "m.yaml:11: slots.model.from[1].entity: unknown entity `colour`",
        "m.yaml:12: slots.model.from[1].when: unknown `when: sometimes` (expected always or asked)",
        "m.yaml:15: slots.model.from[2].not_intents: give `intents`",
        "m.yaml:16: slots.model.from[3].not_intents: an empty list",
        "m.yaml:19: slots.pick.entity: `entity` is the shorthand of a one-entry `from`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(errs.len(), 6, "{text}");
}

#[test]
fn slot_mappings_compile_with_the_shorthand_and_the_default() {
    use colloquy_core::bot::{IntentFilter, Mapping};
    let bot = compile(&files(&[(
        "m.yaml",
        "intents:\n  buy: {examples: [x], response: hi}\nentities:\n  model: {lookup: {a: []}}\n  qty: {builtin: number}\nslots:\n  model: {type: text}\n  other: {type: text, entity: model}\n  never: {type: text, from: []}\n  qty:\n    type: int\n    from:\n      - {entity: qty, intents: [buy]}\n      - {entity: number, when: asked}\n",
    )]))
    .expect("compiles");
    assert_eq!(bot.slots["model"].from, vec![Mapping::entity("model")]);
    assert_eq!(bot.slots["other"].from, vec![Mapping::entity("model")]);
    assert_eq!(bot.slots["never"].from, vec![]);
    assert_eq!(
        bot.slots["qty"].from,
        vec![
            Mapping {
                intents: IntentFilter::Only(vec!["buy".into()]),
                ..Mapping::entity("qty")
            },
            Mapping {
                only_when_asked: true,
                ..Mapping::entity("number")
            },
        ]
    );
    // A slot that shares no name with an entity has no mapping.
    assert_eq!(bot.slots["size"].from, vec![]);
}

#[test]
fn webhook_actions_are_checked_field_by_field() {
    let e = errors(&[(
        "actions.yaml",
        "actions:\n  a: {webhook: {url: 'https://x/webhook'}}\n  b: {webhook: {timeout: 2m, retries: 11}}\n  c: {webhook: {url: 'http://x/h', headers: {Idempotency-Key: k, 'bad name': v}, token_env: lower, send: [nope]}}\n",
    )]);
    let said: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| {
        assert!(
            said.iter().any(|s| s.contains(needle)),
            "no error with {needle:?} in {said:#?}"
        )
    };
    has("actions.yaml:2: actions.a.webhook.url: `https://x/webhook`: this build calls action servers over plain HTTP only");
    has("actions.yaml:3: actions.b.webhook.timeout: must be between 1ms and 60s");
    has("actions.b.webhook.retries: must be at most 10, got 11");
    has("actions.b.webhook.url: no url: give one here or in the bot's `action_endpoint`");
    has("actions.c.webhook.headers: `Idempotency-Key` is set by colloquy on every call");
    has("actions.c.webhook.headers: `bad name` is not a header name");
    has("actions.c.webhook.token_env: `lower` is not an environment variable name");
    has("actions.c.webhook.send[0]: unknown slot `nope`");
}

#[test]
fn on_error_belongs_to_a_webhook_action_step_and_names_a_label() {
    let e = errors(&[(
        "flows.yaml",
        "intents:\n  buy: {examples: [buy shoes]}\ntables:\n  t: [{size: 1}]\nactions:\n  look: {lookup: {table: t, match: {size: size}, set: {size: size}}}\n  hook: {webhook: {url: 'http://x/h'}}\nflows:\n  f:\n    intents: [buy]\n    steps:\n      - action: look\n        on_error: x\n      - action: hook\n        on_error: missing\n      - say: hi\n        on_error: x\n      - label: x\n        say: hi\n",
    )]);
    let said: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert!(
        said.iter().any(|s| s
            .contains("flows.f.steps[0].on_error: `look` reads the bot's tables and cannot fail")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|s| s.contains("steps[1].on_error: unknown label `missing`")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|s| s.contains(
            "flows.f.steps[2].on_error: `on_error` only applies to an `action` or `saga` step"
        )),
        "{said:#?}"
    );
}

#[test]
fn sagas_call_webhook_actions_and_are_named_by_saga_steps() {
    let e = errors(&[(
        "sagas.yaml",
        "intents:\n  buy: {examples: [buy shoes]}\ntables:\n  t: [{size: 1}]\nactions:\n  look: {lookup: {table: t, match: {size: size}, set: {size: size}}}\n  pay: {webhook: {url: 'http://x/h'}}\nsagas:\n  s:\n    compensation_rounds: 0\n    compensation_backoff: soon\n    steps:\n      - {action: pay, compensate: look}\n      - {action: nope}\nflows:\n  f:\n    intents: [buy]\n    steps:\n      - saga: missing\n",
    )]);
    let said: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    for needle in [
        "sagas.s.steps[0].compensate: `look` reads the bot's tables; a saga step calls a webhook action",
        "sagas.s.steps[1].action: unknown action `nope`",
        "sagas.s.compensation_rounds: must be between 1 and 100, got 0",
        "sagas.s.compensation_backoff: `soon` is not a duration",
        "flows.f.steps[0].saga: unknown saga `missing`",
    ] {
        assert!(said.iter().any(|s| s.contains(needle)), "no {needle:?} in {said:#?}");
    }
}

#[test]
fn a_breaker_is_per_endpoint_and_its_settings_are_checked() {
    let e = errors(&[(
        "actions.yaml",
        "actions:\n  a: {webhook: {url: 'http://x/h', breaker: {failures: 3}}}\n  b: {webhook: {url: 'http://x/h'}}\n  c: {webhook: {url: 'http://y/h', breaker: {failures: 0, open_for: never}}}\n",
    )]);
    let said: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    for needle in [
        "actions.b.webhook.breaker: `a` also calls http://x/h with other breaker settings",
        "actions.c.webhook.breaker.failures: must be at least 1",
        "actions.c.webhook.breaker.open_for: `never` is not a positive duration",
    ] {
        assert!(
            said.iter().any(|s| s.contains(needle)),
            "no {needle:?} in {said:#?}"
        );
    }
}

#[test]
fn thesaurus_groups_merge_across_files_and_need_two_words() {
    let bot = compile(&files(&[
        ("a.yaml", "thesaurus:\n  - [尺码, 码数]\n"),
        ("b.yaml", "thesaurus:\n  - [挑, 选, 选择]\n"),
    ]))
    .expect("compiles");
    assert_eq!(
        bot.thesaurus,
        vec![vec!["尺码", "码数"], vec!["挑", "选", "选择"]]
    );

    let e = one(&[("t.yaml", "thesaurus:\n  - [尺码, 码数]\n  - [挑, 挑]\n")]);
    assert_eq!((e.file.as_str(), e.line), ("t.yaml", Some(3)), "{e}");
    assert!(e.field.contains("thesaurus[1]"), "{e}");
    assert!(e.message.contains("at least two different words"), "{e}");

    let e = one(&[("t.yaml", "thesaurus:\n  - [尺码, '']\n")]);
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("cannot be empty"), "{e}");
}
