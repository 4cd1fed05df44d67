//! Who a verified token speaks for and what it may do.

use std::fmt;

use serde::{Deserialize, Serialize};

use colloquy_core::check_user_id;

use super::error::{shown, AuthError};

/// Permission carried by a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Chat as the token's own user.
    Chat,
    /// Act for any user; implies `Chat`.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Admin => "admin",
        }
    }

    /// Parses a `scope` claim (space-separated, OAuth style) into the
    /// effective scopes, sorted, without duplicates, with `admin` implying
    /// `chat`. Unknown or missing values are errors (see the module docs).
    pub fn parse_claim(claim: &str) -> Result<Vec<Scope>, AuthError> {
        let mut scopes = Vec::new();
        for word in claim.split_ascii_whitespace() {
            let scope: Scope = word.parse()?;
            scopes.push(scope);
            if scope == Scope::Admin {
                scopes.push(Scope::Chat);
            }
        }
        if scopes.is_empty() {
            return Err(AuthError::BadScope("scope claim is empty".into()));
        }
        scopes.sort();
        scopes.dedup();
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = AuthError;

    /// Exact, lowercase names only: scopes are compared as opaque strings
    /// in OAuth, and accepting `Admin` here would be accepting something
    /// other issuers may mean differently.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "chat" => Ok(Scope::Chat),
            "admin" => Ok(Scope::Admin),
            _ => Err(AuthError::BadScope(format!(
                "unknown scope {}; known scopes are chat and admin",
                shown(s)
            ))),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim, already checked with [`check_user_id`].
    pub user_id: String,
    /// Effective scopes: sorted, deduplicated, `Admin` implies `Chat`.
    pub scopes: Vec<Scope>,
    /// The `exp` claim (Unix seconds); long-lived connections such as
    /// WebSockets can use it to close when the token runs out.
    pub expires_at: u64,
    /// Tells tokens apart for per-token rate limits (a hash of the token,
    /// never the token itself).
    pub token_id: u64,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// `admin` may act for anyone; `chat` only for its own user id.
    pub fn can_act_for(&self, user_id: &str) -> bool {
        self.is_admin() || (self.scopes.contains(&Scope::Chat) && self.user_id == user_id)
    }

    /// [`Principal::can_act_for`] as a `Result`, for `?` in handlers.
    pub fn authorize_for(&self, user_id: &str) -> Result<(), AuthError> {
        if self.can_act_for(user_id) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

/// `sub` becomes the user id, so it must pass core's rule for user ids,
/// which every store key, topic key and URL relies on.
pub(super) fn check_subject(sub: &str) -> Result<(), AuthError> {
    check_user_id(sub).map_err(|_| AuthError::BadSubject(USER_ID_RULE))
}

pub(super) const USER_ID_RULE: &str =
    "sub must be 1-128 characters of A-Z a-z 0-9 . _ - @ : (it is used as the user id)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_claim_parsing() {
        assert_eq!(Scope::parse_claim("chat").unwrap(), vec![Scope::Chat]);
        assert_eq!(
            Scope::parse_claim("admin").unwrap(),
            vec![Scope::Chat, Scope::Admin]
        );
        assert_eq!(
            Scope::parse_claim("chat admin").unwrap(),
            vec![Scope::Chat, Scope::Admin]
        );
        assert_eq!(
            Scope::parse_claim("  admin   chat chat ").unwrap(),
            vec![Scope::Chat, Scope::Admin]
        );
        for bad in ["", "   ", "Chat", "ADMIN", "chat superuser", "read:chat"] {
            assert!(
                matches!(Scope::parse_claim(bad), Err(AuthError::BadScope(_))),
                "{bad:?}"
            );
        }
        let msg = Scope::parse_claim("chat superuser")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"superuser\""), "{msg}");
        // Values with odd characters are not echoed.
        let msg = Scope::parse_claim("evil\u{1b}[31m")
            .unwrap_err()
            .to_string();
        assert!(
            !msg.contains('\u{1b}') && msg.contains("not shown"),
            "{msg}"
        );
    }

    #[test]
    fn user_id_rule() {
        for ok in [
            "alice",
            "a",
            "user@example.com",
            "tenant:42",
            "A.b_c-d",
            &"x".repeat(128),
        ] {
            assert_eq!(check_subject(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a\nb",
            "é",
            "a%2f",
            "<script>",
            &"x".repeat(129),
        ] {
            assert_eq!(
                check_subject(bad),
                Err(AuthError::BadSubject(USER_ID_RULE)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn principal_rights() {
        let chat = Principal {
            user_id: "alice".into(),
            scopes: vec![Scope::Chat],
            expires_at: 0,
            token_id: 0,
        };
        assert!(chat.can_act_for("alice"));
        assert!(!chat.can_act_for("bob"));
        assert!(!chat.can_act_for("alice "));
        assert!(!chat.is_admin());
        assert_eq!(chat.authorize_for("bob"), Err(AuthError::Forbidden));
        assert_eq!(AuthError::Forbidden.status(), 403);

        let admin = Principal {
            user_id: "root".into(),
            scopes: vec![Scope::Chat, Scope::Admin],
            expires_at: 0,
            token_id: 0,
        };
        assert!(admin.is_admin());
        assert!(admin.can_act_for("bob") && admin.can_act_for("root"));

        // No scopes at all grants nothing, not even the own user.
        let none = Principal {
            user_id: "alice".into(),
            scopes: vec![],
            expires_at: 0,
            token_id: 0,
        };
        assert!(!none.can_act_for("alice"));
    }
}
