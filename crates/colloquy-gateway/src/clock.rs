//! The gateway's one reading of the wall clock: when a message was
//! accepted (the policy's "now" for it) and the time tokens are checked
//! against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch. Only a badly broken host clock reads before
/// 1970; saturating to zero keeps every caller total instead of panicking.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whole seconds since the Unix epoch (JWT NumericDate).
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch (event timestamps).
pub fn unix_ms() -> i64 {
    since_epoch().as_millis() as i64
}
