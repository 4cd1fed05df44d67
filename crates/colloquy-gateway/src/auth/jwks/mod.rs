//! RS256/ES256 public keys from a JWK Set (RFC 7517): a file or a URL,
//! read at startup, kept current in the background, the key for a token
//! chosen by its `kid`.
//!
//! * `set`: the document read into the keys the configured algorithm can
//!   use, and the choice by `kid`.
//! * `source`: reading the document from a file or over HTTP(S).
//! * `refresh`: the task that reads it again, periodically and when a
//!   token names a `kid` the set lacks.

mod refresh;
mod set;
mod source;

pub use refresh::{JwksStats, UNKNOWN_KID_COOLDOWN};
pub use source::{JWKS_FETCH_TIMEOUT, MAX_JWKS_BYTES};

pub(super) use refresh::{Holder, Refresher};
pub(super) use set::{Jwk, KeySet};
pub(super) use source::{parse_url, Source};
