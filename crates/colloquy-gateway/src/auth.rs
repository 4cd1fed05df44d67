//! JWT authentication: verifying bearer tokens and minting them for the
//! `colloquy token` command.
//!
//! Design notes:
//!
//! * Exactly one algorithm is accepted, the configured one. The header's
//!   `alg` is checked here before jsonwebtoken sees the token so that `none`
//!   and algorithm substitution (including the classic "HS256 signed with the
//!   RSA public key" confusion) fail with a precise [`AuthError::WrongAlgorithm`].
//! * jsonwebtoken only checks the algorithm and the signature. Every claim
//!   (`exp`, `nbf`, `iss`, `aud`, `sub`, `scope`) is checked here, after the
//!   signature, against an explicit clock. That keeps the rules in one
//!   place, makes the clock injectable for tests ([`Verifier::verify_at`]),
//!   and avoids jsonwebtoken's default of rejecting any `aud` when no
//!   audience is configured (the issue wants `iss`/`aud` checked only when
//!   configured).
//! * Scope: the `scope` claim is an OAuth-style space-separated string.
//!   `admin` implies `chat`. A value this server does not know makes the
//!   whole token invalid ([`AuthError::BadScope`], 401) rather than being
//!   ignored: a token minted for some other system, or with a typo such as
//!   `Admin`, should fail loudly at authentication instead of producing a
//!   principal that is mysteriously refused (403) on every request.
//! * Error messages never contain the token, the secret or key material.
//!   Values taken from a token are only shown when they are short and made of
//!   harmless characters.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken as jwt;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Environment variable holding the HS256 secret (read by the binary).
pub const SECRET_ENV: &str = "COLLOQUY_JWT_SECRET";

/// Suggested file name for the generated HS256 secret inside the data
/// directory, so the server and `colloquy token` agree on where it lives.
pub const SECRET_FILE_NAME: &str = "jwt-secret";

/// HS256 secrets shorter than this are refused: RFC 7518 §3.2 requires a key
/// at least as long as the hash output (256 bits), and short secrets make
/// offline brute force of a captured token practical.
pub const MIN_HS_SECRET_LEN: usize = 32;

/// RSA keys below this size are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// Upper bound for `leeway_secs`: skew tolerance beyond a few minutes would
/// quietly extend every token's lifetime.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Tokens longer than this are refused before any decoding or signature
/// work, so oversized input cannot cost CPU (RSA verification, base64).
pub const MAX_TOKEN_LEN: usize = 8192;

/// Upper bound for [`parse_ttl`]; catches typos like `1000d` and keeps
/// issued tokens from outliving any reasonable key rotation.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest accepted user id (`sub`).
pub const MAX_USER_ID_LEN: usize = 128;

/// Signature algorithms the server can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Algorithm {
    #[default]
    #[serde(rename = "HS256")]
    HS256,
    #[serde(rename = "RS256")]
    RS256,
    #[serde(rename = "ES256")]
    ES256,
}

impl Algorithm {
    /// The JOSE name, as it appears in a token header.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    fn to_jwt(self) -> jwt::Algorithm {
        match self {
            Algorithm::HS256 => jwt::Algorithm::HS256,
            Algorithm::RS256 => jwt::Algorithm::RS256,
            Algorithm::ES256 => jwt::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "HS256" => Ok(Algorithm::HS256),
            "RS256" => Ok(Algorithm::RS256),
            "ES256" => Ok(Algorithm::ES256),
            _ => Err(AuthError::Config(format!(
                "unsupported algorithm {}; use HS256, RS256 or ES256",
                shown(s)
            ))),
        }
    }
}

