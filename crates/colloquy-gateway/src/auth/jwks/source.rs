//! Where a JWKS is read from: a file, or a URL fetched with an async
//! client (the gateway runs inside tokio, where a blocking client would
//! stall a worker thread for as long as the identity provider takes).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::super::config::AuthConfig;
use super::super::error::AuthError;

/// How long one read of the set may take, connection included. Also
/// bounds how long a request with an unknown `kid` waits for a refresh.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A larger document is refused unread: a JWKS holds a handful of keys
/// (a few KiB), and the response is held in memory whole.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

pub(in crate::auth) enum Source {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "auth.jwks_file {}", path.display()),
            Source::Url { url, .. } => write!(f, "auth.jwks_url {}", shown_url(url)),
        }
    }
}

/// The URL without credentials or query, which may hold secrets and
/// should not reach logs.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// `auth.jwks_url` as a URL this build can fetch.
pub(in crate::auth) fn parse_url(text: &str) -> Result<reqwest::Url, AuthError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| AuthError::Config(format!("auth.jwks_url is not a URL: {e}")))?;
    match url.scheme() {
        "https" | "http" => Ok(url),
        other => Err(AuthError::Config(format!(
            "auth.jwks_url has scheme {other:?}; use https:// (or http:// on a trusted network), \
             or auth.jwks_file for a file"
        ))),
    }
}

impl Source {
    /// The JWKS source `cfg` names, if any (`cfg` is validated: at most
    /// one is set).
    pub(in crate::auth) fn from_config(cfg: &AuthConfig) -> Result<Option<Source>, AuthError> {
        if let Some(path) = &cfg.jwks_file {
            return Ok(Some(Source::File(path.clone())));
        }
        let Some(text) = &cfg.jwks_url else {
            return Ok(None);
        };
        let url = parse_url(text)?;
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            // A fetch every few minutes gains nothing from a kept
            // connection, and a new one follows the provider's DNS.
            .pool_max_idle_per_host(0)
            // A redirect must not turn an https fetch into a plain one.
            .https_only(url.scheme() == "https")
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("colloquy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                AuthError::Config(format!("cannot set up the client for auth.jwks_url: {e}"))
            })?;
        Ok(Some(Source::Url { url, client }))
    }

    /// The document's bytes, or why they could not be read (phrased to
    /// follow the source's name).
    pub(in crate::auth) async fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::File(path) => {
                let read = async {
                    let file = tokio::fs::File::open(path).await?;
                    let mut bytes = Vec::new();
                    use tokio::io::AsyncReadExt;
                    file.take(MAX_JWKS_BYTES as u64 + 1)
                        .read_to_end(&mut bytes)
                        .await?;
                    Ok::<_, std::io::Error>(bytes)
                };
                let bytes = tokio::time::timeout(JWKS_FETCH_TIMEOUT, read)
                    .await
                    .map_err(|_| "could not be read in time".to_string())?
                    .map_err(|e| format!("cannot be read: {e}"))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(format!("is larger than {MAX_JWKS_BYTES} bytes"));
                }
                Ok(bytes)
            }
            Source::Url { url, client } => {
                let mut response = client
                    .get(url.clone())
                    .header(
                        reqwest::header::ACCEPT,
                        "application/jwk-set+json, application/json",
                    )
                    .send()
                    .await
                    .map_err(|e| format!("cannot be fetched: {}", fetch_error(e)))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("answered HTTP {status}"));
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    return Err(format!("is larger than {MAX_JWKS_BYTES} bytes"));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("cannot be fetched: {}", fetch_error(e)))?
                {
                    if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(format!("is larger than {MAX_JWKS_BYTES} bytes"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }
        }
    }
}

/// reqwest's error with its causes (its own message alone is "error
/// sending request"), without the URL, which the caller names once.
fn fetch_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", JWKS_FETCH_TIMEOUT.as_secs());
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
