//! The pure policy:
//! `(bot, state, input, now, seed) → next state + events + replies`.
//! No I/O, no clock, no randomness of its own: the same inputs always give
//! the same outputs, so a redelivered message replays identically.

use crate::action::{ActionOutcome, ActionResult, Effect, Said};
use crate::bot::{values_equal, Action, Bot, Condition, SetValue, SlotType, Step, Test};
use crate::event::{
    action_event_id, turn_event_id, user_event_id, Event, EventKind, FlowEnd, SagaCall, SagaOutcome,
};
use crate::nlu::NluResult;
use crate::rollout::Route;
use crate::state::{PendingAction, State};
use crate::value::Value;

/// One user message as the policy sees it.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub message_id: &'a str,
    pub text: &'a str,
    pub nlu: &'a NluResult,
    /// The version answering and why ([`crate::rollout::Rollout::route`]);
    /// recorded when it changes. `None` where no rollout routes (a bot
    /// run from its directory alone, as `colloquy chat --bot` does).
    pub route: Option<&'a Route>,
}

/// What one message produced: the events to append, sealed (numbered after
/// the state the turn started from, stamped with its time, with their ids),
/// the replies they contain, and the state they lead to. A duplicate
/// message produces no events and leaves the state as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The fold of `events` on top of the state given to [`step`]: what a
    /// replay of the log will rebuild, so callers keep it instead of
    /// folding the events again.
    pub state: State,
    pub events: Vec<Event>,
    pub replies: Vec<String>,
}

impl Turn {
    /// A turn that appends nothing (a repeat) and leaves `state` as it was.
    fn nothing(state: State) -> Turn {
        Turn {
            state,
            events: Vec::new(),
            replies: Vec::new(),
        }
    }
}

/// A guard against flows that loop without ever asking the user anything.
const MAX_STEPS_PER_TURN: usize = 256;

/// Run the policy for one message. The state is taken by value: the turn
/// folds its events into it as it makes them and hands it back.
pub fn step(bot: &Bot, state: State, input: &Input, now_ms: i64, seed: u64) -> Turn {
    if state.has_seen(input.message_id) {
        return Turn::nothing(state);
    }
    let first_id = user_event_id(&state.user_id, input.message_id);
    let mut run = Run::new(bot, state, first_id, now_ms, seed);
    run.message(input);
    run.finish()
}

/// Apply the result of a remote action the state waits for: record it,
/// apply what it set and say what it returned, then go on with the flow
/// after the step that called it (or at the step's `on_error` when it
/// failed). A result for a call the state does not wait for (already
/// applied, or never requested) produces nothing, so applying one twice is
/// harmless; its events' ids derive from the call's key.
pub fn resume(bot: &Bot, state: State, result: &ActionResult, now_ms: i64, seed: u64) -> Turn {
    let Some(pending) = state.pending.clone().filter(|p| p.key == result.key) else {
        return Turn::nothing(state);
    };
    let first_id = action_event_id(&state.user_id, pending.request);
    let mut run = Run::new(bot, state, first_id, now_ms, seed);
    run.resolve(&pending, &result.outcome);
    run.finish()
}

/// splitmix64: a tiny, well-distributed generator, seeded from the input.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Run<'a> {
    bot: &'a Bot,
    /// Id of the turn's first event; the others derive from it.
    first_id: uuid::Uuid,
    now_ms: i64,
    /// The state with this turn's events folded in so far, so every
    /// decision sees exactly what a later fold of the log will see.
    state: State,
    events: Vec<Event>,
    replies: Vec<String>,
    rng: SplitMix,
}

enum Filled {
    Value(Value),
    /// A value was there but failed validation. `guessed` is set when it
    /// was only the whole reply taken as the value, which is weak evidence
    /// that the user was answering the question at all.
    Invalid {
        reason: String,
        guessed: bool,
    },
    Nothing,
}

impl<'a> Run<'a> {
    fn new(bot: &'a Bot, state: State, first_id: uuid::Uuid, now_ms: i64, seed: u64) -> Self {
        Run {
            bot,
            first_id,
            now_ms,
            state,
            events: Vec::new(),
            replies: Vec::new(),
            rng: SplitMix(seed),
        }
    }

    fn finish(mut self) -> Turn {
        crate::redact::mark(self.bot, &self.state, &mut self.events);
        Turn {
            state: self.state,
            events: self.events,
            replies: self.replies,
        }
    }