/// The `[auth]` section of the TOML config.
///
/// `Debug` is implemented by hand so that logging the config never prints
/// the secret.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub algorithm: Algorithm,
    /// HS256 secret; when `None` the binary supplies one from
    /// `COLLOQUY_JWT_SECRET` or the data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// PEM public key for RS256/ES256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` when set; not checked when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` member when set; not checked when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: Algorithm::HS256,
            secret: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_file", &self.public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl AuthConfig {
    /// True when the binary has to supply the HS256 secret (from
    /// `COLLOQUY_JWT_SECRET` or the data directory) because the config
    /// does not contain one.
    pub fn needs_external_secret(&self) -> bool {
        self.algorithm == Algorithm::HS256 && self.secret.is_none()
    }

    /// Checks that do not need key material: consistent fields, sane
    /// leeway, non-empty issuer/audience. Mixing fields of different
    /// algorithms is an error because it usually means the operator meant
    /// another algorithm than the one in effect (e.g. a public key with the
    /// default HS256 would silently run on a generated secret).
    pub fn validate(&self) -> Result<(), AuthError> {
        match self.algorithm {
            Algorithm::HS256 => {
                if self.public_key_file.is_some() {
                    return Err(AuthError::Config(
                        "auth.public_key_file is only used with RS256 or ES256, but auth.algorithm is HS256"
                            .into(),
                    ));
                }
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if self.secret.is_some() {
                    return Err(AuthError::Config(format!(
                        "auth.secret is only used with HS256, but auth.algorithm is {}",
                        self.algorithm
                    )));
                }
                if self.public_key_file.is_none() {
                    return Err(AuthError::Config(format!(
                        "auth.algorithm {} needs auth.public_key_file (a PEM public key)",
                        self.algorithm
                    )));
                }
            }
        }
        if self.issuer.as_deref() == Some("") {
            return Err(AuthError::Config(
                "auth.issuer is empty; remove it to disable the issuer check".into(),
            ));
        }
        if self.audience.as_deref() == Some("") {
            return Err(AuthError::Config(
                "auth.audience is empty; remove it to disable the audience check".into(),
            ));
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!(
                "auth.leeway_secs is {}; at most {MAX_LEEWAY_SECS} is allowed",
                self.leeway_secs
            )));
        }
        Ok(())
    }

    /// The HS256 secret in effect: `auth.secret`, else the one the binary
    /// supplied. Shared by [`Verifier::new`] and [`Issuer::from_config`] so
    /// that `colloquy token` signs with exactly what the server verifies.
    fn hs_secret<'a>(&'a self, external: Option<&'a [u8]>) -> Result<&'a [u8], AuthError> {
        let secret = match (self.secret.as_deref(), external) {
            (Some(own), Some(ext)) if own.as_bytes() != ext => {
                // Supplying both means the caller's precedence differs from
                // ours; refusing is safer than silently picking one, which
                // would make tokens from the other source fail mysteriously.
                return Err(AuthError::Config(format!(
                    "auth.secret is set and a different HS256 secret was also supplied \
                     (e.g. {SECRET_ENV}); remove one of them"
                )));
            }
            (Some(own), _) => own.as_bytes(),
            (None, Some(ext)) => ext,
            (None, None) => {
                return Err(AuthError::Config(format!(
                    "HS256 needs a secret: set auth.secret or {SECRET_ENV}, or let the server \
                     generate one in its data directory"
                )))
            }
        };
        check_hs_secret(secret)?;
        Ok(secret)
    }
}

/// Rejects HS256 secrets that are too short to be safe.
pub fn check_hs_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_HS_SECRET_LEN {
        return Err(short_secret(secret.len()));
    }
    Ok(())
}

fn short_secret(len: usize) -> AuthError {
    AuthError::Config(format!(
        "HS256 secret is {len} bytes long; at least {MIN_HS_SECRET_LEN} are required"
    ))
}

/// A fresh HS256 secret: 32 bytes from the OS RNG as 64 lowercase hex
/// characters. Hex keeps the file printable and safe to paste into
/// `COLLOQUY_JWT_SECRET`; the secret is used as the bytes of this string.
/// The binary should write it once (mode 0600) and, when reading it back,
/// strip a trailing newline.
pub fn generate_hs_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| AuthError::Config(format!("cannot read random bytes from the OS: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

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
    /// The `sub` claim, already checked with [`is_valid_user_id`].
    pub user_id: String,
    /// Effective scopes: sorted, deduplicated, `Admin` implies `Chat`.
    pub scopes: Vec<Scope>,
    /// The `exp` claim (Unix seconds); long-lived connections such as
    /// WebSockets can use it to close when the token runs out.
    pub expires_at: u64,
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

/// True when `id` is 1–[`MAX_USER_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ - @ :`. User ids end up in storage keys, logs and URLs;
/// this set is safe in all of them without escaping.
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

const USER_ID_RULE: &str =
    "sub must be 1-128 characters of A-Z a-z 0-9 . _ - @ : (it is used as the user id)";

/// Why authentication, authorisation, configuration or issuing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was supplied")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
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
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadSignature => "invalid_signature",
            AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
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

/// Extracts the token from an `Authorization` header value. The scheme is
/// case-insensitive (RFC 7235 §2.1). `None` or an empty token → `Missing`.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.map(str::trim).unwrap_or("");
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "Authorization header must use the Bearer scheme".into(),
        ));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Verifies tokens. Built once at startup; cloning is a reference-count
