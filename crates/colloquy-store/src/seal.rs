//! Sealing of personal data where it is stored: field-level AEAD
//! (XChaCha20-Poly1305) under a key ring. Its 192-bit nonces are 128
//! random bits drawn once per ring and a 64-bit count, so a process never
//! repeats one, two processes repeat one with odds of 2^-128, and one key
//! can seal any number of records.
//!
//! A [`KeyRing`] holds a current key, which seals, and older ones, which
//! only open, each under an id that every ciphertext names; like a KMS
//! data-key ring. It lives in a JSON file (`{"current": "k0002", "keys":
//! {"k0001": HEX, "k0002": HEX}}`) that [`rotate_file`] rewrites atomically with a new
//! current key, and that every process reads again when it meets a key id
//! it does not hold and on [`KeyRing::reload`]: a rotation needs no
//! restart, and ciphertexts under older keys keep opening.
//!
//! What is sealed: the kind of every `personal` event (the stored event
//! keeps its masked form beside the ciphertext), and the values of a
//! state's sensitive slots in snapshots and hot copies ([`Sealed`] seals
//! what a store writes and opens what it reads; [`KeyRing::seal_state`]
//! serves the Redis L1). The associated data binds each ciphertext to its
//! user and event, so one cannot be moved onto another record.

use crate::{ConversationStore, Snapshot, StoreError};
use async_trait::async_trait;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use colloquy_core::{redact, Event, State, Value};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// First byte of every ciphertext, then its format version.
const MAGIC: u8 = 0xC5;
const VERSION: u8 = 1;
const NONCE: usize = 24;
/// Key ids are short printable names (`k0001`, `k0002`, …).
const MAX_KEY_ID: usize = 32;
/// Least time between two reads of the ring file prompted by an unknown
/// key id, so records under a key nobody holds do not read it per record.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key {0:?}, which the key ring does not hold")]
    UnknownKey(String),
    #[error("does not open: tampered, moved from another record, or not sealed by colloquy")]
    Tampered,
    #[error("not a sealed value: {0}")]
    Malformed(&'static str),
    #[error("key ring {source_name}: {reason}")]
    Ring { source_name: String, reason: String },
}

impl From<SealError> for StoreError {
    fn from(e: SealError) -> StoreError {
        StoreError::Corrupt(format!("sealed data: {e}"))
    }
}

/// The ring's file form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    current: String,
    /// Key id → 32 bytes as hex.
    keys: BTreeMap<String, String>,
}

struct Keys {
    current: String,
    ciphers: BTreeMap<String, XChaCha20Poly1305>,
}

impl Keys {
    fn parse(text: &str, source_name: &str) -> Result<Keys, SealError> {
        let bad = |reason: String| SealError::Ring {
            source_name: source_name.to_string(),
            reason,
        };
        let file: RingFile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut ciphers = BTreeMap::new();
        for (id, hex_key) in &file.keys {
            check_key_id(id).map_err(|r| bad(format!("key id {id:?}: {r}")))?;
            let bytes =
                hex::decode(hex_key.trim()).map_err(|_| bad(format!("key {id:?} is not hex")))?;
            if bytes.len() != 32 {
                return Err(bad(format!(
                    "key {id:?} has {} bytes; XChaCha20-Poly1305 keys have 32",
                    bytes.len()
                )));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| bad(format!("key {id:?} is unusable")))?;
            ciphers.insert(id.clone(), cipher);
        }
        if !ciphers.contains_key(&file.current) {
            return Err(bad(format!(
                "the current key {:?} is not among the keys",
                file.current
            )));
        }
        Ok(Keys {
            current: file.current,
            ciphers,
        })
    }
}

fn check_key_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_KEY_ID {
        return Err("must be 1 to 32 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may hold only letters, digits, '-' and '_'");
    }
    Ok(())
}

/// The keys that seal and open, and where they were read from.
pub struct KeyRing {
    keys: RwLock<Arc<Keys>>,
    /// The ring file, read again on [`KeyRing::reload`] and on an unknown
    /// key id; `None` for a ring given whole (from the environment).
    file: Option<PathBuf>,
    last_read: Mutex<Instant>,
    /// Nonces are this ring's random prefix and a count: unique without
    /// asking the OS for randomness on every record the bus seals.
    nonce_prefix: [u8; NONCE - 8],
    sealed: std::sync::atomic::AtomicU64,
}