    /// Seal an event (as [`crate::seal`] would) and fold it in.
    fn emit(&mut self, kind: EventKind) {
        let event = Event {
            event_id: turn_event_id(self.first_id, self.events.len()),
            user_id: self.state.user_id.clone(),
            seq: self.state.seq + 1,
            ts_ms: self.now_ms,
            bot: self.bot.id.clone(),
            personal: false,
            sealed: None,
            kind,
        };
        self.state.apply(&event);
        self.events.push(event);
    }

    fn say(&mut self, response: &str) {
        self.say_with(response, &[]);
    }

    /// Say `response`, its slot holes filled from `variables` first, then
    /// from the slots. False if the bot has no such response.
    fn say_with(&mut self, response: &str, variables: &[(String, Value)]) -> bool {
        let Some(variants) = self.bot.responses.get(response) else {
            return false;
        };
        if variants.is_empty() {
            return true;
        }
        let pick = (self.rng.next() % variants.len() as u64) as usize;
        let text = if variables.is_empty() {
            variants[pick].render(&self.state.slots)
        } else {
            let mut values = self.state.slots.clone();
            values.extend(variables.iter().cloned());
            variants[pick].render(&values)
        };
        self.replies.push(text.clone());
        self.emit(EventKind::BotSaid {
            text,
            response: Some(response.to_string()),
            payload: None,
            shown: None,
        });
        true
    }

    fn set_slot(&mut self, slot: &str, value: Value) {
        if self.state.slots.get(slot) == Some(&value) {
            return;
        }
        let sensitive = self.bot.slots.get(slot).is_some_and(|s| s.sensitive);
        self.emit(EventKind::SlotSet {
            slot: slot.to_string(),
            value,
            sensitive,
        });
    }

    fn clear_slot(&mut self, slot: &str) {
        if self.state.slots.contains_key(slot) {
            self.emit(EventKind::SlotCleared {
                slot: slot.to_string(),
            });
        }
    }

    fn message(&mut self, input: &Input) {
        let expired = self.now_ms - self.state.last_ts_ms > self.bot.session_timeout_ms;
        // The user's message is always the first event of its turn, so its
        // event id (index 0) is known before the policy runs: the gateway
        // hands it out when it accepts the message.
        self.emit(EventKind::UserSaid {
            message_id: input.message_id.to_string(),
            text: input.text.to_string(),
        });
        if self.state.session == 0 || expired {
            if let Some(f) = self.state.flow.clone() {
                self.emit(EventKind::FlowEnded {
                    flow: f.flow,
                    reason: FlowEnd::Expired,
                });
            }
            let kept = self
                .state
                .slots
                .keys()
                .filter(|s| self.bot.slots.get(*s).is_some_and(|d| d.remember))
                .cloned()
                .collect();
            self.emit(EventKind::SessionStarted {
                session: self.state.session + 1,
                kept,
            });
        }
        if let Some(route) = input.route {
            if self.state.route.as_ref() != Some(route) {
                self.emit(EventKind::RouteChanged {
                    version: route.version.clone(),
                    reason: route.reason,
                    tail: route.tail,
                });
            }
        }
        self.end_withdrawn_flow();
        let nlu = input.nlu;
        self.emit(EventKind::IntentRecognised {
            intent: nlu.intent.clone(),
            confidence: nlu.confidence,
            entities: nlu.entities.clone(),
        });

        let intent_flow = nlu
            .intent
            .as_ref()
            .and_then(|i| self.bot.intent_flows.get(i))
            .cloned();
        if let Some(pos) = self.state.flow.clone() {
            let flow = &self.bot.flows[&pos.flow];
            if let Some(Step::Ask {
                slot,
                prompt,
                reprompt,
                max_attempts,
                ..
            }) = flow.steps.get(pos.step)
            {
                let filled = self.value_for(slot, input);
                let prompt = reprompt.as_ref().unwrap_or(prompt);
                match (filled, &intent_flow, nlu.intent.as_ref()) {
                    (Filled::Value(v), ..) => {
                        self.set_slot(slot, v);
                        self.fill_from_entities(input, Some(slot));
                        self.run_flow(&pos.flow, pos.step + 1);
                    }
                    // The user moved on to something else: follow them.
                    (Filled::Nothing | Filled::Invalid { guessed: true, .. }, Some(f), _)
                        if *f != pos.flow =>
                    {
                        self.start_flow(f, input)
                    }
                    (Filled::Invalid { reason, .. }, ..) => {
                        self.emit(EventKind::SlotRejected {
                            slot: slot.clone(),
                            text: input.text.to_string(),
                            reason,
                        });
                        self.fill_from_entities(input, Some(slot));
                        let invalid = self.bot.slots[slot].invalid.clone();
                        self.retry(
                            &pos.flow,
                            pos.step,
                            pos.attempts,
                            *max_attempts,
                            invalid.as_deref(),
                            prompt,
                        );
                    }
                    (Filled::Nothing, None, Some(intent))
                        if self.bot.intents[intent].response.is_some() =>
                    {
                        // Answer the aside, then return to the question.
                        let r = self.bot.intents[intent]
                            .response
                            .clone()
                            .unwrap_or_default();
                        self.fill_from_entities(input, Some(slot));
                        self.say(&r);
                        self.say(prompt);
                    }
                    _ => {
                        // Keep what else the message said ("make it medium").
                        self.fill_from_entities(input, Some(slot));
                        self.retry(
                            &pos.flow,
                            pos.step,
                            pos.attempts,
                            *max_attempts,
                            None,
                            prompt,
                        )
                    }
                }
                return;
            }
        }
        match (intent_flow, nlu.intent.as_ref()) {
            (Some(f), _) => self.start_flow(&f, input),
            (None, Some(intent)) => {
                self.fill_from_entities(input, None);
                match self.bot.intents[intent].response.clone() {
                    Some(r) => self.say(&r),
                    None => self.say(&self.bot.fallback.clone()),
                }
            }
            (None, None) => {
                // Not understood, but what it named was heard: a model
                // asked about in words the classifier does not know is
                // still "that shoe" tomorrow.
                self.fill_from_entities(input, None);
                self.say(&self.bot.fallback.clone())
            }
        }
    }

