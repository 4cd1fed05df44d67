//! Minting tokens, for `colloquy token` and for tests and benchmarks.

use std::fmt;
use std::time::Duration;

use jsonwebtoken as jwt;
use jsonwebtoken::EncodingKey;
use serde::Serialize;

use super::config::{short_secret, Algorithm, AuthConfig, MAX_TTL, MIN_HS_SECRET_LEN};
use super::error::{shown, AuthError};
use super::keys::encoding_key_from_pem;
use super::principal::{check_subject, Scope};
use super::unix_now;

/// Mints tokens the [`Verifier`](super::Verifier) with the same settings accepts.
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
    /// and audience as [`Verifier::new`](super::Verifier::new). Only HS256 can be issued from the
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
        check_subject(user_id)?;
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
}
