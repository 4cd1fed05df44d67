//! Responses: templates whose `{slot}` holes must name slots.

use super::checks::Names;
use super::ctx::Ctx;
use super::sources::Merged;
use crate::bot::model::Template;
use crate::bot::spec::ResponseSpec;
use std::collections::BTreeMap;

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    responses: Merged<ResponseSpec>,
) -> BTreeMap<String, Vec<Template>> {
    let mut out = BTreeMap::new();
    for (name, (r, at)) in responses {
        let texts = match r {
            ResponseSpec::One(t) => vec![t],
            ResponseSpec::Variants(v) => v,
        };
        if texts.is_empty() {
            ctx.err(&at, "", "a response needs at least one variant");
        }
        let templates: Vec<Template> = texts.iter().map(|t| Template::parse(t)).collect();
        for (i, t) in templates.iter().enumerate() {
            for s in t.slots() {
                if !names.slots.contains(s) {
                    ctx.err(
                        &at,
                        &format!("[{i}]"),
                        format!("template uses unknown slot `{{{s}}}`"),
                    );
                }
            }
        }
        out.insert(name, templates);
    }
    out
}
