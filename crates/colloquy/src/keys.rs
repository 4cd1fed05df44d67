//! Secrets kept in the data directory when none is configured: generated
//! once, readable only by the owner, reused on every start.

use anyhow::Context;
use std::io::Read;
use std::path::Path;

/// A secret and where it came from.
pub struct Secret {
    pub bytes: Vec<u8>,
    /// True when colloquy generated it into the data directory (now or on
    /// an earlier start), false when the operator configured it.
    pub generated: bool,
}

/// The key from `env` if set, else the one stored under `data/keys/NAME`
/// (created with 32 random bytes on first use).
pub fn load_or_create(data: &Path, name: &str, env: &str) -> anyhow::Result<Secret> {
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return Ok(Secret {
                bytes: v.into_bytes(),
                generated: false,
            });
        }
    }
    let dir = data.join("keys");
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(hex_key) => {
            let bytes = hex::decode(hex_key.trim())
                .with_context(|| format!("{} is not a hex key", path.display()))?;
            return Ok(Secret {
                bytes,
                generated: true,
            });
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
    Ok(Secret {
        bytes: key,
        generated: true,
    })
}

/// Write a new owner-only file and make it durable: the file, its entry in
/// `keys/`, and `keys/` in the data directory. A key lost in a crash after
/// data was signed or sealed with it would make that data unreadable.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    let mut dir = path.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        std::fs::File::open(d)?.sync_all()?;
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let data = tempfile::tempdir().unwrap();
        let env = "COLLOQUY_TEST_KEYS_UNSET";
        let first = load_or_create(data.path(), "k", env).unwrap();
        assert_eq!(first.bytes.len(), 32);
        assert!(first.generated);
        let again = load_or_create(data.path(), "k", env).unwrap();
        assert_eq!(again.bytes, first.bytes);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("keys/k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
