//! PEM keys for RS256 and ES256 (and the verifying keys a JWKS's keys
//! become, in [`super::jwks`]), parsed with the RustCrypto crates
//! jsonwebtoken already uses, so a wrong or damaged key is refused with a
//! precise message when it is loaded, not on the first request.

use std::path::Path;

use jsonwebtoken::{DecodingKey, EncodingKey};

use super::config::{Algorithm, MIN_RSA_BITS};
use super::error::AuthError;

/// The label of the first PEM block (`-----BEGIN <label>-----`).
fn pem_label(text: &str) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let start = text.find(BEGIN)? + BEGIN.len();
    let rest = &text[start..];
    Some(&rest[..rest.find("-----")?])
}

fn pem_text(pem: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(pem).map_err(|_| "is not PEM text (not UTF-8)".to_string())
}

fn describe_label(label: &str) -> String {
    if label.len() <= 40 && label.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
        format!("a {label} block")
    } else {
        "an unrecognised PEM block".into()
    }
}

pub(super) fn load_public_key(alg: Algorithm, path: &Path) -> Result<DecodingKey, AuthError> {
    let pem = std::fs::read(path).map_err(|e| {
        AuthError::Config(format!(
            "cannot read auth.public_key_file {}: {e}",
            path.display()
        ))
    })?;
    decoding_key_from_pem(alg, &pem)
        .map_err(|msg| AuthError::Config(format!("auth.public_key_file {} {msg}", path.display())))
}

/// Parses a PEM public key for `alg`. Errors are phrased to follow the
/// file name ("<path> is not …").
fn decoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;

    let text = pem_text(pem)?;
    let label = pem_label(text).ok_or("is not PEM (no -----BEGIN line)")?;
    match (alg, label) {
        (Algorithm::RS256, "PUBLIC KEY" | "RSA PUBLIC KEY") => {
            let key = if label == "PUBLIC KEY" {
                rsa::RsaPublicKey::from_public_key_pem(text)
                    .map_err(|_| "is not an RSA public key (RS256 is configured)".to_string())?
            } else {
                rsa::RsaPublicKey::from_pkcs1_pem(text)
                    .map_err(|_| "is not a valid PKCS#1 RSA public key".to_string())?
            };
            rsa_decoding_key(&key)
        }
        (Algorithm::ES256, "PUBLIC KEY") => {
            let key = p256::PublicKey::from_public_key_pem(text).map_err(|_| {
                "is not a P-256 (prime256v1) EC public key (ES256 is configured)".to_string()
            })?;
            Ok(ec_decoding_key(&key))
        }
        (_, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY") => {
            // Refuse instead of deriving the public half: the server must
            // not hold the signing key.
            Err("contains a private key; configure the public key instead \
                 (openssl pkey -in private.pem -pubout -out public.pem)"
                .into())
        }
        (_, "CERTIFICATE") => Err("is a certificate; extract its public key with \
             openssl x509 -in cert.pem -pubkey -noout"
            .into()),
        (Algorithm::ES256, "RSA PUBLIC KEY") => {
            Err("is an RSA key, but ES256 needs a P-256 EC public key".into())
        }
        _ => Err(format!(
            "contains {}; expected a PUBLIC KEY block for {alg}",
            describe_label(label)
        )),
    }
}

/// jsonwebtoken's verifying key for an RSA public key from a PEM file or
/// a JWKS, refused below [`MIN_RSA_BITS`].
pub(super) fn rsa_decoding_key(key: &rsa::RsaPublicKey) -> Result<DecodingKey, String> {
    use rsa::pkcs1::EncodeRsaPublicKey;

    check_rsa_bits(rsa::traits::PublicKeyParts::size(key))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|_| "cannot be re-encoded".to_string())?;
    Ok(DecodingKey::from_rsa_der(der.as_bytes()))
}

/// jsonwebtoken's verifying key for a P-256 public key: its RustCrypto
/// backend takes the uncompressed SEC1 point where it says DER.
pub(super) fn ec_decoding_key(key: &p256::PublicKey) -> DecodingKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    DecodingKey::from_ec_der(key.to_encoded_point(false).as_bytes())
}

fn check_rsa_bits(size_bytes: usize) -> Result<(), String> {
    let bits = size_bytes * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    Ok(())
}

/// Parses a PEM private key for `alg` into jsonwebtoken's DER encoding.
pub(super) fn encoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey, String> {
    use p256::pkcs8::EncodePrivateKey;
    use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
    use rsa::pkcs8::DecodePrivateKey;

    let text = pem_text(pem)?;
    let label = pem_label(text).ok_or("is not PEM (no -----BEGIN line)")?;
    match (alg, label) {
        (Algorithm::RS256, "PRIVATE KEY" | "RSA PRIVATE KEY") => {
            let key = if label == "PRIVATE KEY" {
                rsa::RsaPrivateKey::from_pkcs8_pem(text)
                    .map_err(|_| "is not an RSA private key (RS256 requested)".to_string())?
            } else {
                rsa::RsaPrivateKey::from_pkcs1_pem(text)
                    .map_err(|_| "is not a valid PKCS#1 RSA private key".to_string())?
            };
            check_rsa_bits(rsa::traits::PublicKeyParts::size(&key))?;
            // jsonwebtoken's RustCrypto signer expects PKCS#1 DER.
            let der = key
                .to_pkcs1_der()
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(EncodingKey::from_rsa_der(der.as_bytes()))
        }
        (Algorithm::ES256, "PRIVATE KEY" | "EC PRIVATE KEY") => {
            let key = if label == "PRIVATE KEY" {
                p256::SecretKey::from_pkcs8_pem(text).ok()
            } else {
                p256::SecretKey::from_sec1_pem(text).ok()
            }
            .ok_or("is not a P-256 (prime256v1) EC private key (ES256 requested)")?;
            // jsonwebtoken's RustCrypto signer expects PKCS#8 DER.
            let der = key
                .to_pkcs8_der()
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(EncodingKey::from_ec_der(der.as_bytes()))
        }
        (_, "ENCRYPTED PRIVATE KEY") => {
            Err("is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem)".into())
        }
        _ => Err(format!(
            "contains {}; expected a private key for {alg}",
            describe_label(label)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_label_extraction() {
        assert_eq!(
            pem_label("junk\n-----BEGIN PUBLIC KEY-----\nAAA\n"),
            Some("PUBLIC KEY")
        );
        assert_eq!(pem_label("no pem here"), None);
        assert_eq!(pem_label("-----BEGIN PUBLIC KEY"), None);
    }
}