    /// A rollback can move a user in the middle of a flow to a version
    /// without that flow (or with fewer steps): end it and say so, rather
    /// than guess where the user stood.
    fn end_withdrawn_flow(&mut self) {
        let Some(pos) = self.state.flow.clone() else {
            return;
        };
        if self
            .bot
            .flows
            .get(&pos.flow)
            .is_some_and(|f| pos.step < f.steps.len())
        {
            return;
        }
        self.emit(EventKind::FlowEnded {
            flow: pos.flow,
            reason: FlowEnd::Withdrawn,
        });
        let r = self
            .bot
            .withdrawn
            .clone()
            .unwrap_or_else(|| self.bot.fallback.clone());
        self.say(&r);
    }

    fn start_flow(&mut self, flow: &str, input: &Input) {
        if let Some(active) = self.state.flow.clone() {
            self.emit(EventKind::FlowEnded {
                flow: active.flow,
                reason: FlowEnd::Replaced,
            });
        }
        self.emit(EventKind::FlowStarted {
            flow: flow.to_string(),
        });
        self.fill_from_entities(input, None);
        self.run_flow(flow, 0);
    }

    /// Another failed attempt at a slot: re-prompt, or give up when out of attempts.
    fn retry(
        &mut self,
        flow: &str,
        step: usize,
        attempts: u32,
        max: u32,
        invalid: Option<&str>,
        reprompt: &str,
    ) {
        let attempts = attempts + 1;
        if attempts >= max {
            self.emit(EventKind::FlowEnded {
                flow: flow.to_string(),
                reason: FlowEnd::Abandoned,
            });
            let r = self
                .bot
                .abandon
                .clone()
                .unwrap_or_else(|| self.bot.fallback.clone());
            self.say(&r);
            return;
        }
        self.emit(EventKind::FlowStep {
            flow: flow.to_string(),
            step,
            attempts,
        });
        if let Some(i) = invalid {
            self.say(i);
        }
        self.say(reprompt);
    }

    /// Fill every slot (but the one being asked for, which its question
    /// handles) that a mapping fills from an entity in the message, so
    /// that "星云跑鞋有 39 码吗" answers two questions before they are
    /// asked, whatever the intent, a fallback included.
    fn fill_from_entities(&mut self, input: &Input, except: Option<&str>) {
        let found: Vec<(String, Value)> = self
            .bot
            .slots
            .keys()
            .filter(|name| Some(name.as_str()) != except)
            .filter_map(|name| Some((name.clone(), self.mapped(name, input, false)?)))
            .collect();
        for (slot, raw) in found {
            if let Filled::Value(v) = check(&self.bot.slots[&slot], raw, false) {
                self.set_slot(&slot, v);
            }
        }
    }