/// increment.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: jwt::Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    verified: Mutex<Verified>,
}

/// Tokens whose signature and static claims were checked, with what the
/// time checks need. A client sends the same token with every request of a
/// session; checking its signature and parsing its JSON each time was a
/// tenth of the gateway's work per message (measured at 13k messages/s).
/// Only the time-dependent claims are checked again on a hit.
#[derive(Default)]
struct Verified {
    tokens: HashMap<Box<str>, VerifiedToken>,
}

struct VerifiedToken {
    principal: Principal,
    /// `nbf`, if the token has one.
    not_before: Option<u64>,
}

/// Tokens remembered at most; past it the expired ones go, and all of them
/// if that does not free half.
const VERIFIED_TOKENS: usize = 10_000;

impl Verified {
    fn get(&self, token: &str, now: u64, leeway: u64) -> Option<Principal> {
        let t = self.tokens.get(token)?;
        let valid = now < t.principal.expires_at.saturating_add(leeway)
            && t.not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        valid.then(|| t.principal.clone())
    }

    fn insert(
        &mut self,
        token: &str,
        principal: &Principal,
        not_before: Option<u64>,
        now: u64,
        leeway: u64,
    ) {
        if self.tokens.len() >= VERIFIED_TOKENS {
            self.tokens
                .retain(|_, t| now < t.principal.expires_at.saturating_add(leeway));
            if self.tokens.len() >= VERIFIED_TOKENS / 2 {
                self.tokens.clear();
            }
        }
        self.tokens.insert(
            token.into(),
            VerifiedToken {
                principal: principal.clone(),
                not_before,
            },
        );
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.inner.algorithm)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("leeway_secs", &self.inner.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier from the `[auth]` config.
    ///
    /// HS256 uses `cfg.secret`, else `hs_secret` (what the binary got from
    /// the environment or the data directory); supplying two different
    /// secrets is an error. For RS256/ES256 `hs_secret` is ignored and the
    /// PEM public key is read from `cfg.public_key_file` and fully parsed
    /// here, so a wrong or damaged key stops startup rather than failing
    /// every request.
    pub fn new(cfg: &AuthConfig, hs_secret: Option<&[u8]>) -> Result<Verifier, AuthError> {
        cfg.validate()?;
        let key = match cfg.algorithm {
            Algorithm::HS256 => DecodingKey::from_secret(cfg.hs_secret(hs_secret)?),
            Algorithm::RS256 | Algorithm::ES256 => {
                let path = cfg
                    .public_key_file
                    .as_deref()
                    .ok_or_else(|| AuthError::Config("auth.public_key_file is not set".into()))?;
                load_public_key(cfg.algorithm, path)?
            }
        };

        let mut validation = jwt::Validation::new(cfg.algorithm.to_jwt());
        // Claims are checked in `check_claims` against an explicit clock;
        // jsonwebtoken is left with the algorithm and signature only.
        // (Its `validate_aud` default would also reject any token that has
        // an `aud` when no audience is configured.)
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;

        Ok(Verifier {
            inner: Arc::new(VerifierInner {
                algorithm: cfg.algorithm,
                key,
                validation,
                issuer: cfg.issuer.clone(),
                audience: cfg.audience.clone(),
                leeway_secs: cfg.leeway_secs,
                verified: Mutex::default(),
            }),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Verifies `token` against the current system time.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as if the time were `now_unix` (seconds since the
    /// Unix epoch). Order: shape and `alg`, signature, then claims — nothing
    /// about the claims is reported for a token whose signature fails.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let leeway = inner.leeway_secs;
        let known = inner.verified.lock().expect("verified tokens lock");
        if let Some(principal) = known.get(token, now_unix, leeway) {
            return Ok(principal);
        }
        drop(known);
        check_header(token, inner.algorithm)?;
        let data = jwt::decode::<Map<String, Value>>(token, &inner.key, &inner.validation)
            .map_err(|e| map_decode_error(e.kind(), inner.algorithm))?;
        let principal = inner.check_claims(&data.claims, now_unix)?;
        // Checked above: a malformed `nbf` never gets this far.
        let not_before = numeric_date(&data.claims, "nbf", Rounding::Up).unwrap_or(None);
        inner
            .verified
            .lock()
            .expect("verified tokens lock")
            .insert(token, &principal, not_before, now_unix, leeway);
        Ok(principal)
    }
}

impl VerifierInner {
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Principal, AuthError> {
        let exp =
            numeric_date(claims, "exp", Rounding::Down)?.ok_or(AuthError::MissingClaim("exp"))?;
        // RFC 7519 §4.1.4: the current time must be before `exp`.
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf", Rounding::Up)? {
            if nbf > now.saturating_add(self.leeway_secs) {
                return Err(AuthError::NotYetValid);
            }
        }

        if let Some(expected) = &self.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(_)) => return Err(AuthError::BadIssuer),
                Some(_) => {
                    return Err(AuthError::InvalidClaim {
                        claim: "iss",
                        reason: "must be a string",
                    })
                }
            }
        }

        if let Some(expected) = &self.audience {
            // RFC 7519 §4.1.3: `aud` is a string or an array of strings.
            let matches = match claims.get("aud") {
                None => return Err(AuthError::MissingClaim("aud")),
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(list)) => {
                    let mut found = false;
                    for item in list {
                        match item {
                            Value::String(aud) => found |= aud == expected,
                            _ => {
                                return Err(AuthError::InvalidClaim {
                                    claim: "aud",
                                    reason: "must be a string or an array of strings",
                                })
                            }
                        }
                    }
                    found
                }
                Some(_) => {
                    return Err(AuthError::InvalidClaim {
                        claim: "aud",
                        reason: "must be a string or an array of strings",
                    })
                }
            };
            if !matches {
                return Err(AuthError::BadAudience);
            }
        }

