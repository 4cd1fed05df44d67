//! Secrets kept in the data directory when none is configured: generated
//! once, readable only by the owner, reused on every start.

use anyhow::Context;
use std::io::Read;
use std::path::Path;

/// The key from `env` if set, else the one stored under `data/keys/NAME`
/// (created with 32 random bytes on first use).
pub fn load_or_create(data: &Path, name: &str, env: &str) -> anyhow::Result<Vec<u8>> {
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return Ok(v.into_bytes());
        }
    }
    let dir = data.join("keys");
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(hex_key) => {
            return hex::decode(hex_key.trim())
                .with_context(|| format!("{} is not a hex key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    write_private(&path, &hex::encode(&key))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}
