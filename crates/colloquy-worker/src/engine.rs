//! Handling one message: the policy stage's unit of work.

use crate::loader::LoadedBot;
use colloquy_core::{seal, step, Event, Input, State};
use colloquy_store::{Conversations, StoreError};
use std::sync::Arc;

/// What handling a message produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub replies: Vec<String>,
    /// The events appended for this message (empty for a duplicate).
    pub events: Vec<Event>,
    pub state: State,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user {user}: gave up after {attempts} conflicting writers")]
    Contended { user: String, attempts: u32 },
}

/// How often a message is re-run after losing an expected-seq race to
/// another writer of the same user before the error goes to the caller.
const CONFLICT_RETRIES: u32 = 3;

pub struct Engine {
    bot: Arc<LoadedBot>,
    conversations: Conversations,
}

impl Engine {
    pub fn new(bot: Arc<LoadedBot>, conversations: Conversations) -> Self {
        Engine { bot, conversations }
    }

    pub fn bot(&self) -> &LoadedBot {
        &self.bot
    }

    pub fn conversations(&self) -> &Conversations {
        &self.conversations
    }

    /// Handle one user message at `now_ms`. Idempotent by `message_id`: a
    /// message already in the log produces no new events.
    pub async fn handle(
        &self,
        user: &str,
        message_id: &str,
        text: &str,
        now_ms: i64,
    ) -> Result<Reply, EngineError> {
        let nlu = self.bot.nlu.parse(text);
        let bot = &self.bot.bot;
        for _ in 0..CONFLICT_RETRIES {
            let mut state = self.conversations.load(user).await?;
            let turn = step(
                bot,
                &state,
                &Input {
                    message_id,
                    text,
                    nlu: &nlu,
                },
                now_ms,
                seed(user, message_id),
            );
            let events = seal(turn.events, user, state.seq, now_ms, &bot.id, message_id);
            if events.is_empty() {
                return Ok(Reply {
                    replies: turn.replies,
                    events,
                    state,
                });
            }
            match self.conversations.commit(&mut state, &events).await {
                Ok(()) => {
                    return Ok(Reply {
                        replies: turn.replies,
                        events,
                        state,
                    })
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(
                        user,
                        message_id,
                        "lost an append race; re-running on fresh state"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended {
            user: user.to_string(),
            attempts: CONFLICT_RETRIES,
        })
    }
}

/// The policy's seed: derived from the message, so a redelivery draws the
/// same lottery prize and picks the same response variants (FNV-1a).
fn seed(user: &str, message_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes().chain([0]).chain(message_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
