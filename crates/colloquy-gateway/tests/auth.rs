//! JWT verification and issuing, end to end through the public API.
//!
//! The keys under tests/keys/ were generated with openssl for these tests
//! only (RSA 2048 and EC P-256; PKCS#8 plus the PKCS#1 / SEC1 variants,
//! a 1024-bit RSA and a P-384 public key for the rejection cases).

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use colloquy_gateway::auth::{
    parse_ttl, Algorithm, AuthConfig, AuthError, Issuer, Principal, Scope, Verifier,
};
use serde_json::{json, Value};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210-other-secret";
/// A fixed "now" keeps every time-dependent assertion deterministic.
const NOW: u64 = 1_750_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn key_bytes(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

fn hs_config() -> AuthConfig {
    AuthConfig::default()
}

fn hs_verifier() -> Verifier {
    Verifier::new(&hs_config(), Some(SECRET)).unwrap()
}

fn pk_config(alg: Algorithm, public_key: &str) -> AuthConfig {
    AuthConfig {
        algorithm: alg,
        public_key_file: Some(key_path(public_key)),
        ..AuthConfig::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary claims with HS256, bypassing `Issuer`, to build tokens
/// our issuer would never produce.
fn sign_hs(secret: &[u8], claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({ "sub": sub, "scope": scope, "iat": NOW, "exp": NOW + 3600 })
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn config_err(result: Result<Verifier, AuthError>) -> String {
    match result {
        Err(e @ AuthError::Config(_)) => {
            assert_eq!(e.status(), 500);
            e.to_string()
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

// --- HS256 -----------------------------------------------------------------

#[test]
fn hs256_round_trip() {
    let issuer = Issuer::hs256(SECRET, None, None);
    let token = issuer.issue("alice", Scope::Chat, HOUR, NOW).unwrap();

    let claims = payload_of(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "chat");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 3600);
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none());

    let principal = hs_verifier().verify_at(&token, NOW + 10).unwrap();
    assert_eq!(
        principal,
        Principal {
            user_id: "alice".into(),
            scopes: vec![Scope::Chat],
            expires_at: NOW + 3600,
            token_id: principal.token_id,
        }
    );
    // Tokens are told apart for their rate limits, the same token alike.
    let other = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW + 1)
        .unwrap();
    let again = hs_verifier().verify_at(&token, NOW + 20).unwrap();
    assert_eq!(again.token_id, principal.token_id);
    assert_ne!(
        hs_verifier().verify_at(&other, NOW + 10).unwrap().token_id,
        principal.token_id
    );
}

#[test]
fn verify_uses_the_system_clock() {
    let token = Issuer::hs256(SECRET, None, None)
        .issue_now("alice", Scope::Chat, HOUR)
        .unwrap();
    assert_eq!(hs_verifier().verify(&token).unwrap().user_id, "alice");

    // Fixed in the past: only the real clock makes this expired.
    let old = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    assert_eq!(hs_verifier().verify(&old), Err(AuthError::Expired));
}

#[test]
fn expired_token_is_rejected_after_the_leeway() {
    // Issued two hours before NOW with a one-hour lifetime.
    let token = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW - 7200)
        .unwrap();
    let err = hs_verifier().verify_at(&token, NOW).unwrap_err();
    assert_eq!(err, AuthError::Expired);
    assert_eq!((err.status(), err.code()), (401, "token_expired"));

    // exp = NOW - 3600; the default leeway is 30 s.
    let v = hs_verifier();
    let exp = NOW - 3600;
    assert!(v.verify_at(&token, exp - 1).is_ok());
    assert!(v.verify_at(&token, exp + 29).is_ok(), "within the leeway");
    assert_eq!(v.verify_at(&token, exp + 30), Err(AuthError::Expired));

    let strict = Verifier::new(
        &AuthConfig {
            leeway_secs: 0,
            ..hs_config()
        },
        Some(SECRET),
    )
    .unwrap();
    assert_eq!(strict.verify_at(&token, exp), Err(AuthError::Expired));
    assert!(strict.verify_at(&token, exp - 1).is_ok());
}

/// A token with `exp: 1e300` used to be accepted: a leaked one would have
/// worked for ever.
#[test]
fn lifetimes_past_the_maximum_are_refused() {
    let v = hs_verifier();
    let day = 24 * 3600;
    let token = |claims: Value| sign_hs(SECRET, &claims);
    for (what, claims) in [
        (
            "exp 1e300",
            json!({"sub": "alice", "scope": "chat", "exp": 1e300}),
        ),
        (
            "31 days from now, no iat",
            json!({"sub": "alice", "scope": "chat", "exp": NOW + 31 * day}),
        ),
        (
            "issued 40 days ago, one hour left",
            json!({"sub": "alice", "scope": "chat", "iat": NOW - 40 * day, "exp": NOW + 3600}),
        ),
    ] {
        let err = v.verify_at(&token(claims), NOW).unwrap_err();
        assert!(
            matches!(err, AuthError::LifetimeTooLong { max_secs, .. } if max_secs == 30 * day),
            "{what}: {err:?}"
        );
        assert_eq!((err.status(), err.code()), (401, "token_lifetime_too_long"));
    }
    let ok = json!({"sub": "alice", "scope": "chat", "iat": NOW, "exp": NOW + 29 * day});
    assert!(v.verify_at(&token(ok), NOW).is_ok());

    let short = Verifier::new(
        &AuthConfig {
            max_token_lifetime: HOUR,
            ..hs_config()
        },
        Some(SECRET),
    )
    .unwrap();
    assert!(short
        .verify_at(&token(claims("alice", "chat")), NOW)
        .is_ok());
    let two_hours = json!({"sub": "alice", "scope": "chat", "iat": NOW, "exp": NOW + 7200});
    assert!(short.verify_at(&token(two_hours), NOW).is_err());
    let too_long = AuthConfig {
        max_token_lifetime: Duration::from_secs(400 * day),
        ..hs_config()
    };
    assert!(too_long.validate().is_err());
}

#[test]
fn missing_exp_is_rejected() {
    let token = sign_hs(
        SECRET,
        &json!({ "sub": "alice", "scope": "chat", "iat": NOW }),
    );
    let err = hs_verifier().verify_at(&token, NOW).unwrap_err();
    assert_eq!(err, AuthError::MissingClaim("exp"));
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("exp"), "{err}");
}

#[test]
fn exp_must_be_numeric() {
    for exp in [json!("1750003600"), json!(null), json!(-5), json!(true)] {
        let token = sign_hs(
            SECRET,
            &json!({ "sub": "alice", "scope": "chat", "exp": exp }),
        );
        assert!(
            matches!(
                hs_verifier().verify_at(&token, NOW),
                Err(AuthError::InvalidClaim { claim: "exp", .. })
            ),
            "{exp}"
        );
    }
    // RFC 7519 allows fractional NumericDates.
    let token = sign_hs(
        SECRET,
        &json!({ "sub": "alice", "scope": "chat", "exp": (NOW as f64) + 100.5 }),
    );
    assert_eq!(
        hs_verifier().verify_at(&token, NOW).unwrap().expires_at,
        NOW + 100
    );
}

#[test]
fn nbf_in_the_future_is_rejected() {
    let mut c = claims("alice", "chat");
    c["nbf"] = json!(NOW + 600);
    let token = sign_hs(SECRET, &c);
    assert_eq!(
        hs_verifier().verify_at(&token, NOW),
        Err(AuthError::NotYetValid)
    );
    assert!(
        hs_verifier().verify_at(&token, NOW + 600 - 30).is_ok(),
        "within the leeway"
    );
}

/// A verifier remembers tokens it accepted, but never their time checks:
/// the same token is refused again once it is out of its window.
#[test]
fn a_remembered_token_still_expires_and_waits_for_nbf() {
    let v = hs_verifier();
    let mut c = claims("alice", "chat");
    c["nbf"] = json!(NOW);
    c["exp"] = json!(NOW + 600);
    let token = sign_hs(SECRET, &c);
    assert!(v.verify_at(&token, NOW + 10).is_ok());
    assert!(v.verify_at(&token, NOW + 20).is_ok());
    assert_eq!(v.verify_at(&token, NOW - 31), Err(AuthError::NotYetValid));
    assert_eq!(v.verify_at(&token, NOW + 630), Err(AuthError::Expired));
    assert_eq!(
        v.verify_at(&token, NOW + 10).map(|p| p.user_id),
        Ok("alice".to_string())
    );
    // And a remembered token does not vouch for a tampered copy.
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut forged = c.clone();
    forged["sub"] = json!("mallory");
    let forged = format!("{head}.{}.{sig}", b64(forged.to_string().as_bytes()));
    assert_eq!(v.verify_at(&forged, NOW + 10), Err(AuthError::BadSignature));
}

#[test]
fn wrong_secret_is_a_bad_signature() {
    let token = Issuer::hs256(OTHER_SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    let err = hs_verifier().verify_at(&token, NOW).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(err.code(), "invalid_signature");
}

#[test]
fn bad_signature_wins_over_claim_problems() {
    // Expired and signed with the wrong secret: the signature is reported,
    // nothing is said about unauthenticated claims.
    let token = Issuer::hs256(OTHER_SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, 0)
        .unwrap();
    assert_eq!(
        hs_verifier().verify_at(&token, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let token = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = payload_of(&token);
    c["sub"] = json!("bob");
    c["scope"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        hs_verifier().verify_at(&forged, NOW),
        Err(AuthError::BadSignature)
    );

    // A flipped signature character is caught too.
    let mut sig = parts[2].to_string();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, first);
    let forged = format!("{}.{}.{}", parts[0], parts[1], sig);
    assert_eq!(
        hs_verifier().verify_at(&forged, NOW),
        Err(AuthError::BadSignature)
    );

    // And a stripped signature.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        hs_verifier().verify_at(&stripped, NOW),
        Err(AuthError::BadSignature)
    );
}

// --- algorithm attacks -------------------------------------------------------

fn alg_none_token(alg: &str, signature: &str) -> String {
    let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
    let payload = b64(claims("alice", "admin").to_string().as_bytes());
    format!("{header}.{payload}.{signature}")
}

#[test]
fn alg_none_is_rejected() {
    let rs = Verifier::new(&pk_config(Algorithm::RS256, "rsa_public.pem"), None).unwrap();
    for verifier in [hs_verifier(), rs] {
        for alg in ["none", "None", "NONE", "nOnE"] {
            for sig in ["", "c2ln"] {
                let err = verifier
                    .verify_at(&alg_none_token(alg, sig), NOW)
                    .unwrap_err();
                assert_eq!(
                    err,
                    AuthError::WrongAlgorithm {
                        expected: verifier.algorithm(),
                        found: "none".into()
                    },
                    "alg {alg}"
                );
                assert_eq!((err.status(), err.code()), (401, "wrong_algorithm"));
                assert!(err.to_string().contains("unsigned"), "{err}");
            }
        }
    }
}

#[test]
fn hs256_token_is_rejected_when_rs256_is_configured() {
    let rs = Verifier::new(&pk_config(Algorithm::RS256, "rsa_public.pem"), None).unwrap();
    let token = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    let err = rs.verify_at(&token, NOW).unwrap_err();
    assert_eq!(
        err,
        AuthError::WrongAlgorithm {
            expected: Algorithm::RS256,
            found: "HS256".into()
        }
    );
    assert!(
        err.to_string().contains("HS256") && err.to_string().contains("RS256"),
        "{err}"
    );
}

#[test]
fn other_algorithms_are_rejected_in_every_direction() {
    let rs = Verifier::new(&pk_config(Algorithm::RS256, "rsa_public.pem"), None).unwrap();
    let es = Verifier::new(&pk_config(Algorithm::ES256, "ec_public.pem"), None).unwrap();
    let rs_token =
        Issuer::from_private_pem(Algorithm::RS256, &key_bytes("rsa_private.pem"), None, None)
            .unwrap()
            .issue("alice", Scope::Chat, HOUR, NOW)
            .unwrap();
    let es_token =
        Issuer::from_private_pem(Algorithm::ES256, &key_bytes("ec_private.pem"), None, None)
            .unwrap()
            .issue("alice", Scope::Chat, HOUR, NOW)
            .unwrap();

    assert_eq!(
        es.verify_at(&rs_token, NOW),
        Err(AuthError::WrongAlgorithm {
            expected: Algorithm::ES256,
            found: "RS256".into()
        })
    );
    assert_eq!(
        rs.verify_at(&es_token, NOW),
        Err(AuthError::WrongAlgorithm {
            expected: Algorithm::RS256,
            found: "ES256".into()
        })
    );
    assert_eq!(
        hs_verifier().verify_at(&rs_token, NOW),
        Err(AuthError::WrongAlgorithm {
            expected: Algorithm::HS256,
            found: "RS256".into()
        })
    );
    // Same family, different hash: still not the configured algorithm.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims("alice", "chat"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(
        hs_verifier().verify_at(&hs512, NOW),
        Err(AuthError::WrongAlgorithm {
            expected: Algorithm::HS256,
            found: "HS512".into()
        })
    );
}

#[test]
fn key_confusion_attack_is_rejected() {
    // The attacker knows the RSA public key and uses its PEM text as an
    // HMAC secret, hoping the server verifies HS256 with "its key".
    let public_pem = key_bytes("rsa_public.pem");
    let rs = Verifier::new(&pk_config(Algorithm::RS256, "rsa_public.pem"), None).unwrap();

    let forged = sign_hs(&public_pem, &claims("mallory", "admin"));
    assert_eq!(
        rs.verify_at(&forged, NOW),
        Err(AuthError::WrongAlgorithm {
            expected: Algorithm::RS256,
            found: "HS256".into()
        })
    );

    // Variant: claim RS256 in the header but put the HMAC in the signature.
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64(claims("mallory", "admin").to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mac = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    let forged = format!("{signing_input}.{mac}");
    assert_eq!(rs.verify_at(&forged, NOW), Err(AuthError::BadSignature));
}

// --- RS256 / ES256 -----------------------------------------------------------

#[test]
fn rs256_round_trip_with_pkcs8_and_pkcs1_keys() {
    for private in ["rsa_private.pem", "rsa_private_pkcs1.pem"] {
        for public in ["rsa_public.pem", "rsa_public_pkcs1.pem"] {
            let issuer =
                Issuer::from_private_pem(Algorithm::RS256, &key_bytes(private), None, None)
                    .unwrap();
            assert_eq!(issuer.algorithm(), Algorithm::RS256);
            let token = issuer.issue("bob", Scope::Admin, HOUR, NOW).unwrap();
            let verifier = Verifier::new(&pk_config(Algorithm::RS256, public), None).unwrap();
            let p = verifier.verify_at(&token, NOW).unwrap();
            assert_eq!(p.user_id, "bob", "{private} / {public}");
            assert!(p.is_admin());
        }
    }
}

#[test]
fn es256_round_trip_with_pkcs8_and_sec1_keys() {
    let verifier = Verifier::new(&pk_config(Algorithm::ES256, "ec_public.pem"), None).unwrap();
    for private in ["ec_private.pem", "ec_private_sec1.pem"] {
        let issuer =
            Issuer::from_private_pem(Algorithm::ES256, &key_bytes(private), None, None).unwrap();
        let token = issuer.issue("carol", Scope::Chat, HOUR, NOW).unwrap();
        let p = verifier.verify_at(&token, NOW).unwrap();
        assert_eq!(
            (p.user_id.as_str(), p.scopes.as_slice()),
            ("carol", &[Scope::Chat][..])
        );

        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(claims("mallory", "admin").to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            verifier.verify_at(&forged, NOW),
            Err(AuthError::BadSignature)
        );
    }
}

#[test]
fn public_key_problems_are_clear_config_errors() {
    let cases: &[(Algorithm, &str, &str)] = &[
        (Algorithm::RS256, "does_not_exist.pem", "cannot read"),
        (Algorithm::RS256, "rsa_private.pem", "private key"),
        (Algorithm::ES256, "ec_private_sec1.pem", "private key"),
        (Algorithm::RS256, "ec_public.pem", "not an RSA public key"),
        (Algorithm::ES256, "rsa_public.pem", "P-256"),
        (Algorithm::ES256, "rsa_public_pkcs1.pem", "P-256"),
        (Algorithm::ES256, "ec_p384_public.pem", "P-256"),
        (Algorithm::RS256, "rsa1024_public.pem", "1024-bit"),
    ];
    for (alg, file, expected) in cases {
        let msg = config_err(Verifier::new(&pk_config(*alg, file), None));
        assert!(msg.contains(expected), "{alg} {file}: {msg}");
        assert!(msg.contains(file), "message names the file: {msg}");
    }

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("key.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cfg = AuthConfig {
        public_key_file: Some(not_pem),
        ..pk_config(Algorithm::RS256, "x")
    };
    assert!(config_err(Verifier::new(&cfg, None)).contains("not PEM"));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let cfg = AuthConfig {
        public_key_file: Some(garbage),
        ..pk_config(Algorithm::ES256, "x")
    };
    assert!(config_err(Verifier::new(&cfg, None)).contains("P-256"));
}

#[test]
fn private_key_problems_are_clear_config_errors() {
    let check =
        |alg, pem: &[u8], expected: &str| match Issuer::from_private_pem(alg, pem, None, None) {
            Err(e @ AuthError::Config(_)) => assert!(e.to_string().contains(expected), "{e}"),
            other => panic!("expected Config error, got {other:?}"),
        };
    check(
        Algorithm::RS256,
        &key_bytes("ec_private.pem"),
        "not an RSA private key",
    );
    check(Algorithm::ES256, &key_bytes("rsa_private.pem"), "P-256");
    check(
        Algorithm::ES256,
        &key_bytes("rsa_private_pkcs1.pem"),
        "expected a private key",
    );
    check(
        Algorithm::RS256,
        &key_bytes("rsa_public.pem"),
        "expected a private key",
    );
    check(Algorithm::RS256, b"not a key", "not PEM");
    check(
        Algorithm::HS256,
        &key_bytes("rsa_private.pem"),
        "Issuer::hs256",
    );
}

// --- configuration -------------------------------------------------------------

#[test]
fn short_hs_secret_is_a_config_error() {
    let msg = config_err(Verifier::new(&hs_config(), Some(b"short")));
    assert!(msg.contains("5 bytes") && msg.contains("32"), "{msg}");
    assert!(!msg.contains("short"), "the secret is not echoed: {msg}");

    let cfg = AuthConfig {
        secret: Some("x".repeat(31)),
        ..hs_config()
    };
    assert!(config_err(Verifier::new(&cfg, None)).contains("31 bytes"));
    let cfg = AuthConfig {
        secret: Some("x".repeat(32)),
        ..hs_config()
    };
    assert!(Verifier::new(&cfg, None).is_ok());

    // The issuer refuses to mint what the server would refuse to check.
    let err = Issuer::hs256(b"short", None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap_err();
    assert!(matches!(err, AuthError::Config(_)), "{err:?}");
}

#[test]
fn hs_secret_sources() {
    let msg = config_err(Verifier::new(&hs_config(), None));
    assert!(msg.contains("COLLOQUY_JWT_SECRET"), "{msg}");

    // auth.secret is used when no external secret is supplied...
    let own = String::from_utf8(SECRET.to_vec()).unwrap();
    let cfg = AuthConfig {
        secret: Some(own),
        ..hs_config()
    };
    assert!(!cfg.needs_external_secret());
    assert!(hs_config().needs_external_secret());
    let token = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    assert!(Verifier::new(&cfg, None)
        .unwrap()
        .verify_at(&token, NOW)
        .is_ok());
    // ...also when the same one is supplied, but two different ones conflict.
    assert!(Verifier::new(&cfg, Some(SECRET)).is_ok());
    let msg = config_err(Verifier::new(&cfg, Some(OTHER_SECRET)));
    assert!(msg.contains("different"), "{msg}");

    // RS256 ignores an external secret (the binary may always pass one).
    assert!(Verifier::new(&pk_config(Algorithm::RS256, "rsa_public.pem"), Some(SECRET)).is_ok());
}

#[test]
fn inconsistent_config_is_rejected() {
    let cases = [
        (
            AuthConfig {
                public_key_file: Some(key_path("rsa_public.pem")),
                ..hs_config()
            },
            "only used with RS256",
        ),
        (
            AuthConfig {
                algorithm: Algorithm::RS256,
                ..hs_config()
            },
            "needs auth.public_key_file",
        ),
        (
            AuthConfig {
                secret: Some("x".repeat(40)),
                ..pk_config(Algorithm::ES256, "ec_public.pem")
            },
            "only used with HS256",
        ),
        (
            AuthConfig {
                issuer: Some(String::new()),
                ..hs_config()
            },
            "auth.issuer is empty",
        ),
        (
            AuthConfig {
                audience: Some(String::new()),
                ..hs_config()
            },
            "auth.audience is empty",
        ),
        (
            AuthConfig {
                leeway_secs: 3600,
                ..hs_config()
            },
            "leeway",
        ),
    ];
    for (cfg, expected) in cases {
        let msg = config_err(Verifier::new(&cfg, Some(SECRET)));
        assert!(msg.contains(expected), "{msg}");
    }
}

#[test]
fn auth_config_deserializes_with_defaults_and_rejects_unknown_fields() {
    let cfg: AuthConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(cfg, AuthConfig::default());
    assert_eq!((cfg.algorithm, cfg.leeway_secs), (Algorithm::HS256, 30));

    let cfg: AuthConfig = serde_json::from_value(json!({
        "algorithm": "ES256",
        "public_key_file": "/etc/colloquy/jwt.pem",
        "issuer": "https://id.example.com",
        "audience": "colloquy",
        "leeway_secs": 5
    }))
    .unwrap();
    assert_eq!(cfg.algorithm, Algorithm::ES256);
    assert_eq!(
        cfg.public_key_file,
        Some(PathBuf::from("/etc/colloquy/jwt.pem"))
    );
    assert_eq!(cfg.leeway_secs, 5);

    assert!(serde_json::from_value::<AuthConfig>(json!({ "algorithm": "hs256" })).is_err());
    assert!(serde_json::from_value::<AuthConfig>(json!({ "algorithm": "none" })).is_err());
    assert!(serde_json::from_value::<AuthConfig>(json!({ "leeway": 5 })).is_err());
    assert_eq!(
        serde_json::to_value(Algorithm::RS256).unwrap(),
        json!("RS256")
    );
}

// --- iss / aud ---------------------------------------------------------------

#[test]
fn issuer_and_audience_are_enforced_when_configured() {
    let cfg = AuthConfig {
        issuer: Some("https://id.example.com".into()),
        audience: Some("colloquy".into()),
        ..hs_config()
    };
    let v = Verifier::new(&cfg, Some(SECRET)).unwrap();

    let good = Issuer::from_config(&cfg, Some(SECRET))
        .unwrap()
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    assert_eq!(payload_of(&good)["iss"], "https://id.example.com");
    assert_eq!(payload_of(&good)["aud"], "colloquy");
    assert!(v.verify_at(&good, NOW).is_ok());

    let wrong_iss = Issuer::hs256(
        SECRET,
        Some("https://evil.example.com".into()),
        Some("colloquy".into()),
    )
    .issue("alice", Scope::Chat, HOUR, NOW)
    .unwrap();
    let err = v.verify_at(&wrong_iss, NOW).unwrap_err();
    assert_eq!(err, AuthError::BadIssuer);
    assert_eq!(err.code(), "invalid_issuer");

    let wrong_aud = Issuer::hs256(
        SECRET,
        Some("https://id.example.com".into()),
        Some("other-api".into()),
    )
    .issue("alice", Scope::Chat, HOUR, NOW)
    .unwrap();
    let err = v.verify_at(&wrong_aud, NOW).unwrap_err();
    assert_eq!(err, AuthError::BadAudience);
    assert_eq!(err.code(), "invalid_audience");

    let missing = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    assert_eq!(
        v.verify_at(&missing, NOW),
        Err(AuthError::MissingClaim("iss"))
    );
    let only_iss = Issuer::hs256(SECRET, Some("https://id.example.com".into()), None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    assert_eq!(
        v.verify_at(&only_iss, NOW),
        Err(AuthError::MissingClaim("aud"))
    );

    // `aud` may be an array (RFC 7519 §4.1.3).
    let mut c = claims("alice", "chat");
    c["iss"] = json!("https://id.example.com");
    c["aud"] = json!(["other-api", "colloquy"]);
    assert!(v.verify_at(&sign_hs(SECRET, &c), NOW).is_ok());
    c["aud"] = json!(["other-api"]);
    assert_eq!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::BadAudience)
    );
    c["aud"] = json!(42);
    assert!(matches!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::InvalidClaim { claim: "aud", .. })
    ));
}

#[test]
fn issuer_and_audience_are_ignored_when_not_configured() {
    let token = Issuer::hs256(
        SECRET,
        Some("https://anyone.example.com".into()),
        Some("whatever".into()),
    )
    .issue("alice", Scope::Chat, HOUR, NOW)
    .unwrap();
    assert_eq!(
        hs_verifier().verify_at(&token, NOW).unwrap().user_id,
        "alice"
    );

    let mut c = claims("alice", "chat");
    c["aud"] = json!(["a", "b"]);
    c["iss"] = json!(17);
    assert!(hs_verifier().verify_at(&sign_hs(SECRET, &c), NOW).is_ok());
}

// --- sub and scope -----------------------------------------------------------

#[test]
fn scopes_grant_the_right_users() {
    let issuer = Issuer::hs256(SECRET, None, None);
    let v = hs_verifier();

    let chat = v
        .verify_at(&issuer.issue("alice", Scope::Chat, HOUR, NOW).unwrap(), NOW)
        .unwrap();
    assert!(chat.can_act_for("alice"));
    assert!(!chat.can_act_for("bob"));
    assert!(!chat.is_admin());
    let err = chat.authorize_for("bob").unwrap_err();
    assert_eq!((err.status(), err.code()), (403, "forbidden"));

    let admin = v
        .verify_at(&issuer.issue("root", Scope::Admin, HOUR, NOW).unwrap(), NOW)
        .unwrap();
    assert!(admin.is_admin());
    assert_eq!(admin.scopes, vec![Scope::Chat, Scope::Admin]);
    assert!(admin.can_act_for("bob") && admin.can_act_for("root"));
    assert!(admin.authorize_for("bob").is_ok());

    let both = v
        .verify_at(&sign_hs(SECRET, &claims("dave", "chat admin")), NOW)
        .unwrap();
    assert!(both.is_admin() && both.can_act_for("erin"));
}

#[test]
fn unknown_or_missing_scope_makes_the_token_invalid() {
    let v = hs_verifier();
    for scope in ["superuser", "chat superuser", "Admin", "", "   "] {
        let err = v
            .verify_at(&sign_hs(SECRET, &claims("alice", scope)), NOW)
            .unwrap_err();
        assert!(matches!(err, AuthError::BadScope(_)), "{scope:?}: {err:?}");
        assert_eq!((err.status(), err.code()), (401, "invalid_scope"));
    }
    let mut c = claims("alice", "chat");
    c["scope"] = json!(["chat"]);
    assert!(matches!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::BadScope(_))
    ));
    c.as_object_mut().unwrap().remove("scope");
    assert_eq!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::MissingClaim("scope"))
    );
}

