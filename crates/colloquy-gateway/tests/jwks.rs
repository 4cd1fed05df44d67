//! RS256/ES256 keys from a JWKS: served by an identity provider the test
//! runs on 127.0.0.1 (or written to a file), with keys the test generates.
//! Covers the choice by `kid`, refusals and their reasons, rotation through
//! the unknown-kid refresh and the periodic one, a provider that fails, and
//! sets that stop startup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use colloquy_gateway::auth::{Algorithm, AuthConfig, AuthError, Principal, Verifier};
use jsonwebtoken::{EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

// --- keys and tokens ---------------------------------------------------------

struct Keys {
    rsa: [rsa::RsaPrivateKey; 2],
    ec: [p256::SecretKey; 2],
}

/// Generated once per run: 2048-bit RSA keys take a while to make.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: [0, 1].map(|_| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap()),
        ec: [0, 1].map(|_| p256::SecretKey::random(&mut OsRng)),
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk(i: usize, kid: &str) -> Value {
    let key = keys().rsa[i].to_public_key();
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
    })
}

fn ec_jwk(i: usize, kid: &str) -> Value {
    let point = keys().ec[i].public_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid,
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    })
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn claims(sub: &str) -> Value {
    let now = colloquy_gateway::clock::unix_secs();
    json!({ "sub": sub, "scope": "chat", "iat": now, "exp": now + 600 })
}

fn sign(alg: jsonwebtoken::Algorithm, key: &EncodingKey, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims(sub), key).unwrap()
}

/// An RS256 token signed by generated RSA key `i`, naming `kid`.
fn rs256(i: usize, kid: Option<&str>, sub: &str) -> String {
    let der = keys().rsa[i].to_pkcs1_der().unwrap();
    let key = EncodingKey::from_rsa_der(der.as_bytes());
    sign(jsonwebtoken::Algorithm::RS256, &key, kid, sub)
}

/// An ES256 token signed by generated P-256 key `i`, naming `kid`.
fn es256(i: usize, kid: Option<&str>, sub: &str) -> String {
    let der = keys().ec[i].to_pkcs8_der().unwrap();
    let key = EncodingKey::from_ec_der(der.as_bytes());
    sign(jsonwebtoken::Algorithm::ES256, &key, kid, sub)
}

fn user(result: Result<Principal, AuthError>) -> String {
    result.unwrap().user_id
}

// --- the identity provider ---------------------------------------------------