impl KeyRing {
    /// A ring from its JSON text (as `COLLOQUY_SEALING_KEYS` holds it),
    /// fixed for the life of the process.
    pub fn from_json(text: &str, source_name: &str) -> Result<KeyRing, SealError> {
        Ok(KeyRing::new(Keys::parse(text, source_name)?, None))
    }

    /// Where a ring lives in a data directory unless configured elsewhere.
    pub fn default_file(data_dir: &Path) -> PathBuf {
        data_dir.join("keys").join("sealing.json")
    }

    /// The ring in `path`, created with one new key when the file does not
    /// exist. Creation writes the file (owner-only) and its directory
    /// durably: a key lost after data was sealed with it loses that data.
    pub fn open_or_create(path: &Path) -> Result<KeyRing, SealError> {
        let ring_err = |reason: String| SealError::Ring {
            source_name: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let keys = Keys::parse(&text, &path.display().to_string())?;
                return Ok(KeyRing::new(keys, Some(path.to_path_buf())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ring_err(e.to_string())),
        }
        let file = RingFile {
            current: key_id(1),
            keys: BTreeMap::from([(key_id(1), new_key())]),
        };
        write_ring(path, &file, true).map_err(|e| ring_err(e.to_string()))?;
        KeyRing::open_or_create(path)
    }

    fn new(keys: Keys, file: Option<PathBuf>) -> KeyRing {
        KeyRing {
            keys: RwLock::new(Arc::new(keys)),
            file,
            last_read: Mutex::new(Instant::now()),
            nonce_prefix: {
                let mut prefix = [0; NONCE - 8];
                prefix.copy_from_slice(&XChaCha20Poly1305::generate_nonce(&mut OsRng)[..NONCE - 8]);
                prefix
            },
            sealed: Default::default(),
        }
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys.read().expect("key ring lock").clone()
    }

    /// The id of the key that seals.
    pub fn current(&self) -> String {
        self.keys().current.clone()
    }

    /// Every key id the ring holds, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.keys().ciphers.keys().cloned().collect()
    }

    /// Reads the ring file again (a rotation by another process). True if
    /// the current key changed. A ring from the environment never changes.
    pub fn reload(&self) -> Result<bool, SealError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        *self.last_read.lock().expect("key ring lock") = Instant::now();
        let text = std::fs::read_to_string(path).map_err(|e| SealError::Ring {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let keys = Keys::parse(&text, &path.display().to_string())?;
        let changed = keys.current != self.keys().current;
        *self.keys.write().expect("key ring lock") = Arc::new(keys);
        Ok(changed)
    }

    /// `plain` sealed under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let keys = self.keys();
        let cipher = &keys.ciphers[&keys.current];
        let count = self
            .sealed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nonce = XNonce::default();
        nonce[..NONCE - 8].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE - 8..].copy_from_slice(&count.to_le_bytes());
        let body = cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 seals any length a record can have");
        let id = keys.current.as_bytes();
        let mut out = Vec::with_capacity(3 + id.len() + NONCE + body.len());
        out.extend_from_slice(&[MAGIC, VERSION, id.len() as u8]);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Whether `bytes` look like something [`KeyRing::seal`] made.
    pub fn is_sealed(bytes: &[u8]) -> bool {
        bytes.len() > 3 && bytes[0] == MAGIC && bytes[1] == VERSION
    }

    /// The key id a sealed value names.
    pub fn key_of(sealed: &[u8]) -> Result<&str, SealError> {
        if !KeyRing::is_sealed(sealed) {
            return Err(SealError::Malformed("no colloquy seal header"));
        }
        let len = sealed[2] as usize;
        let id = sealed
            .get(3..3 + len)
            .ok_or(SealError::Malformed("cut short"))?;
        std::str::from_utf8(id).map_err(|_| SealError::Malformed("key id is not text"))
    }

