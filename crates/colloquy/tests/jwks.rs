//! End-to-end: `colloquy serve` and `colloquy check` with RS256 keys from a
//! JWKS that a tiny identity provider in this test serves on 127.0.0.1.

mod server;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde_json::json;
use server::{b64, closed_with, now, open_ws, root, Server};

/// The gateway's test key (RSA 2048), so no key is generated here.
fn private_key() -> rsa::RsaPrivateKey {
    let pem = std::fs::read_to_string(
        root().join("crates/colloquy-gateway/tests/keys/rsa_private_pkcs1.pem"),
    )
    .unwrap();
    rsa::RsaPrivateKey::from_pkcs1_pem(&pem).unwrap()
}

fn jwks(kid: &str) -> String {
    let key = private_key().to_public_key();
    json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
    }]})
    .to_string()
}

fn rs256(kid: &str, user: &str) -> String {
    let der = private_key().to_pkcs1_der().unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = json!({"sub": user, "scope": "chat", "iat": now(), "exp": now() + 600});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(der.as_bytes())).unwrap()
}

/// Answers every request with what `body` holds as JSON, one connection
/// at a time, on a thread of its own for the rest of the test: the test
/// rotates keys by changing `body`.
fn identity_provider(body: String) -> (String, Arc<Mutex<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(body));
    let served = Arc::clone(&body);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = served.lock().unwrap().clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, body)
}

fn config(dir: &Path, auth: &str) -> std::path::PathBuf {
    let path = dir.join("colloquy.toml");
    std::fs::write(&path, format!("[auth]\nalgorithm = \"RS256\"\n{auth}\n")).unwrap();
    path
}

fn check(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .current_dir(root())
        .arg("check")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_reads_the_jwks_a_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = identity_provider(jwks("k1"));
    let good = config(dir.path(), &format!("jwks_url = \"{url}\""));
    let out = check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 usable keys in the JWKS"), "{stdout}");

    let file = dir.path().join("jwks.json");
    std::fs::write(&file, "{}").unwrap();
    let bad = config(dir.path(), &format!("jwks_file = \"{}\"", file.display()));
    let out = check(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "auth.jwks_file {} is not a JWK Set",
            file.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_accepts_tokens_of_the_jwks_and_refuses_unknown_kids() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = identity_provider(jwks("k1"));
    let cfg = config(dir.path(), &format!("jwks_url = \"{url}\""));
    let data = dir.path().join("data");
    let cfg = cfg.to_str().unwrap();
    let mut server = Server::start_with(&data, &[], &["--config", cfg]);
    let c = reqwest::Client::new();
    let post = |token: String| {
        c.post(server.url("/v1/conversations/alice/messages"))
            .bearer_auth(token)
            .json(&json!({"text": "你好"}))
            .send()
    };

    let r = post(rs256("k1", "alice")).await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    let r = post(rs256("k2", "alice")).await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_kid", "{body}");

    let metrics = server::metrics(&c, &server.url("")).await;
    assert!(metrics.contains("colloquy_jwks_keys 1"), "{metrics}");
    assert!(
        metrics.contains("colloquy_jwks_refresh_total{outcome=\"ok\"} 1"),
        "the unknown kid made one refresh: {metrics}"
    );
    server.kill();
}

/// A session outlived the key that signed its token: once a refresh drops
/// the key from the set, the next message, or the next ping of a session
/// that only listens, closes it with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_ends_when_its_key_leaves_the_set() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let (url, served) = identity_provider(jwks("k1"));
    let cfg = config(
        dir.path(),
        &format!("jwks_url = \"{url}\"\njwks_refresh = \"1s\""),
    );
    let data = dir.path().join("data");
    let mut server = Server::start_with(
        &data,
        &[("COLLOQUY_LIMITS_WS_PING_INTERVAL", "1s")],
        &["--config", cfg.to_str().unwrap()],
    );
    let token = rs256("k1", "alice");
    let mut talking = open_ws(&server, &token).await.unwrap();
    let mut listening = open_ws(&server, &token).await.unwrap();
    let hello = Message::text(r#"{"type":"message","text":"你好"}"#);
    talking.send(hello.clone()).await.unwrap();
    let within = std::time::Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout(within, talking.next()).await.unwrap();
        let frame = frame.unwrap().unwrap().into_text().unwrap();
        assert!(!frame.contains(r#""type":"error""#), "{frame}");
        if frame.contains(r#""type":"accepted""#) {
            break;
        }
    }

    // The provider rotates: the key is now published as k2 only.
    *served.lock().unwrap() = jwks("k2");
    let c = reqwest::Client::new();
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = c
            .post(server.url("/v1/conversations/alice/messages"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"text": "你好"}))
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never dropped k1"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    talking.send(hello).await.unwrap();
    let expected = (1008, "token no longer valid".to_string());
    assert_eq!(closed_with(&mut talking, within).await, expected);
    assert_eq!(closed_with(&mut listening, within).await, expected);
    server.kill();
}