    /// The raw value of the first of `slot`'s mappings that applies to this
    /// message and whose entity it holds; a list slot takes every match.
    fn mapped(&self, slot: &str, input: &Input, asked: bool) -> Option<Value> {
        let def = &self.bot.slots[slot];
        let nlu = input.nlu;
        let intent = nlu.intent.as_deref();
        def.from
            .iter()
            .filter(|m| m.applies(intent, asked))
            .find_map(|m| {
                let mut matches = nlu.entities.iter().filter(|e| e.entity == m.entity);
                if def.slot_type == SlotType::List {
                    let items: Vec<Value> = matches.map(|e| e.value.clone()).collect();
                    (!items.is_empty()).then_some(Value::List(items))
                } else {
                    matches.next().map(|e| e.value.clone())
                }
            })
    }

    /// The value the answer to a question for `slot` gives, converted and
    /// validated: from the slot's mappings, else (since the user was asked)
    /// any number for a numeric slot, yes or no, or the whole reply.
    fn value_for(&self, slot: &str, input: &Input) -> Filled {
        let def = &self.bot.slots[slot];
        let nlu = input.nlu;
        let first = |name: &str| {
            nlu.entities
                .iter()
                .find(|m| m.entity == name)
                .map(|m| m.value.clone())
        };
        let raw = self.mapped(slot, input, true);
        // The whole reply is the last candidate; validation decides.
        let whole = || {
            let t = input.text.trim();
            (!t.is_empty()).then(|| Value::Text(t.to_string()))
        };
        let from_entity = raw.is_some();
        let raw = raw.or_else(|| match def.slot_type {
            SlotType::Int | SlotType::Float => first("number"),
            SlotType::Bool => yes_no(input.text).map(Value::Bool),
            SlotType::Enum => def
                .values
                .iter()
                .flatten()
                .filter(|v| input.text.to_lowercase().contains(&v.to_lowercase()))
                .max_by_key(|v| v.len())
                .map(|v| Value::Text(v.clone()))
                .or_else(whole),
            SlotType::Text => whole(),
            SlotType::List => None,
        });
        let Some(raw) = raw else {
            return Filled::Nothing;
        };
        let guessed = !from_entity && matches!(def.slot_type, SlotType::Text | SlotType::Enum);
        check(def, raw, guessed)
    }

