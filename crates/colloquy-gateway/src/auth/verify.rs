//! Verifying bearer tokens: the header check before any cryptography, the
//! key (the one configured, or the JWKS key the `kid` names), the
//! signature (jsonwebtoken), every claim against an explicit clock, and a
//! cache of tokens already verified.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken as jwt;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::config::{Algorithm, AuthConfig, MAX_TOKEN_LEN};
use super::error::AuthError;
use super::jwks::{Holder, Jwk, JwksStats, KeySet, Refresher, Source};
use super::keys::load_public_key;
use super::principal::{check_subject, Principal, Scope, USER_ID_RULE};
use super::unix_now;

/// Verifies tokens. Built once at startup; cloning is a reference-count
/// increment.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    algorithm: Algorithm,
    validation: jwt::Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    /// The keys and the tokens verified with them, under one lock so that
    /// a JWKS refresh swaps the set and forgets the tokens of removed keys
    /// in one step.
    state: Mutex<State>,
    /// Keeps a JWKS current; `None` for a fixed key.
    refresher: Option<Arc<Refresher>>,
}

struct State {
    keys: Keys,
    verified: Verified,
}

/// What tokens are verified with.
#[derive(Clone)]
enum Keys {
    /// The HS256 secret or a PEM public key: the token's `kid` is not
    /// looked at.
    Fixed(Arc<DecodingKey>),
    /// A JWKS: the key is the one the token's `kid` names.
    Set(Arc<KeySet>),
}

impl Keys {
    fn same(&self, other: &Keys) -> bool {
        match (self, other) {
            (Keys::Fixed(a), Keys::Fixed(b)) => Arc::ptr_eq(a, b),
            (Keys::Set(a), Keys::Set(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
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
    /// The JWKS key that verified it: once a refresh drops that key, the
    /// token is forgotten and fails like any other token of that key.
    key: Option<Arc<Jwk>>,
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
        key: Option<Arc<Jwk>>,
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
                key,
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
    /// Builds a verifier from the `[auth]` config whose key is at hand:
    /// the HS256 secret or a PEM public key. A JWKS is read by
    /// [`Verifier::start`].
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
                let path = cfg.public_key_file.as_deref().ok_or_else(|| {
                    AuthError::Config(
                        "auth.public_key_file is not set (a JWKS is read by Verifier::start)"
                            .into(),
                    )
                })?;
                load_public_key(cfg.algorithm, path)?
            }
        };
        Ok(Verifier::with_keys(cfg, Keys::Fixed(Arc::new(key)), None))
    }

    /// Builds a verifier from any `[auth]` config. With `auth.jwks_file` or
    /// `auth.jwks_url` the set is read now, so an unreadable or unusable
    /// set stops startup with an error naming its source, and a task
    /// (on the current tokio runtime) keeps it current for as long as the
    /// verifier lives. Otherwise this is [`Verifier::new`].
    pub async fn start(cfg: &AuthConfig, hs_secret: Option<&[u8]>) -> Result<Verifier, AuthError> {
        cfg.validate()?;
        let Some(source) = Source::from_config(cfg)? else {
            return Verifier::new(cfg, hs_secret);
        };
        let refresher = Arc::new(Refresher::new(source, cfg.algorithm, cfg.jwks_refresh));
        let set = refresher.load().await.map_err(AuthError::Config)?;
        refresher.started_with(&set);
        let skipped = set.skipped();
        if !skipped.is_empty() {
            tracing::warn!(?skipped, "JWKS keys this server does not use");
        }
        let verifier =
            Verifier::with_keys(cfg, Keys::Set(Arc::new(set)), Some(Arc::clone(&refresher)));
        refresher.spawn(Arc::downgrade(&verifier.inner));
        Ok(verifier)
    }

    fn with_keys(cfg: &AuthConfig, keys: Keys, refresher: Option<Arc<Refresher>>) -> Verifier {
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

        Verifier {
            inner: Arc::new(VerifierInner {
                algorithm: cfg.algorithm,
                validation,
                issuer: cfg.issuer.clone(),
                audience: cfg.audience.clone(),
                leeway_secs: cfg.leeway_secs,
                max_lifetime_secs: cfg.max_token_lifetime.as_secs(),
                state: Mutex::new(State {
                    keys,
                    verified: Verified::default(),
                }),
                refresher,
            }),
        }
    }

    /// The JWKS refreshes so far, when the keys come from a JWKS.
    pub fn jwks_stats(&self) -> Option<JwksStats> {
        self.inner.refresher.as_ref().map(|r| r.stats())
    }

    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The Unix second from which `principal`'s token is refused: its
    /// `exp` plus the tolerated clock skew. A WebSocket session ends then.
    pub fn refused_from(&self, principal: &Principal) -> u64 {
        principal.expires_at.saturating_add(self.inner.leeway_secs)
    }

    /// Verifies `token` against the current system time, as a request
    /// does: when the token names a `kid` the JWKS lacks, the set is read
    /// again (see [`UNKNOWN_KID_COOLDOWN`](super::UNKNOWN_KID_COOLDOWN))
    /// and the token tried once more. Other requests go on meanwhile.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let first = self.verify(token);
        match (&first, &self.inner.refresher) {
            (Err(AuthError::UnknownKeyId(_)), Some(refresher)) => {
                refresher.refresh_for_unknown_kid().await;
                self.verify(token)
            }
            _ => first,
        }
    }