        let user_id = match claims.get("sub") {
            None => return Err(AuthError::MissingClaim("sub")),
            Some(Value::String(sub)) if is_valid_user_id(sub) => sub.clone(),
            Some(_) => return Err(AuthError::BadSubject(USER_ID_RULE)),
        };

        let scopes = match claims.get("scope") {
            None => return Err(AuthError::MissingClaim("scope")),
            Some(Value::String(scope)) => Scope::parse_claim(scope)?,
            Some(_) => {
                return Err(AuthError::BadScope(
                    "scope claim must be a space-separated string".into(),
                ))
            }
        };

        Ok(Principal {
            user_id,
            scopes,
            expires_at: exp,
        })
    }
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// Reads a NumericDate claim (RFC 7519 §2: seconds, possibly fractional).
/// Fractions are rounded in the stricter direction: `exp` down, `nbf` up.
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
    rounding: Rounding,
) -> Result<Option<u64>, AuthError> {
    let invalid = AuthError::InvalidClaim {
        claim,
        reason: "must be a NumericDate (non-negative seconds since the Unix epoch)",
    };
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(invalid);
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => {
            let rounded = match rounding {
                Rounding::Down => f.floor(),
                Rounding::Up => f.ceil(),
            };
            // `as` saturates at u64::MAX, which is the right reading of an
            // absurdly large date.
            Ok(Some(rounded as u64))
        }
        _ => Err(invalid),
    }
}