#[test]
fn invalid_subjects_are_rejected() {
    let v = hs_verifier();
    let long = "x".repeat(129);
    for sub in [
        "",
        "alice bob",
        "../etc/passwd",
        "alice\n",
        "ålice",
        "a/b",
        long.as_str(),
    ] {
        let err = v
            .verify_at(&sign_hs(SECRET, &claims(sub, "chat")), NOW)
            .unwrap_err();
        assert!(matches!(err, AuthError::BadSubject(_)), "{sub:?}: {err:?}");
        assert_eq!((err.status(), err.code()), (401, "invalid_subject"));
        assert!(err.to_string().contains("1-128"), "{err}");
    }
    assert!(v
        .verify_at(&sign_hs(SECRET, &claims(&"x".repeat(128), "chat")), NOW)
        .is_ok());
    assert!(v
        .verify_at(
            &sign_hs(SECRET, &claims("user@example.com:42_a-b.c", "chat")),
            NOW
        )
        .is_ok());

    let mut c = claims("alice", "chat");
    c["sub"] = json!(42);
    assert!(matches!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::BadSubject(_))
    ));
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        v.verify_at(&sign_hs(SECRET, &c), NOW),
        Err(AuthError::MissingClaim("sub"))
    );

    // The issuer refuses to mint tokens the server would reject.
    let err = Issuer::hs256(SECRET, None, None)
        .issue("alice bob", Scope::Chat, HOUR, NOW)
        .unwrap_err();
    assert!(matches!(err, AuthError::BadSubject(_)));
}