/// Serves `GET /jwks` with whatever `body` holds (503 when `None`), and
/// counts the requests.
struct Provider {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(body: String) -> Provider {
        let shared = Arc::new(Mutex::new(Some(body)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f) = (shared.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let (b, f) = (b.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    match b.lock().unwrap().clone() {
                        Some(body) => (StatusCode::OK, body),
                        None => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider {
            url,
            body: shared,
            fetches,
            task,
        }
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Stops listening: later fetches find the port closed (the verifier
    /// keeps no idle connection).
    async fn stop(&self) {
        self.task.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn url_config(alg: Algorithm, url: &str) -> AuthConfig {
    AuthConfig {
        algorithm: alg,
        jwks_url: Some(url.to_string()),
        ..AuthConfig::default()
    }
}

/// Polls `check` for up to `within`.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

// --- choosing keys -------------------------------------------------------------

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_key_their_kid_names() {
    // One set with both kinds of key, as an identity provider may publish.
    let idp = Provider::start(set(&[
        rsa_jwk(0, "rsa-a"),
        rsa_jwk(1, "rsa-b"),
        ec_jwk(0, "ec-a"),
    ]))
    .await;

    let rs = Verifier::start(&url_config(Algorithm::RS256, &idp.url), None)
        .await
        .unwrap();
    assert_eq!(user(rs.verify(&rs256(0, Some("rsa-a"), "alice"))), "alice");
    assert_eq!(user(rs.verify(&rs256(1, Some("rsa-b"), "bob"))), "bob");
    assert_eq!(
        rs.jwks_stats().unwrap().keys,
        2,
        "the EC key is not RS256's"
    );
    // Two usable keys: a token must say which.
    let err = rs.verify(&rs256(0, None, "alice")).unwrap_err();
    assert_eq!((err.code(), err.status()), ("missing_kid", 401));

    let es = Verifier::start(&url_config(Algorithm::ES256, &idp.url), None)
        .await
        .unwrap();
    assert_eq!(user(es.verify(&es256(0, Some("ec-a"), "carol"))), "carol");
    // The only usable key: a token without kid is accepted.
    assert_eq!(user(es.verify(&es256(0, None, "carol"))), "carol");
    assert_eq!(es.jwks_stats().unwrap().keys, 1);
}

#[tokio::test]
async fn wrong_algorithms_keys_and_kids_are_refused_with_their_reason() {
    let mut rs512 = rsa_jwk(1, "rsa-512");
    rs512["alg"] = json!("RS512");
    let idp = Provider::start(set(&[rsa_jwk(0, "rsa-a"), ec_jwk(0, "ec-a"), rs512])).await;
    let rs = Verifier::start(&url_config(Algorithm::RS256, &idp.url), None)
        .await
        .unwrap();

    // An ES256 token, though its kid is in the set.
    let err = rs.verify(&es256(0, Some("ec-a"), "alice")).unwrap_err();
    assert_eq!(
        err,
        AuthError::WrongAlgorithm {
            expected: Algorithm::RS256,
            found: "ES256".into()
        }
    );
    // Signed by a key the set does not hold, naming one it does.
    assert_eq!(
        rs.verify(&rs256(1, Some("rsa-a"), "alice")),
        Err(AuthError::BadSignature)
    );
    // A kid the set does not have.
    let err = rs.verify(&rs256(0, Some("nope"), "alice")).unwrap_err();
    assert_eq!(err, AuthError::UnknownKeyId("\"nope\"".into()));
    assert_eq!((err.code(), err.status()), ("unknown_kid", 401));
    assert_eq!(
        err.to_string(),
        "token key id (kid) \"nope\" is not in the key set"
    );
    // A key of the set meant for another algorithm.
    let err = rs.verify(&rs256(1, Some("rsa-512"), "alice")).unwrap_err();
    assert_eq!(err.code(), "unusable_key");
    assert!(err.to_string().contains("is for \"RS512\""), "{err}");
    // A kid that is not a string.
    let header = b64(br#"{"alg":"RS256","kid":7}"#);
    let err = rs.verify(&format!("{header}.e30.c2ln")).unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
}

// --- rotation --------------------------------------------------------------------

#[tokio::test]
async fn a_new_kid_is_fetched_and_a_removed_key_stops_verifying() {
    let idp = Provider::start(set(&[rsa_jwk(0, "2024")])).await;
    let rs = Verifier::start(&url_config(Algorithm::RS256, &idp.url), None)
        .await
        .unwrap();
    assert_eq!(idp.fetches(), 1, "read once at startup");
    let old = rs256(0, Some("2024"), "alice");
    assert_eq!(user(rs.authenticate(&old).await), "alice");

    // The provider rotates: a new key, the old one withdrawn.
    idp.serve(Some(set(&[rsa_jwk(1, "2025")])));
    let new = rs256(1, Some("2025"), "alice");
    assert!(matches!(rs.verify(&new), Err(AuthError::UnknownKeyId(_))));
    assert_eq!(user(rs.authenticate(&new).await), "alice");
    assert_eq!(idp.fetches(), 2, "the unknown kid made one fetch");

    // The old token was verified and remembered; the refresh that removed
    // its key made the verifier forget it.
    assert_eq!(
        rs.authenticate(&old).await,
        Err(AuthError::UnknownKeyId("\"2024\"".into()))
    );
    assert_eq!(idp.fetches(), 2, "within the cooldown: no second fetch");
    assert_eq!(rs.jwks_stats().unwrap().refreshed, 1);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch() {
    let idp = Provider::start(set(&[rsa_jwk(0, "a")])).await;
    let rs = Verifier::start(&url_config(Algorithm::RS256, &idp.url), None)
        .await
        .unwrap();
    let mut waits = Vec::new();
    for i in 0..50 {
        let (rs, token) = (rs.clone(), rs256(0, Some(&format!("random-{i}")), "eve"));
        waits.push(tokio::spawn(async move { rs.authenticate(&token).await }));
    }
    for wait in waits {
        let err = wait.await.unwrap().unwrap_err();
        assert_eq!(err.code(), "unknown_kid");
    }
    // And one after another, each after the last refresh has finished.
    for i in 0..20 {
        let err = rs
            .authenticate(&rs256(0, Some(&format!("later-{i}")), "eve"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unknown_kid");
    }
    assert_eq!(idp.fetches(), 2, "startup, then one refresh for all 70");
    // Known kids are not held up by the cooldown.
    assert_eq!(
        user(rs.authenticate(&rs256(0, Some("a"), "al")).await),
        "al"
    );
}

#[tokio::test]
async fn periodic_refresh_drops_keys_and_keeps_the_last_good_set_when_the_provider_fails() {
    let idp = Provider::start(set(&[rsa_jwk(0, "a"), rsa_jwk(1, "b")])).await;
    let cfg = AuthConfig {
        jwks_refresh: Duration::from_secs(1),
        ..url_config(Algorithm::RS256, &idp.url)
    };
    let rs = Verifier::start(&cfg, None).await.unwrap();
    let b = rs256(1, Some("b"), "bob");
    assert_eq!(user(rs.verify(&b)), "bob");

    // Key b withdrawn: the next periodic read drops it, with no token
    // asking for a refresh.
    idp.serve(Some(set(&[rsa_jwk(0, "a")])));
    assert!(
        eventually(Duration::from_secs(5), || rs.verify(&b).is_err()).await,
        "b still verifies"
    );
    assert_eq!(rs.verify(&b).unwrap_err().code(), "unknown_kid");
    assert_eq!(rs.jwks_stats().unwrap().keys, 1);

    // A provider answering garbage, then 503, then not at all: each failed
    // read is counted and key a keeps working.
    idp.serve(Some("{not json".into()));
    a_read_fails_and_key_a_still_verifies(&rs, "al").await;
    idp.serve(None);
    a_read_fails_and_key_a_still_verifies(&rs, "amy").await;
    idp.stop().await;
    a_read_fails_and_key_a_still_verifies(&rs, "ann").await;
    let stats = rs.jwks_stats().unwrap();
    assert!(stats.refreshed >= 1 && stats.keys == 1, "{stats:?}");
}

/// Waits for the next failed read, then verifies a fresh token of key a
/// (fresh, so that the cache does not answer for the set).
async fn a_read_fails_and_key_a_still_verifies(rs: &Verifier, sub: &str) {
    let before = rs.jwks_stats().unwrap().failed;
    assert!(
        eventually(Duration::from_secs(5), || rs.jwks_stats().unwrap().failed
            > before)
        .await,
        "no failed read counted before {sub}'s token"
    );
    assert_eq!(user(rs.verify(&rs256(0, Some("a"), sub))), sub);
}

#[tokio::test]
async fn a_jwks_file_is_read_and_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, set(&[ec_jwk(0, "one")])).unwrap();
    let cfg = AuthConfig {
        algorithm: Algorithm::ES256,
        jwks_file: Some(path.clone()),
        ..AuthConfig::default()
    };
    let es = Verifier::start(&cfg, None).await.unwrap();
    assert_eq!(user(es.verify(&es256(0, Some("one"), "alice"))), "alice");

    std::fs::write(&path, set(&[ec_jwk(0, "one"), ec_jwk(1, "two")])).unwrap();
    assert_eq!(
        user(es.authenticate(&es256(1, Some("two"), "bob")).await),
        "bob"
    );
}

// --- sets that stop startup --------------------------------------------------

fn startup_error(result: Result<Verifier, AuthError>) -> String {
    match result {
        Err(e @ AuthError::Config(_)) => e.to_string(),
        Err(e) => panic!("expected a Config error, got {e:?}"),
        Ok(_) => panic!("expected a Config error, got a verifier"),
    }
}

#[tokio::test]
async fn a_bad_jwks_stops_startup_with_an_error_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        AuthConfig {
            algorithm: Algorithm::RS256,
            jwks_file: Some(path),
            ..AuthConfig::default()
        }
    };
    let mut enc = rsa_jwk(0, "enc");
    enc["use"] = json!("enc");
    let cases = [
        (file("garbage.json", "<html>"), "garbage.json is not JSON (line 1, column 1)"),
        (file("object.json", "{}"), "object.json is not a JWK Set: no \"keys\" array"),
        (
            file("enc.json", &set(&[enc, ec_jwk(0, "ec")])),
            "enc.json holds no usable key for RS256: key \"ec\" is of key type \"EC\", which RS256 does not use",
        ),
        (
            AuthConfig {
                algorithm: Algorithm::RS256,
                jwks_file: Some(dir.path().join("missing.json")),
                ..AuthConfig::default()
            },
            "missing.json cannot be read",
        ),
    ];
    for (cfg, expected) in cases {
        let msg = startup_error(Verifier::start(&cfg, None).await);
        assert!(
            msg.contains("auth.jwks_file") && msg.contains(expected),
            "{msg}"
        );
    }

    // A provider that answers an error, or nothing at all.
    let idp = Provider::start(String::new()).await;
    idp.serve(None);
    let msg = startup_error(Verifier::start(&url_config(Algorithm::RS256, &idp.url), None).await);
    assert!(
        msg.contains(&format!("auth.jwks_url {} answered HTTP 503", idp.url)),
        "{msg}"
    );
    idp.stop().await;
    let msg = startup_error(Verifier::start(&url_config(Algorithm::RS256, &idp.url), None).await);
    assert!(
        msg.contains(&format!("auth.jwks_url {} cannot be fetched", idp.url)),
        "{msg}"
    );
}

#[tokio::test]
async fn https_urls_are_fetched_over_tls() {
    // A plain-HTTP server behind an https:// URL: the client speaks TLS to
    // it (this build has TLS) and fails the handshake, rather than refusing
    // the scheme.
    let idp = Provider::start(set(&[rsa_jwk(0, "a")])).await;
    let https = idp.url.replace("http://", "https://");
    let msg = startup_error(Verifier::start(&url_config(Algorithm::RS256, &https), None).await);
    assert!(msg.contains("cannot be fetched"), "{msg}");
    assert!(!msg.contains("scheme"), "{msg}");
    assert_eq!(idp.fetches(), 0, "no HTTP request reached the server");
}

#[test]
fn jwks_settings_are_checked_before_anything_is_read() {
    let rs = |cfg: AuthConfig| AuthConfig {
        algorithm: Algorithm::RS256,
        ..cfg
    };
    let cases = [
        (
            AuthConfig {
                jwks_url: Some("https://id.example.com/jwks".into()),
                ..AuthConfig::default()
            },
            "auth.jwks_url is only used with RS256 or ES256",
        ),
        (
            rs(AuthConfig {
                jwks_url: Some("https://id.example.com/jwks".into()),
                jwks_file: Some("jwks.json".into()),
                ..AuthConfig::default()
            }),
            "auth.jwks_file and auth.jwks_url are both set",
        ),
        (
            rs(AuthConfig {
                jwks_url: Some("ftp://id.example.com/jwks".into()),
                ..AuthConfig::default()
            }),
            "auth.jwks_url has scheme \"ftp\"",
        ),
        (
            rs(AuthConfig {
                jwks_url: Some("id.example.com/jwks".into()),
                ..AuthConfig::default()
            }),
            "auth.jwks_url is not a URL",
        ),
        (
            rs(AuthConfig {
                jwks_url: Some("https://id.example.com/jwks".into()),
                jwks_refresh: Duration::from_millis(10),
                ..AuthConfig::default()
            }),
            "auth.jwks_refresh is 10ms; it must be between 1s and 1d",
        ),
        (rs(AuthConfig::default()), "auth.jwks_file or auth.jwks_url"),
    ];
    for (cfg, expected) in cases {
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains(expected), "{msg}");
    }
    // A JWKS needs the async constructor, which reads it.
    let cfg = rs(AuthConfig {
        jwks_url: Some("https://id.example.com/jwks".into()),
        ..AuthConfig::default()
    });
    assert!(Verifier::new(&cfg, None)
        .unwrap_err()
        .to_string()
        .contains("Verifier::start"));
}
