//! Checking and normalising what users send before it reaches the bus.

use regex::Regex;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Limits on incoming messages (the `[limits]` section of the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_text_chars: usize,
    pub max_wait_ms: u64,
    /// Patterns (regular expressions) that reject a message outright.
    pub deny_patterns: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_text_chars: 4000,
            max_wait_ms: 10_000,
            deny_patterns: Vec::new(),
        }
    }
}

/// Why a message was refused; maps to a 4xx with a stable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("text is empty")]
    Empty,
    #[error("text is {0} characters long; at most {1} are allowed")]
    TooLong(usize, usize),
    #[error("text is not allowed by the content policy")]
    Denied,
}

impl InputError {
    pub fn code(&self) -> &'static str {
        match self {
            InputError::Empty => "empty_text",
            InputError::TooLong(..) => "text_too_long",
            InputError::Denied => "text_denied",
        }
    }
}

pub struct InputPolicy {
    max_chars: usize,
    deny: Vec<Regex>,
}

impl InputPolicy {
    pub fn new(limits: &Limits) -> Result<InputPolicy, String> {
        let deny = limits
            .deny_patterns
            .iter()
            .map(|p| {
                Regex::new(&format!("(?i){p}"))
                    .map_err(|e| format!("limits.deny_patterns: `{p}`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(InputPolicy {
            max_chars: limits.max_text_chars,
            deny,
        })
    }

    /// NFKC, control characters removed (newlines and tabs become spaces),
    /// trimmed; then checked for length and against the deny patterns.
    pub fn normalise(&self, raw: &str) -> Result<String, InputError> {
        let text: String = raw
            .nfkc()
            .map(|c| {
                if c == '\n' || c == '\t' || c == '\r' {
                    ' '
                } else {
                    c
                }
            })
            .filter(|c| !c.is_control() && !is_format_char(*c))
            .collect();
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(InputError::Empty);
        }
        let n = text.chars().count();
        if n > self.max_chars {
            return Err(InputError::TooLong(n, self.max_chars));
        }
        if self.deny.iter().any(|r| r.is_match(&text)) {
            return Err(InputError::Denied);
        }
        Ok(text)
    }
}

/// Invisible formatting characters (zero-width, bidi overrides) that can
/// hide text from reviewers and patterns.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_checks() {
        let p = InputPolicy::new(&Limits {
            deny_patterns: vec!["free\\s*money".into()],
            ..Limits::default()
        })
        .unwrap();
        assert_eq!(
            p.normalise("  ３９码\u{0007}\u{200B}有吗\n ").unwrap(),
            "39码有吗"
        );
        assert_eq!(p.normalise(" \u{0000}\t"), Err(InputError::Empty));
        assert_eq!(p.normalise("FREE   money now"), Err(InputError::Denied));
        assert_eq!(
            p.normalise(&"好".repeat(4001)),
            Err(InputError::TooLong(4001, 4000))
        );
        assert!(p.normalise(&"好".repeat(4000)).is_ok());
        assert!(InputPolicy::new(&Limits {
            deny_patterns: vec!["(".into()],
            ..Limits::default()
        })
        .is_err());
    }
}
