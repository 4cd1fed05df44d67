//! Reading a bot's files into sections. Any file may hold any section, so
//! a campaign can live in a file of its own; a name defined twice is an
//! error that points at both definitions.

use super::ctx::{At, BotError, Ctx, SourceFile};
use crate::bot::spec::*;
use std::collections::BTreeMap;

/// Definitions of one kind merged from all files, each with its origin.
pub(super) type Merged<T> = BTreeMap<String, (T, At)>;

/// The union of a bot's files, not yet checked.
#[derive(Default)]
pub(super) struct Sections {
    pub(super) bot: Option<(BotSpec, At)>,
    pub(super) intents: Merged<IntentSpec>,
    pub(super) entities: Merged<EntitySpec>,
    pub(super) slots: Merged<SlotSpec>,
    pub(super) responses: Merged<ResponseSpec>,
    pub(super) flows: Merged<FlowSpec>,
    pub(super) actions: Merged<ActionSpec>,
    pub(super) tables: Merged<Vec<BTreeMap<String, serde_yaml::Value>>>,
    pub(super) sagas: Merged<SagaSpec>,
    /// Synonym groups, each where it was written.
    pub(super) thesaurus: Vec<(Vec<String>, At)>,
}

/// Parse and merge every file; a file that does not parse is reported and
/// contributes nothing.
pub(super) fn read(ctx: &mut Ctx, files: &[SourceFile]) -> Sections {
    let mut sections = Sections::default();
    for (i, file) in files.iter().enumerate() {
        let spec = if file.text.trim().is_empty() {
            FileSpec::default()
        } else {
            match serde_yaml::from_str(&file.text) {
                Ok(spec) => spec,
                Err(e) => {
                    ctx.yaml_err(i, &e);
                    continue;
                }
            }
        };
        sections.add(ctx, i, spec);
    }
    sections
}

/// The error for a bot none of whose files has the `bot` section.
pub(super) fn no_bot_section(files: &[SourceFile]) -> BotError {
    BotError {
        file: files
            .first()
            .map(|f| f.path.clone())
            .unwrap_or_else(|| "(no YAML files)".into()),
        line: None,
        field: "bot".into(),
        message: "no file defines the `bot` section (name, version, fallback)".into(),
    }
}

impl Sections {
    fn add(&mut self, ctx: &mut Ctx, file: usize, spec: FileSpec) {
        if let Some(b) = spec.bot {
            let at = At {
                file,
                path: "bot".into(),
            };
            if let Some((_, first)) = &self.bot {
                let first = ctx.file(first);
                ctx.err(
                    &at,
                    "",
                    format!("a bot has one `bot` section; already defined in {first}"),
                );
            } else {
                self.bot = Some((b, at));
            }
        }
        merge(ctx, &mut self.intents, file, "intents", spec.intents);
        merge(ctx, &mut self.entities, file, "entities", spec.entities);
        merge(ctx, &mut self.slots, file, "slots", spec.slots);
        merge(ctx, &mut self.responses, file, "responses", spec.responses);
        merge(ctx, &mut self.flows, file, "flows", spec.flows);
        merge(ctx, &mut self.actions, file, "actions", spec.actions);
        merge(ctx, &mut self.tables, file, "tables", spec.tables);
        merge(ctx, &mut self.sagas, file, "sagas", spec.sagas);
        self.thesaurus
            .extend(spec.thesaurus.into_iter().enumerate().map(|(i, group)| {
                let at = At {
                    file,
                    path: format!("thesaurus[{i}]"),
                };
                (group, at)
            }));
    }
}

fn merge<T>(
    ctx: &mut Ctx,
    into: &mut Merged<T>,
    file: usize,
    section: &str,
    items: BTreeMap<String, T>,
) {
    for (name, item) in items {
        let at = At {
            file,
            path: format!("{section}.{name}"),
        };
        if let Some((_, first)) = into.get(&name) {
            let first = ctx.place(first);
            ctx.err(
                &at,
                "",
                format!("duplicate {section} name `{name}` (first defined at {first})"),
            );
        } else {
            into.insert(name, (item, at));
        }
    }
}