/// Checks the token's shape and header before any cryptography, so that
/// `none` and algorithm substitution get a precise error. The key itself is
/// never chosen from the header (`jwk`, `jku`, `x5u`, `kid` are ignored):
/// only the configured key is used.
fn check_header(token: &str, expected: Algorithm) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed(format!(
            "token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three base64url segments separated by '.'".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("header is not valid base64url".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a JSON object".into()))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        Some(_) => return Err(AuthError::Malformed("header alg is not a string".into())),
        None => return Err(AuthError::Malformed("header has no alg".into())),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::WrongAlgorithm {
            expected,
            found: "none".into(),
        });
    }
    if alg != expected.as_str() {
        return Err(AuthError::WrongAlgorithm {
            expected,
            found: shown_alg(alg),
        });
    }
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood;
    // this verifier understands none.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed(
            "header lists critical extensions (crit), which are not supported".into(),
        ));
    }
    Ok(())
}

/// Maps jsonwebtoken failures (header already checked) to our errors,
/// with fixed messages: jsonwebtoken's JSON errors quote the input.
fn map_decode_error(kind: &JwtErrorKind, expected: Algorithm) -> AuthError {
    match kind {
        JwtErrorKind::InvalidSignature => AuthError::BadSignature,
        JwtErrorKind::InvalidToken => {
            AuthError::Malformed("expected three base64url segments separated by '.'".into())
        }
        JwtErrorKind::Base64(_) => {
            AuthError::Malformed("payload or signature is not valid base64url".into())
        }
        JwtErrorKind::Json(_) | JwtErrorKind::Utf8(_) => {
            AuthError::Malformed("header or payload is not a valid JSON object".into())
        }
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::InvalidAlgorithmName => {
            AuthError::WrongAlgorithm {
                expected,
                found: "another algorithm".into(),
            }
        }
        // The key was parsed and validated in `Verifier::new`, so this is a
        // server-side problem, not the client's.
        JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat
        | JwtErrorKind::MissingAlgorithm
        | JwtErrorKind::UnsupportedAlgorithm => {
            AuthError::Config("the configured key cannot verify tokens".into())
        }
        _ => AuthError::Malformed("token could not be verified".into()),
    }
}

/// A value from untrusted input, quoted, if it is short and made of
/// harmless characters; otherwise a placeholder. Keeps error messages
/// precise without letting a token inject arbitrary text into logs.
fn shown(s: &str) -> String {
    let harmless = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@');
    if !s.is_empty() && s.len() <= 32 && s.chars().all(harmless) {
        format!("\"{s}\"")
    } else {
        "(value not shown)".into()
    }
}

/// `alg` values registered by RFC 7518 / RFC 8037 are named; anything else
/// is not echoed.
fn shown_alg(alg: &str) -> String {
    const KNOWN: &[&str] = &[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "ES512", "ES256K", "EdDSA", "Ed25519", "Ed448",
    ];
    if KNOWN.contains(&alg) {
        alg.to_string()
    } else {
        "an unsupported algorithm".into()
    }
}

fn unix_now() -> u64 {
    // Only a badly broken host clock reads before 1970; saturating keeps
    // verification total instead of panicking on every request.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// PEM keys
// ---------------------------------------------------------------------------

/// The label of the first PEM block (`-----BEGIN <label>-----`).
fn pem_label(text: &str) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let start = text.find(BEGIN)? + BEGIN.len();
    let rest = &text[start..];
    Some(&rest[..rest.find("-----")?])
}

fn pem_text(pem: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(pem).map_err(|_| "is not PEM text (not UTF-8)".to_string())
}

fn describe_label(label: &str) -> String {
    if label.len() <= 40 && label.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
        format!("a {label} block")
    } else {
        "an unrecognised PEM block".into()
    }
}

fn load_public_key(alg: Algorithm, path: &Path) -> Result<DecodingKey, AuthError> {
    let pem = std::fs::read(path).map_err(|e| {
        AuthError::Config(format!(
            "cannot read auth.public_key_file {}: {e}",
            path.display()
        ))
    })?;
    decoding_key_from_pem(alg, &pem)
        .map_err(|msg| AuthError::Config(format!("auth.public_key_file {} {msg}", path.display())))
}

