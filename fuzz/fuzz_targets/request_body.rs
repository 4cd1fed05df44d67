//! A message body as the gateway reads it from an untrusted client: parse
//! (UTF-8, JSON) and check (normalise, length, deny patterns, id) with the
//! same functions the REST and WebSocket handlers call. Never panics; what
//! it accepts is normalised for good, so that a deny pattern sees what the
//! pipeline sees.
#![no_main]

use colloquy_gateway::api::MessageBody;
use colloquy_gateway::input::{InputPolicy, Limits};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A short length limit, so the fuzzer also reaches the length check.
const MAX_TEXT_CHARS: usize = 64;

fn policy() -> &'static InputPolicy {
    static POLICY: OnceLock<InputPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        InputPolicy::new(&Limits {
            max_text_chars: MAX_TEXT_CHARS,
            deny_patterns: vec!["free\\s*money".into(), "退款".into()],
            ..Limits::default()
        })
        .expect("the fuzz target's limits are valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = MessageBody::parse(data) else {
        return;
    };
    let Ok(message) = body.checked(policy()) else {
        return;
    };
    let text = &message.text;
    assert!(!text.is_empty() && text.trim() == text, "{text:?}");
    assert!(text.chars().count() <= MAX_TEXT_CHARS, "{text:?}");
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert_eq!(
        policy().normalise(text).as_ref(),
        Ok(text),
        "normalising an accepted text changes it"
    );
});
