//! Signed snapshots. A snapshot is only a cache of the fold, but a forged one
//! would be believed instead of the log, so each carries an HMAC over every
//! field and readers drop any that fails to verify.

use colloquy_core::State;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Versioned domain tag: a MAC made for anything else (or for a future
/// encoding) can never verify as a snapshot of this format.
const DOMAIN: &[u8] = b"colloquy.snapshot.v1";

/// Shortest accepted key; shorter ones are brute-forceable or, more likely,
/// a configuration mistake.
pub const MIN_KEY_LEN: usize = 16;

/// The folded state of one user at `seq`, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub user_id: String,
    pub seq: u64,
    pub ts_ms: i64,
    pub state: State,
    /// Hex HMAC-SHA256 of the other fields (see [`SnapshotKey::mac`]).
    pub hmac: String,
}

/// Why a snapshot was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot key must be at least {MIN_KEY_LEN} bytes, got {0}")]
    KeyTooShort(usize),
    #[error("hmac is not valid hex")]
    MalformedHmac,
    #[error("hmac does not match: tampered, or signed with another key")]
    BadSignature,
    #[error("belongs to user {found:?}, not {expected:?}")]
    OtherUser { expected: String, found: String },
    #[error("snapshot says seq {snapshot} but its state is at seq {state}")]
    SeqMismatch { snapshot: u64, state: u64 },
    #[error(
        "stale: the log has no event at the snapshot's seq {snapshot} (log truncated or restored?)"
    )]
    BeyondLog { snapshot: u64 },
    #[error("stale: the log's event at seq {seq} has ts {log_ts_ms}, the snapshot ts {snapshot_ts_ms} (log restored from another timeline?)")]
    Diverged {
        seq: u64,
        snapshot_ts_ms: i64,
        log_ts_ms: i64,
    },
}

/// The secret snapshots are signed with, from configuration.
#[derive(Clone)]
pub struct SnapshotKey(Vec<u8>);

impl fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotKey(<redacted>)")
    }
}

impl SnapshotKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<SnapshotKey, SnapshotError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_LEN {
            return Err(SnapshotError::KeyTooShort(bytes.len()));
        }
        Ok(SnapshotKey(bytes))
    }

    /// Snapshot `state` as its user's state at its seq.
    pub fn sign(&self, state: &State) -> Snapshot {
        let mut snapshot = Snapshot {
            user_id: state.user_id.clone(),
            seq: state.seq,
            ts_ms: state.last_ts_ms,
            state: state.clone(),
            hmac: String::new(),
        };
        snapshot.hmac = self.mac(&snapshot);
        snapshot
    }

    /// The hex HMAC `snapshot` should carry for its current fields, e.g. to
    /// re-sign snapshots after rotating keys.
    pub fn mac(&self, snapshot: &Snapshot) -> String {
        hex::encode(self.digest(snapshot).finalize().into_bytes())
    }

    /// Check the HMAC in constant time.
    pub fn verify(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let tag = hex::decode(&snapshot.hmac).map_err(|_| SnapshotError::MalformedHmac)?;
        self.digest(snapshot)
            .verify_slice(&tag)
            .map_err(|_| SnapshotError::BadSignature)
    }

    /// MAC state over the canonical encoding: the domain tag, then each
    /// field, variable-length ones prefixed with their length so that no two
    /// different snapshots encode to the same bytes.
    fn digest(&self, snapshot: &Snapshot) -> HmacSha256 {
        let state = serde_json::to_vec(&snapshot.state)
            // State holds only string-keyed maps and plain data, which
            // serde_json always encodes.
            .expect("State serializes to JSON");
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        for field in [snapshot.user_id.as_bytes(), &state] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.update(&snapshot.seq.to_be_bytes());
        mac.update(&snapshot.ts_ms.to_be_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SnapshotKey {
        SnapshotKey::new(vec![b; 32]).unwrap()
    }

    fn state() -> State {
        let mut s = State::new("alice");
        s.seq = 7;
        s.last_ts_ms = 1_700_000_000_000;
        s.slots
            .insert("size".into(), colloquy_core::Value::Float(39.5));
        s
    }

    #[test]
    fn signed_snapshots_verify_and_survive_json() {
        let snap = key(1).sign(&state());
        assert_eq!(key(1).verify(&snap), Ok(()));
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert_eq!(key(1).verify(&back), Ok(()));
    }

    #[test]
    fn every_field_and_the_key_are_covered() {
        let snap = key(1).sign(&state());
        let edits: [fn(&mut Snapshot); 5] = [
            |s| s.user_id.push('x'),
            |s| s.seq += 1,
            |s| s.ts_ms += 1,
            |s| s.state.session = 9,
            |s| {
                let flipped = if s.hmac.starts_with('0') { "1" } else { "0" };
                s.hmac.replace_range(0..1, flipped)
            },
        ];
        for edit in edits {
            let mut bad = snap.clone();
            edit(&mut bad);
            assert_ne!(bad, snap);
            assert!(key(1).verify(&bad).is_err());
        }
        assert_eq!(key(2).verify(&snap), Err(SnapshotError::BadSignature));
        let mut not_hex = snap;
        not_hex.hmac = "zz".into();
        assert_eq!(key(1).verify(&not_hex), Err(SnapshotError::MalformedHmac));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            SnapshotKey::new(b"short".to_vec()).unwrap_err(),
            SnapshotError::KeyTooShort(5)
        );
    }
}