/// Parses a PEM public key for `alg`. Errors are phrased to follow the
/// file name ("<path> is not …").
fn decoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
    use rsa::pkcs8::DecodePublicKey;

    let text = pem_text(pem)?;
    let label = pem_label(text).ok_or("is not PEM (no -----BEGIN line)")?;
    match (alg, label) {
        (Algorithm::RS256, "PUBLIC KEY" | "RSA PUBLIC KEY") => {
            let key = if label == "PUBLIC KEY" {
                rsa::RsaPublicKey::from_public_key_pem(text)
                    .map_err(|_| "is not an RSA public key (RS256 is configured)".to_string())?
            } else {
                rsa::RsaPublicKey::from_pkcs1_pem(text)
                    .map_err(|_| "is not a valid PKCS#1 RSA public key".to_string())?
            };
            check_rsa_bits(rsa::traits::PublicKeyParts::size(&key))?;
            let der = key
                .to_pkcs1_der()
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(DecodingKey::from_rsa_der(der.as_bytes()))
        }
        (Algorithm::ES256, "PUBLIC KEY") => {
            let key = p256::PublicKey::from_public_key_pem(text).map_err(|_| {
                "is not a P-256 (prime256v1) EC public key (ES256 is configured)".to_string()
            })?;
            Ok(DecodingKey::from_ec_der(
                key.to_encoded_point(false).as_bytes(),
            ))
        }
        (_, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY") => {
            // Refuse instead of deriving the public half: the server must
            // not hold the signing key.
            Err("contains a private key; configure the public key instead \
                 (openssl pkey -in private.pem -pubout -out public.pem)"
                .into())
        }
        (_, "CERTIFICATE") => Err("is a certificate; extract its public key with \
             openssl x509 -in cert.pem -pubkey -noout"
            .into()),
        (Algorithm::ES256, "RSA PUBLIC KEY") => {
            Err("is an RSA key, but ES256 needs a P-256 EC public key".into())
        }
        _ => Err(format!(
            "contains {}; expected a PUBLIC KEY block for {alg}",
            describe_label(label)
        )),
    }
}

fn check_rsa_bits(size_bytes: usize) -> Result<(), String> {
    let bits = size_bytes * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    Ok(())
}

/// Parses a PEM private key for `alg` into jsonwebtoken's DER encoding.
fn encoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey, String> {
    use p256::pkcs8::EncodePrivateKey;
    use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
    use rsa::pkcs8::DecodePrivateKey;

    let text = pem_text(pem)?;
    let label = pem_label(text).ok_or("is not PEM (no -----BEGIN line)")?;
    match (alg, label) {
        (Algorithm::RS256, "PRIVATE KEY" | "RSA PRIVATE KEY") => {
            let key = if label == "PRIVATE KEY" {
                rsa::RsaPrivateKey::from_pkcs8_pem(text)
                    .map_err(|_| "is not an RSA private key (RS256 requested)".to_string())?
            } else {
                rsa::RsaPrivateKey::from_pkcs1_pem(text)
                    .map_err(|_| "is not a valid PKCS#1 RSA private key".to_string())?
            };
            check_rsa_bits(rsa::traits::PublicKeyParts::size(&key))?;
            // jsonwebtoken's RustCrypto signer expects PKCS#1 DER.
            let der = key
                .to_pkcs1_der()
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(EncodingKey::from_rsa_der(der.as_bytes()))
        }
        (Algorithm::ES256, "PRIVATE KEY" | "EC PRIVATE KEY") => {
            let key = if label == "PRIVATE KEY" {
                p256::SecretKey::from_pkcs8_pem(text).ok()
            } else {
                p256::SecretKey::from_sec1_pem(text).ok()
            }
            .ok_or("is not a P-256 (prime256v1) EC private key (ES256 requested)")?;
            // jsonwebtoken's RustCrypto signer expects PKCS#8 DER.
            let der = key
                .to_pkcs8_der()
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(EncodingKey::from_ec_der(der.as_bytes()))
        }
        (_, "ENCRYPTED PRIVATE KEY") => {
            Err("is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem)".into())
        }
        _ => Err(format!(
            "contains {}; expected a private key for {alg}",
            describe_label(label)
        )),
    }
}

// ---------------------------------------------------------------------------
// Issuing
// ---------------------------------------------------------------------------