    fn run_flow(&mut self, flow: &str, start: usize) {
        let mut flow = flow.to_string();
        let mut i = start;
        for _ in 0..MAX_STEPS_PER_TURN {
            let steps = &self.bot.flows[&flow].steps;
            let Some(step) = steps.get(i).cloned() else {
                self.emit(EventKind::FlowEnded {
                    flow,
                    reason: FlowEnd::Completed,
                });
                return;
            };
            i += 1;
            match step {
                Step::Ask {
                    slot,
                    prompt,
                    force,
                    ..
                } => {
                    if self.state.slots.contains_key(&slot) && !force {
                        continue;
                    }
                    self.emit(EventKind::FlowStep {
                        flow: flow.clone(),
                        step: i - 1,
                        attempts: 0,
                    });
                    self.say(&prompt);
                    return;
                }
                Step::Say(r) => self.say(&r),
                Step::Set(values) => {
                    for (slot, v) in values {
                        let v = match v {
                            SetValue::Literal(v) => v,
                            SetValue::Template(t) => Value::Text(t.render(&self.state.slots)),
                        };
                        self.set_slot(&slot, v);
                    }
                }
                Step::Add(values) => {
                    for (slot, by) in values {
                        let current = self
                            .state
                            .slots
                            .get(&slot)
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0);
                        let v = match self.bot.slots[&slot].slot_type {
                            SlotType::Int => Value::Int((current + by) as i64),
                            _ => Value::Float(current + by),
                        };
                        self.set_slot(&slot, v);
                    }
                }
                Step::Clear(slots) => slots.iter().for_each(|s| self.clear_slot(s)),
                Step::Action { name, .. } => {
                    if matches!(self.bot.actions[&name], Action::Webhook(_)) {
                        // Wait at this step for the result.
                        self.emit(EventKind::FlowStep {
                            flow: flow.clone(),
                            step: i - 1,
                            attempts: 0,
                        });
                        self.request(&name);
                        return;
                    }
                    self.action(&name)
                }
                Step::Branch {
                    cond,
                    then,
                    otherwise,
                } => {
                    i = if self.holds(&cond) {
                        then
                    } else {
                        otherwise.unwrap_or(i)
                    };
                }
                Step::Saga { name, .. } => {
                    self.emit(EventKind::FlowStep {
                        flow: flow.clone(),
                        step: i - 1,
                        attempts: 0,
                    });
                    let id = turn_event_id(self.first_id, self.events.len());
                    self.emit(EventKind::SagaStarted {
                        saga: name.clone(),
                        id,
                    });
                    self.request_saga(SagaCall {
                        saga: name,
                        id,
                        step: 0,
                        compensation: false,
                        round: 1,
                        abandoned: 0,
                    });
                    return;
                }
                Step::Goto(t) => i = t,
                Step::Flow(next) => {
                    self.emit(EventKind::FlowEnded {
                        flow: flow.clone(),
                        reason: FlowEnd::Replaced,
                    });
                    self.emit(EventKind::FlowStarted { flow: next.clone() });
                    flow = next;
                    i = 0;
                }
                Step::Handoff(r) => {
                    self.say(&r);
                    self.emit(EventKind::HandedOff {
                        reason: flow.clone(),
                    });
                    self.emit(EventKind::FlowEnded {
                        flow,
                        reason: FlowEnd::Completed,
                    });
                    return;
                }
                Step::End => {
                    self.emit(EventKind::FlowEnded {
                        flow,
                        reason: FlowEnd::Completed,
                    });
                    return;
                }
            }
        }
        // A loop that never waits for the user: stop it rather than spin.
        self.emit(EventKind::FlowEnded {
            flow,
            reason: FlowEnd::Abandoned,
        });
        self.say(&self.bot.fallback.clone());
    }

    fn holds(&self, c: &Condition) -> bool {
        match c {
            Condition::All(cs) => cs.iter().all(|c| self.holds(c)),
            Condition::Any(cs) => cs.iter().any(|c| self.holds(c)),
            Condition::Test { slot, test } => {
                let v = self.state.slots.get(slot);
                let num = v.and_then(Value::as_f64);
                match test {
                    Test::Set(want) => v.is_some() == *want,
                    Test::Eq(x) => v.is_some_and(|v| values_equal(v, x)),
                    Test::Ne(x) => !v.is_some_and(|v| values_equal(v, x)),
                    Test::In(xs) => v.is_some_and(|v| xs.iter().any(|x| values_equal(v, x))),
                    Test::Lt(b) => num.is_some_and(|n| n < *b),
                    Test::Le(b) => num.is_some_and(|n| n <= *b),
                    Test::Gt(b) => num.is_some_and(|n| n > *b),
                    Test::Ge(b) => num.is_some_and(|n| n >= *b),
                }
            }
        }
    }

    fn action(&mut self, name: &str) {
        let action = &self.bot.actions[name];
        let (table, set) = match action {
            Action::Lookup { table, set, .. } | Action::Draw { table, set, .. } => {
                (&self.bot.tables[table], set)
            }
            // Remote: the action stage calls it (see `request`).
            Action::Webhook(_) => return,
        };
        let row = match action {
            Action::Lookup {
                matches, between, ..
            } => table.iter().find(|row| {
                matches.iter().all(
                    |(col, slot)| match (row.get(col), self.state.slots.get(slot)) {
                        (Some(a), Some(b)) => values_equal(a, b),
                        _ => false,
                    },
                ) && between.as_ref().is_none_or(|(slot, lo, hi)| {
                    let x = self.state.slots.get(slot).and_then(Value::as_f64);
                    let lo = row.get(lo).and_then(Value::as_f64);
                    let hi = row.get(hi).and_then(Value::as_f64);
                    matches!((x, lo, hi), (Some(x), Some(lo), Some(hi)) if lo <= x && x <= hi)
                })
            }),
            Action::Webhook(_) => None,
            Action::Draw { weight, .. } => {
                let weights: Vec<f64> = table
                    .iter()
                    .map(|r| r.get(weight).and_then(Value::as_f64).unwrap_or(0.0))
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut x = self.rng.unit() * total;
                let mut pick = None;
                for (row, w) in table.iter().zip(&weights) {
                    if *w > 0.0 && x < *w {
                        pick = Some(row);
                        break;
                    }
                    x -= w;
                }
                pick.or_else(|| {
                    table
                        .iter()
                        .zip(&weights)
                        .rev()
                        .find(|(_, w)| **w > 0.0)
                        .map(|(r, _)| r)
                })
            }
        };
        let writes: Vec<(String, Option<Value>)> = set
            .iter()
            .map(|(slot, col)| (slot.clone(), row.and_then(|r| r.get(col)).cloned()))
            .collect();
        let result = serde_json::json!({
            "found": row.is_some(),
            "set": writes.iter().filter_map(|(s, v)| v.as_ref().map(|v| (s.clone(), serde_json::to_value(v).unwrap_or_default()))).collect::<serde_json::Map<_, _>>(),
        });
        self.emit(EventKind::ActionCalled {
            action: name.to_string(),
            result,
        });
        for (slot, v) in writes {
            match v.and_then(|v| convert(self.bot.slots[&slot].slot_type, v)) {
                Some(v) => self.set_slot(&slot, v),
                None => self.clear_slot(&slot),
            }
        }
    }

    /// Stop for the remote action `name`: the action stage calls it with
    /// this event's id as the idempotency key and hands the result to
    /// [`resume`].
    fn request(&mut self, name: &str) {
        let key = turn_event_id(self.first_id, self.events.len());
        self.request_call(name, key, None);
    }

    /// Stop for a step (or a compensation) of a saga, keyed by its place
    /// in the run, so every round of it is one operation to the server.
    fn request_saga(&mut self, call: SagaCall) {
        let step = &self.bot.sagas[&call.saga].steps[call.step];
        let action = match (&step.compensate, call.compensation) {
            (Some(c), true) => c.clone(),
            _ => step.action.clone(),
        };
        let key = call.key();
        self.request_call(&action, key, Some(Box::new(call)));
    }

    fn request_call(&mut self, name: &str, key: uuid::Uuid, saga: Option<Box<SagaCall>>) {
        let Some(Action::Webhook(w)) = self.bot.actions.get(name) else {
            return;
        };
        let slots = match &w.send {
            None => self.state.slots.clone(),
            Some(names) => names
                .iter()
                .filter_map(|n| Some((n.clone(), self.state.slots.get(n)?.clone())))
                .collect(),
        };
        self.emit(EventKind::ActionRequested {
            action: name.to_string(),
            key,
            slots,
            saga,
        });
    }

    /// The flow step that called the pending action, if the flow still
    /// waits there: the result goes on from it.
    fn calling_step(&self) -> Option<(String, usize, Option<usize>)> {
        let pos = self.state.flow.as_ref()?;
        match self.bot.flows.get(&pos.flow)?.steps.get(pos.step)? {
            Step::Action { on_error, .. } | Step::Saga { on_error, .. } => {
                Some((pos.flow.clone(), pos.step, *on_error))
            }
            _ => None,
        }
    }

    fn resolve(&mut self, pending: &PendingAction, outcome: &ActionOutcome) {
        let calling = self.calling_step();
        match outcome {
            ActionOutcome::Completed {
                effects,
                responses,
                ignored,
            } => {
                let followup = self.apply(pending, effects, responses, ignored);
                match &pending.saga {
                    None => {
                        if let Some(next) = followup {
                            if matches!(self.bot.actions[&next], Action::Webhook(_)) {
                                self.request(&next);
                                return;
                            }
                            self.action(&next);
                        }
                        if let Some((flow, step, _)) = calling {
                            self.run_flow(&flow, step + 1);
                        }
                    }
                    Some(call) if !call.compensation => {
                        if call.step + 1 < self.bot.sagas[&call.saga].steps.len() {
                            self.request_saga(SagaCall {
                                step: call.step + 1,
                                round: 1,
                                ..(**call).clone()
                            });
                            return;
                        }
                        self.emit(EventKind::SagaEnded {
                            saga: call.saga.clone(),
                            id: call.id,
                            outcome: SagaOutcome::Completed,
                        });
                        if let Some((flow, step, _)) = calling {
                            self.run_flow(&flow, step + 1);
                        }
                    }
                    Some(call) => self.compensate_below(call, call.abandoned, calling),
                }
            }
            ActionOutcome::Failed { reason, attempts } => {
                self.emit(EventKind::ActionFailed {
                    action: pending.action.clone(),
                    key: pending.key,
                    reason: reason.clone(),
                    attempts: *attempts,
                });
                match &pending.saga {
                    None => self.failed(calling),
                    Some(call) if !call.compensation => {
                        self.compensate_below(call, call.abandoned, calling)
                    }
                    Some(call) if call.round < self.bot.sagas[&call.saga].compensation_rounds => {
                        self.request_saga(SagaCall {
                            round: call.round + 1,
                            ..(**call).clone()
                        });
                    }
                    Some(call) => {
                        self.emit(EventKind::CompensationAbandoned {
                            action: pending.action.clone(),
                            key: pending.key,
                            call: call.clone(),
                        });
                        self.compensate_below(call, call.abandoned + 1, calling);
                    }
                }
            }
        }
    }

    /// Record an answered call and apply what it asked for: slots set,
    /// then responses said. Returns the followup action it named, if any;
    /// a saga's steps run in the saga's order, so inside one a followup is
    /// not run (it is recorded as ignored).
    fn apply(
        &mut self,
        pending: &PendingAction,
        effects: &[Effect],
        responses: &[Said],
        ignored: &[String],
    ) -> Option<String> {
        let mut ignored = ignored.to_vec();
        let mut writes = Vec::new();
        let mut followup = None;
        for effect in effects {
            match effect {
                Effect::SetSlot { slot, value } => match (self.bot.slots.get(slot), value) {
                    (None, _) => ignored.push(format!("slot `{slot}`: the bot has no such slot")),
                    (Some(_), None) => writes.push(Some((slot.clone(), None))),
                    (Some(def), Some(v)) => match check(def, v.clone(), false) {
                        Filled::Value(v) => writes.push(Some((slot.clone(), Some(v)))),
                        Filled::Invalid { reason, .. } => {
                            ignored.push(format!("slot `{slot}`: {reason}"))
                        }
                        Filled::Nothing => {}
                    },
                },
                Effect::ResetSlots => writes.push(None),
                Effect::Followup { action } if pending.saga.is_some() => {
                    ignored.push(format!("followup `{action}`: not run inside a saga"))
                }
                Effect::Followup { action } if self.bot.actions.contains_key(action) => {
                    followup = Some(action.clone())
                }
                Effect::Followup { action } => {
                    ignored.push(format!("followup `{action}`: the bot has no such action"))
                }
            }
        }
        ignored.extend(responses.iter().filter_map(|r| match r {
            Said::Named { response, .. } if !self.bot.responses.contains_key(response) => Some(
                format!("response `{response}`: the bot has no such response"),
            ),
            _ => None,
        }));
        self.emit(EventKind::ActionCompleted {
            action: pending.action.clone(),
            key: pending.key,
            ignored,
        });
        for write in writes {
            match write {
                Some((slot, Some(v))) => self.set_slot(&slot, v),
                Some((slot, None)) => self.clear_slot(&slot),
                None => {
                    let all: Vec<String> = self.state.slots.keys().cloned().collect();
                    all.iter().for_each(|s| self.clear_slot(s));
                }
            }
        }
        for said in responses {
            match said {
                Said::Text { text, payload } => {
                    if !text.is_empty() {
                        self.replies.push(text.clone());
                    }
                    self.emit(EventKind::BotSaid {
                        text: text.clone(),
                        response: None,
                        payload: payload.clone().map(Box::new),
                        shown: None,
                    });
                }
                Said::Named {
                    response,
                    variables,
                } => {
                    self.say_with(response, variables);
                }
            }
        }
        followup
    }

    /// Undo, last first, the steps of the saga run done before `call`'s
    /// step (those with a compensation); once none is left, end the run and
    /// take the failure path.
    fn compensate_below(
        &mut self,
        call: &SagaCall,
        abandoned: u32,
        calling: Option<(String, usize, Option<usize>)>,
    ) {
        let steps = &self.bot.sagas[&call.saga].steps;
        if let Some(j) = (0..call.step)
            .rev()
            .find(|j| steps[*j].compensate.is_some())
        {
            self.request_saga(SagaCall {
                step: j,
                compensation: true,
                round: 1,
                abandoned,
                ..call.clone()
            });
            return;
        }
        self.emit(EventKind::SagaEnded {
            saga: call.saga.clone(),
            id: call.id,
            outcome: if abandoned > 0 {
                SagaOutcome::Stuck
            } else {
                SagaOutcome::Compensated
            },
        });
        self.failed(calling);
    }

    /// A call (or a saga) failed for good: go on at the step's `on_error`,
    /// or say the bot's `action_failed` and end the flow.
    fn failed(&mut self, calling: Option<(String, usize, Option<usize>)>) {
        match calling {
            Some((flow, _, Some(on_error))) => self.run_flow(&flow, on_error),
            calling => {
                let r = self
                    .bot
                    .action_failed
                    .clone()
                    .unwrap_or_else(|| self.bot.fallback.clone());
                self.say(&r);
                if let Some((flow, ..)) = calling {
                    self.emit(EventKind::FlowEnded {
                        flow,
                        reason: FlowEnd::Failed,
                    });
                }
            }
        }
    }
}

