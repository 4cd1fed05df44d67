//! From YAML sources to a checked `Bot`: parse every file, merge them,
//! resolve every name, and report each problem with file, line and field.
//!
//! Sections are compiled in a fixed order (settings, tables, entities,
//! slots, responses, intents, actions, flows, then the checks across
//! them): errors are sorted by file and line, and that order decides how
//! the errors of one line are listed.

mod actions;
mod checks;
mod conditions;
mod ctx;
mod flows;
mod intents;
mod responses;
mod sagas;
mod settings;
mod slots;
mod sources;
mod steps;

pub use ctx::{BotError, SourceFile};
pub use settings::check_registry_name;

use super::model::Bot;
use crate::event::BotRef;
use crate::value::Value;
use checks::Names;
use ctx::Ctx;

/// Compile a bot from its files. Returns every error found, not just the first.
pub fn compile(files: &[SourceFile]) -> Result<Bot, Vec<BotError>> {
    let mut ctx = Ctx::new(files);
    let mut sections = sources::read(&mut ctx, files);
    // Names can only be resolved once every file has been read whole.
    ctx.check()?;
    let Some((spec, bot_at)) = sections.bot.take() else {
        return Err(vec![sources::no_bot_section(files)]);
    };
    let names = Names::of(&sections);

    let settings = settings::compile(&mut ctx, &names, &spec, &bot_at);
    let tables = actions::tables(&mut ctx, sections.tables);
    intents::check_entities(&mut ctx, &sections.entities);
    let slots = slots::compile(&mut ctx, &names, &sections.slots, &sections.entities);
    let responses = responses::compile(&mut ctx, &names, sections.responses);
    let intents = intents::compile(&mut ctx, &names, sections.intents);
    let thesaurus = intents::thesaurus(&mut ctx, sections.thesaurus);
    let actions = actions::compile(
        &mut ctx,
        &names,
        &tables,
        (spec.action_endpoint.as_ref(), &bot_at),
        sections.actions,
    );
    let sagas = sagas::compile(&mut ctx, &actions, sections.sagas);
    let (flows, intent_flows) = flows::compile(&mut ctx, &names, &slots, &actions, sections.flows);
    checks::intents_answer_or_start(&mut ctx, &names, &intent_flows);
    ctx.finish()?;

    Ok(Bot {
        id: BotRef {
            name: spec.name,
            version: spec.version,
        },
        language: spec.language,
        session_timeout_ms: settings.session_timeout_ms,
        threshold: settings.threshold,
        fallback: spec.fallback,
        abandon: spec.abandon,
        withdrawn: spec.withdrawn,
        action_failed: spec.action_failed,
        intents,
        entities: sections
            .entities
            .into_iter()
            .map(|(k, (e, _))| (k, e))
            .collect(),
        slots,
        responses,
        flows,
        actions,
        tables,
        sagas,
        intent_flows,
        thesaurus,
    })
}

/// A YAML scalar or list as a slot value; mappings and nulls have none.
fn yaml_to_value(v: &serde_yaml::Value) -> Option<Value> {
    Some(match v {
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_yaml::Value::String(s) => Value::Text(s.clone()),
        serde_yaml::Value::Sequence(items) => {
            Value::List(items.iter().map(yaml_to_value).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}