/// Mints tokens the [`Verifier`] with the same settings accepts.
pub struct Issuer {
    algorithm: Algorithm,
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
    /// Length of an HS256 secret that is too short, reported by `issue`
    /// (`hs256` cannot fail by signature).
    weak_secret_len: Option<usize>,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    scope: &'static str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl Issuer {
    /// HS256 issuer. A secret shorter than [`MIN_HS_SECRET_LEN`] makes
    /// [`Issuer::issue`] fail with `Config`, matching what `Verifier::new`
    /// would refuse.
    pub fn hs256(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Issuer {
        Issuer {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
            issuer,
            audience,
            weak_secret_len: (secret.len() < MIN_HS_SECRET_LEN).then_some(secret.len()),
        }
    }

    /// RS256 (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`) or ES256
    /// (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, curve P-256) issuer.
    pub fn from_private_pem(
        alg: Algorithm,
        pem: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Issuer, AuthError> {
        if alg == Algorithm::HS256 {
            return Err(AuthError::Config(
                "HS256 uses a shared secret, not a PEM key; use Issuer::hs256".into(),
            ));
        }
        let key = encoding_key_from_pem(alg, pem)
            .map_err(|msg| AuthError::Config(format!("private key {msg}")))?;
        Ok(Issuer {
            algorithm: alg,
            key,
            issuer,
            audience,
            weak_secret_len: None,
        })
    }

    /// The issuer `colloquy token` needs: same secret resolution, issuer
    /// and audience as [`Verifier::new`]. Only HS256 can be issued from the
    /// server config (RS256/ES256 configs hold only the public key).
    pub fn from_config(cfg: &AuthConfig, hs_secret: Option<&[u8]>) -> Result<Issuer, AuthError> {
        cfg.validate()?;
        if cfg.algorithm != Algorithm::HS256 {
            return Err(AuthError::Config(format!(
                "auth.algorithm is {}: tokens are issued by whoever holds the private key, \
                 not from the server config",
                cfg.algorithm
            )));
        }
        let secret = cfg.hs_secret(hs_secret)?;
        Ok(Issuer::hs256(
            secret,
            cfg.issuer.clone(),
            cfg.audience.clone(),
        ))
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs a token with `sub`, `scope`, `iat = now_unix`,
    /// `exp = now_unix + ttl` (whole seconds) and `iss`/`aud` when set.
    pub fn issue(
        &self,
        user_id: &str,
        scope: Scope,
        ttl: Duration,
        now_unix: u64,
    ) -> Result<String, AuthError> {
        if let Some(len) = self.weak_secret_len {
            return Err(short_secret(len));
        }
        if !is_valid_user_id(user_id) {
            return Err(AuthError::BadSubject(USER_ID_RULE));
        }
        if ttl.as_secs() == 0 {
            return Err(AuthError::BadTtl("ttl must be at least one second".into()));
        }
        let exp = now_unix
            .checked_add(ttl.as_secs())
            .ok_or_else(|| AuthError::BadTtl("expiry time overflows".into()))?;
        let claims = IssuedClaims {
            sub: user_id,
            scope: scope.as_str(),
            iat: now_unix,
            exp,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jwt::encode(
            &jwt::Header::new(self.algorithm.to_jwt()),
            &claims,
            &self.key,
        )
        .map_err(|e| AuthError::Issue(format!("signing failed: {:?}", e.kind())))
    }

    /// [`Issuer::issue`] at the current system time.
    pub fn issue_now(
        &self,
        user_id: &str,
        scope: Scope,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.issue(user_id, scope, ttl, unix_now())
    }
}

/// Parses a token lifetime: a positive integer followed by one unit,
/// `s`, `m`, `h` or `d` (`90s`, `30m`, `1h`, `7d`), up to [`MAX_TTL`].
/// A bare number is refused rather than guessed to be seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, AuthError> {
    let s = s.trim();
    let bad = |why: &str| AuthError::BadTtl(format!("{} {why}", shown(s)));
    let Some(unit) = s.chars().last() else {
        return Err(AuthError::BadTtl(
            "ttl is empty; use e.g. 90s, 30m, 1h or 7d".into(),
        ));
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        c if c.is_ascii_digit() => {
            return Err(bad("has no unit; add s, m, h or d (e.g. 3600s)"));
        }
        _ => {
            return Err(bad(
                "has an unknown unit; use s, m, h or d (e.g. 90s, 30m, 1h, 7d)",
            ))
        }
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "must be a whole number followed by s, m, h or d (e.g. 1h)",
        ));
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&secs| secs <= MAX_TTL.as_secs())
        .ok_or_else(|| bad("is longer than the 365-day maximum"))?;
    if secs == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units_and_errors() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_ttl(" 2h ").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ttl("365d").unwrap(), MAX_TTL);
        for bad in [
            "",
            "h",
            "3600",
            "0s",
            "-1h",
            "1.5h",
            "1H",
            "1w",
            "1h30m",
            "366d",
            "+1h",
            "99999999999999999999d",
            "1 h",
            "١h",
        ] {
            let err = parse_ttl(bad).expect_err(bad);
            assert!(matches!(err, AuthError::BadTtl(_)), "{bad}: {err:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn ttl_error_names_the_problem() {
        assert!(parse_ttl("3600")
            .unwrap_err()
            .to_string()
            .contains("no unit"));
        assert!(parse_ttl("1w")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_ttl("400d")
            .unwrap_err()
            .to_string()
            .contains("365-day"));
    }

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
            assert!(is_valid_user_id(ok), "{ok}");
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
            assert!(!is_valid_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn principal_rights() {
        let chat = Principal {
            user_id: "alice".into(),
            scopes: vec![Scope::Chat],
            expires_at: 0,
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
        };
        assert!(admin.is_admin());
        assert!(admin.can_act_for("bob") && admin.can_act_for("root"));

        // No scopes at all grants nothing, not even the own user.
        let none = Principal {
            user_id: "alice".into(),
            scopes: vec![],
            expires_at: 0,
        };
        assert!(!none.can_act_for("alice"));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(
            bearer_token(Some("bearer  abc.def.ghi ")),
            Ok("abc.def.ghi")
        );
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Bearer")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Bearer   ")), Err(AuthError::Missing));
        assert!(matches!(
            bearer_token(Some("Basic dXNlcjpwYXNz")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(Some("Bearerabc")),
            Err(AuthError::Malformed(_))
        ));
    }

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