    /// What [`KeyRing::seal`] sealed, if `aad` is what it was bound to.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let id = KeyRing::key_of(sealed)?;
        let rest = &sealed[3 + id.len()..];
        if rest.len() < NONCE + 16 {
            return Err(SealError::Malformed("cut short"));
        }
        let (nonce, body) = rest.split_at(NONCE);
        let mut keys = self.keys();
        if !keys.ciphers.contains_key(id) && self.may_reload() {
            // Another process may have rotated the ring since it was read.
            let _ = self.reload();
            keys = self.keys();
        }
        let cipher = keys
            .ciphers
            .get(id)
            .ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| SealError::Tampered)
    }

    fn may_reload(&self) -> bool {
        self.file.is_some()
            && self.last_read.lock().expect("key ring lock").elapsed() >= RELOAD_AFTER
    }

    /// [`KeyRing::seal`] as text (base64url), for a JSON field.
    pub fn seal_text(&self, aad: &[u8], plain: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.seal(aad, plain))
    }

    pub fn open_text(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Malformed("not base64url"))?;
        self.open(aad, &bytes)
    }

    /// The key id a sealed text names.
    pub fn key_of_text(sealed: &str) -> Result<String, SealError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Malformed("not base64url"))?;
        KeyRing::key_of(&bytes).map(str::to_string)
    }

    /// `event`'s stored form: its kind sealed, its masked kind readable.
    /// Only personal events are sealed; others are stored as they are.
    pub fn seal_event(&self, event: &Event) -> Event {
        let clear = serde_json::to_vec(&event.kind).expect("events serialize");
        Event {
            sealed: Some(self.seal_text(&event_aad(event), &clear).into()),
            kind: redact::masked(&event.kind),
            ..event.clone()
        }
    }

    /// A stored event back as it was before [`KeyRing::seal_event`].
    pub fn open_event(&self, event: &mut Event) -> Result<(), SealError> {
        let Some(sealed) = event.sealed.take() else {
            return Ok(());
        };
        let clear = self.open_text(&event_aad(event), &sealed)?;
        event.kind = serde_json::from_slice(&clear)
            .map_err(|_| SealError::Malformed("the sealed kind is not an event"))?;
        Ok(())
    }

    /// A state's stored form: the values of its sensitive slots sealed
    /// together, masked in `slots`. `None` when it holds none.
    pub fn seal_state(&self, state: &State) -> Option<State> {
        let secret: BTreeMap<&String, &Value> = state
            .sensitive
            .iter()
            .filter_map(|slot| state.slots.get_key_value(slot))
            .collect();
        if secret.is_empty() {
            return None;
        }
        let clear = serde_json::to_vec(&secret).expect("values serialize");
        let mut stored = state.clone();
        for slot in secret.keys() {
            stored
                .slots
                .insert((*slot).clone(), Value::Text(redact::MASK.into()));
        }
        stored.sealed = Some(self.seal_text(&state_aad(&state.user_id), &clear).into());
        Some(stored)
    }

    /// A stored state back as it was before [`KeyRing::seal_state`].
    pub fn open_state(&self, state: &mut State) -> Result<(), SealError> {
        let Some(sealed) = state.sealed.take() else {
            return Ok(());
        };
        let clear = self.open_text(&state_aad(&state.user_id), &sealed)?;
        let values: BTreeMap<String, Value> = serde_json::from_slice(&clear)
            .map_err(|_| SealError::Malformed("the sealed slots are not slot values"))?;
        state.slots.extend(values);
        Ok(())
    }
}

