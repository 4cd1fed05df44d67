//! The `[auth]` section of the config, the algorithms it may name, and the
//! limits every other part of authentication enforces.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken as jwt;
use serde::{Deserialize, Serialize};

use super::error::{shown, AuthError};

/// Environment variable holding the HS256 secret (read by the binary).
pub const SECRET_ENV: &str = "COLLOQUY_JWT_SECRET";

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

/// Upper bound for [`parse_ttl`](super::parse_ttl); catches typos like `1000d` and keeps
/// issued tokens from outliving any reasonable key rotation.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

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

    pub(super) fn to_jwt(self) -> jwt::Algorithm {
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
    /// JWK Set (RFC 7517) file with the RS256/ES256 public keys, chosen by
    /// the token's `kid`; read again every `jwks_refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// The same, fetched from an `https://` (or `http://`) URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How often a JWKS is read again; also, sooner, when a token names a
    /// `kid` the set lacks (at most once per
    /// [`UNKNOWN_KID_COOLDOWN`](super::UNKNOWN_KID_COOLDOWN)).
    #[serde(with = "colloquy_core::duration::text")]
    pub jwks_refresh: Duration,
    /// Required `iss` when set; not checked when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` member when set; not checked when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// The longest lifetime a token may claim (`exp` − `iat`, or `exp` −
    /// now without `iat`): a leaked token with `exp` far in the future is
    /// refused instead of working for ever.
    #[serde(with = "colloquy_core::duration::text")]
    pub max_token_lifetime: Duration,
}

/// Default of [`AuthConfig::jwks_refresh`].
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// Bounds of [`AuthConfig::jwks_refresh`]: more often would load the
/// identity provider for nothing, less often would keep a withdrawn key
/// in use for a day.
const JWKS_REFRESH_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// Default of [`AuthConfig::max_token_lifetime`].
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: Algorithm::HS256,
            secret: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_token_lifetime", &self.max_token_lifetime)
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

    /// Checks that do not need key material (nor a JWKS fetched): consistent fields, sane
    /// leeway, non-empty issuer/audience. Mixing fields of different
    /// algorithms is an error because it usually means the operator meant
    /// another algorithm than the one in effect (e.g. a public key with the
    /// default HS256 would silently run on a generated secret).
    pub fn validate(&self) -> Result<(), AuthError> {
        let keys: Vec<&str> = [
            ("auth.public_key_file", self.public_key_file.is_some()),
            ("auth.jwks_file", self.jwks_file.is_some()),
            ("auth.jwks_url", self.jwks_url.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        match self.algorithm {
            Algorithm::HS256 => {
                if let Some(key) = keys.first() {
                    return Err(AuthError::Config(format!(
                        "{key} is only used with RS256 or ES256, but auth.algorithm is HS256"
                    )));
                }
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if self.secret.is_some() {
                    return Err(AuthError::Config(format!(
                        "auth.secret is only used with HS256, but auth.algorithm is {}",
                        self.algorithm
                    )));
                }
                match keys.as_slice() {
                    [] => {
                        return Err(AuthError::Config(format!(
                            "auth.algorithm {} needs auth.public_key_file (a PEM public key), \
                             auth.jwks_file or auth.jwks_url (a JWK Set)",
                            self.algorithm
                        )))
                    }
                    [_] => {}
                    [first, second, ..] => {
                        return Err(AuthError::Config(format!(
                            "{first} and {second} are both set; configure one source of keys"
                        )))
                    }
                }
            }
        }
        if let Some(url) = &self.jwks_url {
            super::jwks::parse_url(url)?;
        }
        let (shortest, longest) = JWKS_REFRESH_RANGE;
        if self.jwks_refresh < shortest || self.jwks_refresh > longest {
            return Err(AuthError::Config(format!(
                "auth.jwks_refresh is {}; it must be between {} and {}",
                colloquy_core::duration::format(self.jwks_refresh),
                colloquy_core::duration::format(shortest),
                colloquy_core::duration::format(longest)
            )));
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
        if self.max_token_lifetime > MAX_TTL {
            return Err(AuthError::Config(format!(
                "auth.max_token_lifetime is {}; at most {} is allowed",
                colloquy_core::duration::format(self.max_token_lifetime),
                colloquy_core::duration::format(MAX_TTL)
            )));
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
    pub(super) fn hs_secret<'a>(
        &'a self,
        external: Option<&'a [u8]>,
    ) -> Result<&'a [u8], AuthError> {
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

pub(super) fn short_secret(len: usize) -> AuthError {
    AuthError::Config(format!(
        "HS256 secret is {len} bytes long; at least {MIN_HS_SECRET_LEN} are required"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs_secrets_shorter_than_the_minimum_are_refused() {
        assert!(check_hs_secret(&[7; MIN_HS_SECRET_LEN]).is_ok());
        let err = check_hs_secret(&[7; MIN_HS_SECRET_LEN - 1]).unwrap_err();
        assert!(matches!(err, AuthError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("31 bytes"), "{err}");
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
}