// --- shape and messages --------------------------------------------------------

#[test]
fn malformed_tokens() {
    let v = hs_verifier();
    assert_eq!(v.verify_at("", NOW), Err(AuthError::Missing));
    let good = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let bad = [
        "abc".to_string(),
        "a.b".to_string(),
        format!("{good}.extra"),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"[1,2]"), parts[1], parts[2]),
        format!(" {good}"),
        format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
    ];
    for token in bad {
        let err = v.verify_at(&token, NOW).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{token}: {err:?}");
        assert_eq!((err.status(), err.code()), (401, "invalid_token"));
    }
    // The signature covers the raw text and is checked before the payload
    // is decoded, so a mangled payload is reported as a bad signature.
    let mangled = format!("{}.!!!.{}", parts[0], parts[2]);
    assert_eq!(v.verify_at(&mangled, NOW), Err(AuthError::BadSignature));

    // A validly signed payload that is not a JSON object.
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let input = format!("{header}.{}", b64(b"\"just a string\""));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert!(matches!(
        v.verify_at(&format!("{input}.{sig}"), NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn error_messages_never_contain_the_token_or_the_secret() {
    let v = hs_verifier();
    let secret_text = std::str::from_utf8(SECRET).unwrap();
    let mut tokens = vec![
        Issuer::hs256(OTHER_SECRET, None, None)
            .issue("alice", Scope::Chat, HOUR, NOW)
            .unwrap(),
        Issuer::hs256(SECRET, None, None)
            .issue("alice", Scope::Chat, HOUR, 0)
            .unwrap(),
        sign_hs(SECRET, &claims("bad sub", "chat")),
        sign_hs(
            SECRET,
            &json!({ "sub": "alice", "scope": "chat", "exp": "soon-ish-string-value" }),
        ),
        alg_none_token("none", ""),
        alg_none_token("HS256\u{0}evil", ""),
    ];
    let good = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    tokens.push(good.replacen('.', "..", 1));
    for token in &tokens {
        let err = v.verify_at(token, NOW).unwrap_err();
        let msg = err.to_string();
        for part in token.split('.').filter(|p| p.len() > 4) {
            assert!(!msg.contains(part), "{msg}");
        }
        assert!(
            !msg.contains(secret_text) && !msg.contains("soon-ish"),
            "{msg}"
        );
        assert!(!msg.contains("evil"), "{msg}");
    }
}

// --- issuing -------------------------------------------------------------------

#[test]
fn token_command_contract_issuer_from_config_matches_verifier() {
    // `colloquy token` builds its Issuer from the same config and secret as
    // the server; the server must accept what it prints.
    let cfg = AuthConfig {
        issuer: Some("colloquy".into()),
        audience: Some("colloquy-api".into()),
        ..hs_config()
    };
    // What the binary draws into data/keys/jwt.secret: 32 random bytes.
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(97) ^ 0xa5);
    let issuer = Issuer::from_config(&cfg, Some(&secret)).unwrap();
    let ttl = parse_ttl("7d").unwrap();
    let token = issuer.issue("alice", Scope::Admin, ttl, NOW).unwrap();
    let verifier = Verifier::new(&cfg, Some(&secret)).unwrap();
    let p = verifier.verify_at(&token, NOW + 6 * 86_400).unwrap();
    assert!(p.is_admin());
    assert_eq!(p.expires_at, NOW + 7 * 86_400);
    assert_eq!(
        verifier.verify_at(&token, NOW + 8 * 86_400),
        Err(AuthError::Expired)
    );

    let rs_cfg = pk_config(Algorithm::RS256, "rsa_public.pem");
    assert!(matches!(
        Issuer::from_config(&rs_cfg, None),
        Err(AuthError::Config(_))
    ));
}

#[test]
fn issue_rejects_zero_ttl_and_overflow() {
    let issuer = Issuer::hs256(SECRET, None, None);
    assert!(matches!(
        issuer.issue("alice", Scope::Chat, Duration::ZERO, NOW),
        Err(AuthError::BadTtl(_))
    ));
    assert!(matches!(
        issuer.issue("alice", Scope::Chat, Duration::from_millis(500), NOW),
        Err(AuthError::BadTtl(_))
    ));
    assert!(matches!(
        issuer.issue("alice", Scope::Chat, HOUR, u64::MAX - 10),
        Err(AuthError::BadTtl(_))
    ));
}

#[test]
fn parse_ttl_cases() {
    assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
    assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
    for bad in ["", "1", "1x", "h", "0m", "1.5h", "-1h", "1y", "999d"] {
        assert!(
            matches!(parse_ttl(bad), Err(AuthError::BadTtl(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn scope_names_parse_for_the_cli() {
    assert_eq!("chat".parse::<Scope>(), Ok(Scope::Chat));
    assert_eq!("admin".parse::<Scope>(), Ok(Scope::Admin));
    assert!(matches!(
        "root".parse::<Scope>(),
        Err(AuthError::BadScope(_))
    ));
    assert_eq!(Scope::Admin.to_string(), "admin");
}

#[test]
fn verifier_is_cheap_to_share_across_tasks() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<Verifier>();

    let v = hs_verifier();
    let token = Issuer::hs256(SECRET, None, None)
        .issue("alice", Scope::Chat, HOUR, NOW)
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            std::thread::spawn(move || v.verify_at(&token, NOW).map(|p| p.user_id))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok("alice".to_string()));
    }
    // Debug output shows settings, not key material.
    let dbg = format!("{v:?}");
    assert!(
        dbg.contains("HS256") && !dbg.contains(std::str::from_utf8(SECRET).unwrap()),
        "{dbg}"
    );
}