fn event_aad(e: &Event) -> Vec<u8> {
    let mut aad = Vec::with_capacity(e.user_id.len() + 17);
    aad.extend_from_slice(e.user_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(e.event_id.as_bytes());
    aad
}

fn state_aad(user: &str) -> Vec<u8> {
    let mut aad = user.as_bytes().to_vec();
    aad.extend_from_slice(b"\0state");
    aad
}

/// The `n`th key's id, of one width for the first 9,999 keys: a value
/// re-sealed under a new key is then as long as it was, which the embedded
/// event log needs to re-seal in place.
fn key_id(n: u64) -> String {
    format!("k{n:04}")
}

fn new_key() -> String {
    hex::encode(XChaCha20Poly1305::generate_key(&mut OsRng))
}

/// Writes the ring file atomically: a new owner-only file beside it,
/// synced, then put in place and the directory synced, so a crash leaves
/// the old ring or the new one, never a torn one. A new ring is linked in
/// place only if there is none yet: of processes starting together on one
/// data directory, one creates the ring and the others read it, instead of
/// each sealing with a key of its own under the same id.
fn write_ring(path: &Path, file: &RingFile, create: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    if create {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(file).expect("ring serializes"))?;
    f.sync_all()?;
    if create {
        let linked = std::fs::hard_link(&tmp, path);
        std::fs::remove_file(&tmp)?;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
    } else {
        std::fs::rename(&tmp, path)?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    if create {
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Adds a new key to the ring in `path` and makes it current; returns its
/// id. Older keys stay, so what they sealed still opens; processes pick
/// the new key up when they next read the file.
pub fn rotate_file(path: &Path) -> Result<String, SealError> {
    let ring_err = |reason: String| SealError::Ring {
        source_name: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| ring_err(e.to_string()))?;
    Keys::parse(&text, &path.display().to_string())?;
    let mut file: RingFile = serde_json::from_str(&text).map_err(|e| ring_err(e.to_string()))?;
    let next = file
        .keys
        .keys()
        .filter_map(|id| id.strip_prefix('k')?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let id = key_id(next);
    file.keys.insert(id.clone(), new_key());
    file.current = id.clone();
    write_ring(path, &file, false).map_err(|e| ring_err(e.to_string()))?;
    Ok(id)
}

/// How many stored records a re-sealing read and rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Records read (appends, event rows, snapshots).
    pub read: u64,
    /// Records written back, each with at least one value sealed again.
    pub rewritten: u64,
}

/// What `colloquy keys reencrypt` hands a store
/// ([`ConversationStore::reseal`]): it seals again, under the current key,
/// every value an older key sealed, with the same associated data, and
/// leaves everything else of a record as it was.
pub struct Resealer {
    ring: Arc<KeyRing>,
    progress: Box<dyn Fn(u64) + Send + Sync>,
    read: std::sync::atomic::AtomicU64,
}

impl Resealer {
    /// `progress` hears the number of records read so far, now and then.
    pub fn new(ring: Arc<KeyRing>, progress: impl Fn(u64) + Send + Sync + 'static) -> Resealer {
        Resealer {
            ring,
            progress: Box::new(progress),
            read: Default::default(),
        }
    }

    fn count(&self) {
        let read = self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if read.is_multiple_of(1024) {
            (self.progress)(read);
        }
    }

    fn again(&self, aad: &[u8], sealed: &str) -> Result<Option<Box<str>>, SealError> {
        if KeyRing::key_of_text(sealed)? == self.ring.current() {
            return Ok(None);
        }
        let clear = self.ring.open_text(aad, sealed)?;
        Ok(Some(self.ring.seal_text(aad, &clear).into()))
    }

    /// One stored record's events (as stored): true if any was sealed
    /// again.
    pub fn events(&self, events: &mut [Event]) -> Result<bool, SealError> {
        self.count();
        let mut changed = false;
        for e in events.iter_mut() {
            let Some(sealed) = &e.sealed else { continue };
            if let Some(new) = self.again(&event_aad(e), sealed)? {
                e.sealed = Some(new);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// One stored state: true if its sealed slots were sealed again.
    pub fn state(&self, state: &mut State) -> Result<bool, SealError> {
        self.count();
        let Some(sealed) = &state.sealed else {
            return Ok(false);
        };
        match self.again(&state_aad(&state.user_id), sealed)? {
            Some(new) => {
                state.sealed = Some(new);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A store that seals what it writes and opens what it reads: personal
/// events and the sensitive slots of snapshots. Turns without personal
/// data pass through untouched.
pub struct Sealed {
    inner: Arc<dyn ConversationStore>,
    ring: Arc<KeyRing>,
}

impl Sealed {
    pub fn new(inner: Arc<dyn ConversationStore>, ring: Arc<KeyRing>) -> Sealed {
        Sealed { inner, ring }
    }

    /// The events as stored (personal ones sealed).
    pub fn stored<'a>(&self, events: &'a [Event]) -> Cow<'a, [Event]> {
        let unsealed = |e: &Event| e.personal && e.sealed.is_none();
        if !events.iter().any(unsealed) {
            return Cow::Borrowed(events);
        }
        Cow::Owned(
            events
                .iter()
                .map(|e| {
                    if unsealed(e) {
                        self.ring.seal_event(e)
                    } else {
                        e.clone()
                    }
                })
                .collect(),
        )
    }
}

#[async_trait]
impl ConversationStore for Sealed {
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError> {
        let stored = self.stored(events);
        self.inner.append(user_id, expected_seq, &stored).await
    }

    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = self.inner.events_after(user_id, after_seq, limit).await?;
        for e in events.iter_mut().filter(|e| e.sealed.is_some()) {
            self.ring.open_event(e)?;
        }
        Ok(events)
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(user_id).await
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        match self.ring.seal_state(&snapshot.state) {
            Some(state) => {
                let stored = Snapshot {
                    state,
                    ..snapshot.clone()
                };
                self.inner.put_snapshot(&stored).await
            }
            None => self.inner.put_snapshot(snapshot).await,
        }
    }

    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let Some(mut snapshot) = self.inner.get_snapshot(user_id).await? else {
            return Ok(None);
        };
        self.ring.open_state(&mut snapshot.state)?;
        Ok(Some(snapshot))
    }

    async fn reseal(&self, resealer: &Resealer) -> Result<ResealReport, StoreError> {
        self.inner.reseal(resealer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (tempfile::TempDir, PathBuf, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/sealing.json");
        let ring = KeyRing::open_or_create(&path).unwrap();
        (dir, path, ring)
    }

    #[test]
    fn seals_and_opens_bound_to_the_associated_data() {
        let (_dir, _path, ring) = ring();
        let sealed = ring.seal(b"alice", b"13800138000");
        assert_eq!(KeyRing::key_of(&sealed).unwrap(), "k0001");
        assert!(!sealed.windows(11).any(|w| w == b"13800138000"));
        assert_eq!(ring.open(b"alice", &sealed).unwrap(), b"13800138000");
        assert!(matches!(
            ring.open(b"bob", &sealed),
            Err(SealError::Tampered)
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.open(b"alice", &flipped),
            Err(SealError::Tampered)
        ));
        // Two seals of one value differ: the nonce is random.
        assert_ne!(ring.seal(b"alice", b"x"), ring.seal(b"alice", b"x"));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_open_in_every_process() {
        let (_dir, path, ring) = ring();
        let other_process = KeyRing::open_or_create(&path).unwrap();
        let old = ring.seal(b"u", b"old");
        assert_eq!(rotate_file(&path).unwrap(), "k0002");
        // Not yet read again: this process still seals with k0001.
        assert_eq!(ring.current(), "k0001");
        assert!(ring.reload().unwrap());
        let new = ring.seal(b"u", b"new");
        assert_eq!(KeyRing::key_of(&new).unwrap(), "k0002");
        assert_eq!(ring.open(b"u", &old).unwrap(), b"old");
        // The other process meets k0002 before its reload: it reads the file
        // again on its own.
        *other_process.last_read.lock().unwrap() -= RELOAD_AFTER;
        assert_eq!(other_process.open(b"u", &new).unwrap(), b"new");
        assert_eq!(other_process.ids(), ["k0001", "k0002"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_rings_are_refused_with_the_reason() {
        let err = |text: &str| KeyRing::from_json(text, "env").err().unwrap().to_string();
        assert!(err("{}").contains("missing field"), "{}", err("{}"));
        let short = r#"{"current":"a","keys":{"a":"00ff"}}"#;
        assert!(err(short).contains("has 2 bytes"), "{}", err(short));
        let key = "11".repeat(32);
        let missing = format!(r#"{{"current":"b","keys":{{"a":"{key}"}}}}"#);
        assert!(err(&missing).contains("not among the keys"));
        let bad_id = format!(r#"{{"current":"a b","keys":{{"a b":"{key}"}}}}"#);
        assert!(err(&bad_id).contains("letters, digits"));
        let ok = format!(r#"{{"current":"a","keys":{{"a":"{key}"}}}}"#);
        let ring = KeyRing::from_json(&ok, "env").unwrap();
        let sealed = ring.seal(b"", b"v");
        let other = KeyRing::from_json(&ok.replace("\"a\"", "\"z\""), "env").unwrap();
        assert!(matches!(other.open(b"", &sealed), Err(SealError::UnknownKey(k)) if k == "a"));
    }

    #[test]
    fn a_state_keeps_only_its_sensitive_values_sealed() {
        let (_dir, _path, ring) = ring();
        let mut state = State::new("alice");
        state
            .slots
            .insert("phone".into(), Value::Text("13800138000".into()));
        state.slots.insert("size".into(), Value::Int(39));
        state.sensitive.push("phone".into());
        let stored = ring.seal_state(&state).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("13800138000"), "{json}");
        assert!(json.contains("39"));
        let mut back: State = serde_json::from_str(&json).unwrap();
        ring.open_state(&mut back).unwrap();
        assert_eq!(back, state);
        state.sensitive.clear();
        assert!(ring.seal_state(&state).is_none());
        // Moved onto another user, it does not open.
        let mut moved = stored.clone();
        moved.user_id = "bob".into();
        assert!(ring.open_state(&mut moved).is_err());
    }
}
