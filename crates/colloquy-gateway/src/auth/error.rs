//! Why authentication, authorisation, configuration or issuing failed, as
//! HTTP statuses and stable codes; and how values taken from a token may
//! appear in a message.

use super::config::Algorithm;

/// Why authentication, authorisation, configuration or issuing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was supplied")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token has expired")]
    Expired,
    #[error(
        "token claims a lifetime of {claimed_secs} s; this server accepts at most {max_secs} s"
    )]
    LifetimeTooLong { claimed_secs: u64, max_secs: u64 },
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token key id (kid) {0} is not in the key set")]
    UnknownKeyId(String),
    #[error("token key id (kid) {kid} names a key this server does not use: it {reason}")]
    UnusableKey { kid: String, reason: String },
    #[error("token has no key id (kid); one is needed because the key set holds {0} keys")]
    MissingKeyId(usize),
    #[error("{}", wrong_algorithm_message(*expected, found))]
    WrongAlgorithm { expected: Algorithm, found: String },
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("token claim {claim} {reason}")]
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
    #[error("token issuer (iss) is not the one this server accepts")]
    BadIssuer,
    #[error("token audience (aud) does not include this server")]
    BadAudience,
    #[error("invalid user id: {0}")]
    BadSubject(&'static str),
    #[error("invalid scope: {0}")]
    BadScope(String),
    #[error("token scope does not allow acting for this user")]
    Forbidden,
    #[error("invalid ttl: {0}")]
    BadTtl(String),
    #[error("auth configuration: {0}")]
    Config(String),
    #[error("could not issue token: {0}")]
    Issue(String),
}

fn wrong_algorithm_message(expected: Algorithm, found: &str) -> String {
    if found == "none" {
        format!(
            "unsigned tokens (alg none) are not accepted; tokens must be signed with {expected}"
        )
    } else {
        format!("token is signed with {found}, but this server accepts only {expected}")
    }
}

impl AuthError {
    /// HTTP status: 401 for anything wrong with the token, 403 when the
    /// token is fine but lacks the right, 400 for a bad `--ttl`, 500 for
    /// server-side problems.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden => 403,
            AuthError::BadTtl(_) => 400,
            AuthError::Config(_) | AuthError::Issue(_) => 500,
            _ => 401,
        }
    }

    /// Stable machine-readable code for `{"error":{"code","message"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed(_) => "invalid_token",
            AuthError::Expired => "token_expired",
            AuthError::LifetimeTooLong { .. } => "token_lifetime_too_long",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadSignature => "invalid_signature",
            AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
            AuthError::UnknownKeyId(_) => "unknown_kid",
            AuthError::UnusableKey { .. } => "unusable_key",
            AuthError::MissingKeyId(_) => "missing_kid",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::InvalidClaim { .. } => "invalid_claim",
            AuthError::BadIssuer => "invalid_issuer",
            AuthError::BadAudience => "invalid_audience",
            AuthError::BadSubject(_) => "invalid_subject",
            AuthError::BadScope(_) => "invalid_scope",
            AuthError::Forbidden => "forbidden",
            AuthError::BadTtl(_) => "invalid_ttl",
            AuthError::Config(_) => "auth_misconfigured",
            AuthError::Issue(_) => "token_issue_failed",
        }
    }

    /// Value for the `WWW-Authenticate` response header (RFC 6750 §3), or
    /// `None` when the error is not the client's.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        if *self == AuthError::Missing {
            // §3.1: no error code when the request had no credentials.
            return Some("Bearer");
        }
        match self.status() {
            401 => Some("Bearer error=\"invalid_token\""),
            403 => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        }
    }
}

/// A value from untrusted input, quoted, if it is short and made of
/// harmless characters; otherwise a placeholder. Keeps error messages
/// precise without letting a token inject arbitrary text into logs.
pub(super) fn shown(s: &str) -> String {
    let harmless = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@');
    if !s.is_empty() && s.len() <= 32 && s.chars().all(harmless) {
        format!("\"{s}\"")
    } else {
        "(value not shown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses_codes_and_challenges() {
        assert_eq!(AuthError::Expired.status(), 401);
        assert_eq!(AuthError::Expired.code(), "token_expired");
        assert_eq!(AuthError::Malformed(String::new()).code(), "invalid_token");
        assert_eq!(
            AuthError::WrongAlgorithm {
                expected: Algorithm::RS256,
                found: "HS256".into()
            }
            .code(),
            "wrong_algorithm"
        );
        assert_eq!(AuthError::Config(String::new()).status(), 500);
        assert_eq!(AuthError::Missing.www_authenticate(), Some("Bearer"));
        assert_eq!(
            AuthError::Expired.www_authenticate(),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            AuthError::Forbidden.www_authenticate(),
            Some("Bearer error=\"insufficient_scope\"")
        );
        assert_eq!(AuthError::Config(String::new()).www_authenticate(), None);
    }
}