    /// Verifies `token` against the current system time with the keys in
    /// use, without waiting for a refresh.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as if the time were `now_unix` (seconds since the
    /// Unix epoch). Order: shape and `alg`, key, signature, then claims —
    /// nothing about the claims is reported for a token whose signature
    /// fails.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let leeway = inner.leeway_secs;
        let keys = {
            let state = inner.state.lock().expect("verifier state lock");
            if let Some(principal) = state.verified.get(token, now_unix, leeway) {
                return Ok(principal);
            }
            state.keys.clone()
        };
        let kid = check_header(token, inner.algorithm)?;
        let (key, jwk) = match &keys {
            Keys::Fixed(key) => (&**key, None),
            Keys::Set(set) => {
                let jwk = set.select(kid.as_deref())?;
                (&jwk.key, Some(jwk))
            }
        };
        let data = jwt::decode::<Map<String, Value>>(token, key, &inner.validation)
            .map_err(|e| map_decode_error(e.kind(), inner.algorithm))?;
        let mut principal = inner.check_claims(&data.claims, now_unix)?;
        // A hash: a per-token key that keeps no usable secret.
        principal.token_id = colloquy_core::rollout::fnv1a(token.bytes());
        // Checked above: a malformed `nbf` never gets this far.
        let not_before = numeric_date(&data.claims, "nbf", Rounding::Up).unwrap_or(None);
        let mut state = inner.state.lock().expect("verifier state lock");
        // A refresh that swapped the set meanwhile may have dropped this
        // token's key: such a token is not remembered.
        if state.keys.same(&keys) {
            state.verified.insert(
                token,
                &principal,
                not_before,
                jwk.cloned(),
                now_unix,
                leeway,
            );
        }
        Ok(principal)
    }
}

impl Holder for VerifierInner {
    fn replace(&self, set: KeySet) -> bool {
        let mut state = self.state.lock().expect("verifier state lock");
        if let Keys::Set(current) = &state.keys {
            if current.same_as(&set) {
                return false;
            }
        }
        state
            .verified
            .tokens
            .retain(|_, t| t.key.as_ref().is_some_and(|k| set.holds(k)));
        state.keys = Keys::Set(Arc::new(set));
        true
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
        let issued = numeric_date(claims, "iat", Rounding::Down)?.unwrap_or(now);
        let claimed_secs = exp.saturating_sub(issued.min(now));
        if claimed_secs > self.max_lifetime_secs.saturating_add(self.leeway_secs) {
            return Err(AuthError::LifetimeTooLong {
                claimed_secs,
                max_secs: self.max_lifetime_secs,
            });
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
            Some(Value::String(sub)) => {
                check_subject(sub)?;
                sub.clone()
            }
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
            token_id: 0,
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
/// `none` and algorithm substitution get a precise error, and returns its
/// `kid`. A key is never taken from the header (`jwk`, `jku` and `x5u` are
/// ignored): `kid` only chooses among the keys of the configured JWKS.
fn check_header(token: &str, expected: Algorithm) -> Result<Option<String>, AuthError> {
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
    match header.get("kid") {
        None => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid.clone())),
        Some(_) => Err(AuthError::Malformed("header kid is not a string".into())),
    }
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
        // The key was parsed and validated when it was read, so this is a
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