/// Convert a raw value into the slot's type, if it can be.
/// A raw value converted to the slot's type and validated.
fn check(def: &crate::bot::Slot, raw: Value, guessed: bool) -> Filled {
    match convert(def.slot_type, raw) {
        Some(v) => match validate(def, &v) {
            Ok(()) => Filled::Value(v),
            Err(reason) => Filled::Invalid { reason, guessed },
        },
        None => Filled::Invalid {
            reason: format!("not a valid {:?}", def.slot_type).to_lowercase(),
            guessed,
        },
    }
}

fn convert(t: SlotType, v: Value) -> Option<Value> {
    Some(match (t, v) {
        (SlotType::Int, Value::Int(i)) => Value::Int(i),
        (SlotType::Int, Value::Float(f)) if f.fract() == 0.0 => Value::Int(f as i64),
        (SlotType::Int, Value::Text(s)) => Value::Int(s.trim().parse().ok()?),
        (SlotType::Float, v) => Value::Float(v.as_f64()?),
        (SlotType::Bool, Value::Bool(b)) => Value::Bool(b),
        (SlotType::Bool, Value::Text(s)) => Value::Bool(yes_no(&s)?),
        (SlotType::Text | SlotType::Enum, Value::Text(s)) => Value::Text(s),
        (SlotType::Text | SlotType::Enum, v @ (Value::Int(_) | Value::Float(_))) => {
            Value::Text(v.to_string())
        }
        (SlotType::List, Value::List(l)) => Value::List(l),
        (SlotType::List, v) => Value::List(vec![v]),
        _ => return None,
    })
}

