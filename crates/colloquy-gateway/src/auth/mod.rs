//! JWT authentication: verifying bearer tokens and minting them for the
//! `colloquy token` command.
//!
//! Design notes:
//!
//! * Exactly one algorithm is accepted, the configured one. The header's
//!   `alg` is checked here before jsonwebtoken sees the token so that `none`
//!   and algorithm substitution (including the classic "HS256 signed with the
//!   RSA public key" confusion) fail with a precise [`AuthError::WrongAlgorithm`].
//! * Keys: the HS256 secret, one PEM public key, or a JWKS (`jwks` module).
//!   Only a JWKS makes the header's `kid` matter, and only to choose among
//!   the keys the operator configured; `jwk`, `jku` and `x5u` are never
//!   followed, so a token cannot bring its own key. The JWKS's keys must
//!   suit the configured algorithm: an RS256 server uses its RSA keys.
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

mod config;
mod error;
mod issue;
mod jwks;
mod keys;
mod principal;
mod verify;

pub use config::{
    check_hs_secret, Algorithm, AuthConfig, DEFAULT_JWKS_REFRESH, MAX_LEEWAY_SECS, MAX_TOKEN_LEN,
    MAX_TTL, MIN_HS_SECRET_LEN, MIN_RSA_BITS, SECRET_ENV,
};
pub use error::AuthError;
pub use issue::{parse_ttl, Issuer};
pub use jwks::{JwksStats, JWKS_FETCH_TIMEOUT, MAX_JWKS_BYTES, UNKNOWN_KID_COOLDOWN};
pub use principal::{Principal, Scope};
pub use verify::Verifier;

use crate::clock::unix_secs as unix_now;