    #[test]
    fn generated_secrets_are_long_enough_and_distinct() {
        let a = generate_hs_secret().unwrap();
        let b = generate_hs_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(check_hs_secret(a.as_bytes()).is_ok());
    }

    #[test]
    fn header_check_rejects_unknown_algs_without_echoing_them() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"<b>evil</b>"}"#);
        let err = check_header(&format!("{header}.e30.sig"), Algorithm::HS256).unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongAlgorithm {
                expected: Algorithm::HS256,
                found: "an unsupported algorithm".into()
            }
        );
        assert!(!err.to_string().contains("evil"));
    }

    #[test]
    fn header_check_rejects_crit_and_odd_shapes() {
        let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["b64"],"b64":false}"#);
        assert!(matches!(
            check_header(&format!("{crit}.e30.sig"), Algorithm::HS256),
            Err(AuthError::Malformed(_))
        ));
        let ok = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        for shape in [
            format!("{ok}.e30"),
            format!("{ok}.e30.sig.extra"),
            "nodots".into(),
        ] {
            assert!(matches!(
                check_header(&shape, Algorithm::HS256),
                Err(AuthError::Malformed(_))
            ));
        }
        let long = format!("{ok}.{}.sig", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            check_header(&long, Algorithm::HS256),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(check_header("", Algorithm::HS256), Err(AuthError::Missing));
        let no_alg = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#);
        assert!(matches!(
            check_header(&format!("{no_alg}.e30.sig"), Algorithm::HS256),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn auth_config_debug_redacts_secret() {
        let cfg = AuthConfig {
            secret: Some("s3cr3t-value".into()),
            ..AuthConfig::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("s3cr3t-value") && dbg.contains("redacted"),
            "{dbg}"
        );
    }

    #[test]
    fn pem_label_extraction() {
        assert_eq!(
            pem_label("junk\n-----BEGIN PUBLIC KEY-----\nAAA\n"),
            Some("PUBLIC KEY")
        );
        assert_eq!(pem_label("no pem here"), None);
        assert_eq!(pem_label("-----BEGIN PUBLIC KEY"), None);
    }
}