fn validate(def: &crate::bot::Slot, v: &Value) -> Result<(), String> {
    if let (Some([lo, hi]), Some(x)) = (def.range, v.as_f64()) {
        if x < lo || x > hi {
            return Err(format!("{x} is outside {lo}..={hi}"));
        }
    }
    if let (Some(values), Value::Text(t)) = (&def.values, v) {
        if !values.iter().any(|a| a.eq_ignore_ascii_case(t)) {
            return Err(format!("`{t}` is not one of {}", values.join(", ")));
        }
    }
    if let Some(p) = &def.pattern {
        if !p.is_match(&v.to_string()) {
            return Err(format!("`{v}` does not match the expected format"));
        }
    }
    Ok(())
}

/// Yes/no in Chinese and English. Negations are checked first: "不要" holds "要".
fn yes_no(text: &str) -> Option<bool> {
    let t = text.trim().to_lowercase();
    const NO: &[&str] = &[
        "不", "没", "否", "别", "算了", "no", "nope", "nah", "stop", "cancel",
    ];
    const YES: &[&str] = &[
        "是", "要", "好", "对", "行", "可以", "嗯", "继续", "再来", "yes", "yeah", "yep", "sure",
        "ok", "okay", "y",
    ];
    let word = |w: &str| {
        if w.is_ascii() {
            t.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|x| x == w)
        } else {
            t.contains(w)
        }
    };
    if NO.iter().any(|w| word(w)) {
        Some(false)
    } else if YES.iter().any(|w| word(w)) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_handles_negation_before_affirmation() {
        assert_eq!(yes_no("不要了"), Some(false));
        assert_eq!(yes_no("要"), Some(true));
        assert_eq!(yes_no("OK, sure"), Some(true));
        assert_eq!(yes_no("nothing"), None, "`no` inside a word is not a no");
        assert_eq!(yes_no("hmm"), None);
    }

    #[test]
    fn splitmix_is_deterministic_and_spread() {
        let a: Vec<u64> = {
            let mut r = SplitMix(7);
            (0..4).map(|_| r.next()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix(7);
            (0..4).map(|_| r.next()).collect()
        };
        assert_eq!(a, b);
        let mut r = SplitMix(1);
        let mean = (0..10_000).map(|_| r.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
