//! A JWK Set (RFC 7517 §5) read into the verifying keys of the configured
//! algorithm, and the choice of one of them by a token's `kid`.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::super::config::Algorithm;
use super::super::error::{shown, AuthError};
use super::super::keys::{ec_decoding_key, rsa_decoding_key};

/// One usable key of the set.
pub(in crate::auth) struct Jwk {
    pub(in crate::auth) kid: Option<String>,
    pub(in crate::auth) key: DecodingKey,
    /// The public key's encoding (PKCS#1 for RSA, the SEC1 point for EC):
    /// with `kid`, what tells whether a later set still holds this key.
    material: Vec<u8>,
}

impl Jwk {
    fn same_as(&self, other: &Jwk) -> bool {
        self.kid == other.kid && self.material == other.material
    }
}

/// The keys of one JWKS that can verify tokens of the configured algorithm.
pub(in crate::auth) struct KeySet {
    keys: Vec<Arc<Jwk>>,
    /// Index into `keys` by `kid`.
    by_kid: HashMap<String, usize>,
    /// Keys the set holds but this server does not use, by `kid`, with why:
    /// a token naming one gets that reason instead of "unknown".
    skipped: HashMap<String, String>,
}

impl KeySet {
    /// Reads a JWKS document. Keys this server cannot use for `alg` are
    /// skipped (and reported in [`KeySet::skipped`]); a document that is
    /// not a JWKS, or leaves no usable key, is an error naming why.
    pub(in crate::auth) fn parse(alg: Algorithm, bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("is not JSON (line {}, column {})", e.line(), e.column()))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err("is not a JWK Set: no \"keys\" array".into());
        };
        let mut keys: Vec<Arc<Jwk>> = Vec::new();
        let mut skipped: HashMap<String, String> = HashMap::new();
        let mut unnamed_skips: Vec<String> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(jwk) = entry else {
                unnamed_skips.push(format!("keys[{i}] is not an object"));
                continue;
            };
            let kid = match jwk.get("kid") {
                None => None,
                Some(Value::String(kid)) => Some(kid.clone()),
                Some(_) => {
                    unnamed_skips.push(format!("keys[{i}]: kid is not a string"));
                    continue;
                }
            };
            match read_key(alg, jwk) {
                Ok(Some((key, material))) => keys.push(Arc::new(Jwk { kid, key, material })),
                // Keys for other uses (encryption) are expected in a shared
                // set and are nobody's mistake.
                Ok(None) => {}
                Err(why) => match kid {
                    Some(kid) => {
                        skipped.insert(kid, why);
                    }
                    None => unnamed_skips.push(format!("keys[{i}] {why}")),
                },
            }
        }

        // A kid must name one key: of two keys with the same kid, a
        // token could be checked against either, so neither is used.
        let mut count: HashMap<&str, usize> = HashMap::new();
        for kid in keys.iter().filter_map(|k| k.kid.as_deref()) {
            *count.entry(kid).or_default() += 1;
        }
        let duplicated: Vec<String> = count
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(kid, _)| kid.to_string())
            .collect();
        keys.retain(|k| k.kid.as_ref().is_none_or(|kid| !duplicated.contains(kid)));
        for kid in duplicated {
            skipped.insert(kid, "appears more than once in the key set".into());
        }

        if keys.is_empty() {
            let mut why: Vec<String> = skipped
                .iter()
                .map(|(kid, why)| format!("key {} {why}", shown(kid)))
                .collect();
            why.sort();
            why.extend(unnamed_skips);
            return Err(if why.is_empty() {
                format!("holds no key for {alg}")
            } else {
                format!("holds no usable key for {alg}: {}", why.join("; "))
            });
        }
        let by_kid = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k.kid.clone()?, i)))
            .collect();
        Ok(KeySet {
            keys,
            by_kid,
            skipped,
        })
    }

    /// The key for a token whose header names `kid` (or none). A token
    /// without `kid` is accepted only when the set holds exactly one usable
    /// key: guessing among several would try keys a token never named.
    /// [`AuthError::UnknownKeyId`] alone may change with a refresh (the
    /// issuer may have rotated its keys since the set was read).
    pub(in crate::auth) fn select(&self, kid: Option<&str>) -> Result<&Arc<Jwk>, AuthError> {
        match kid {
            Some(kid) => {
                if let Some(&i) = self.by_kid.get(kid) {
                    return Ok(&self.keys[i]);
                }
                match self.skipped.get(kid) {
                    Some(why) => Err(AuthError::UnusableKey {
                        kid: shown(kid),
                        reason: why.clone(),
                    }),
                    None => Err(AuthError::UnknownKeyId(shown(kid))),
                }
            }
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                keys => Err(AuthError::MissingKeyId(keys.len())),
            },
        }
    }

    /// Does this set hold `key` (same `kid`, same public key)?
    pub(in crate::auth) fn holds(&self, key: &Jwk) -> bool {
        self.keys.iter().any(|k| k.same_as(key))
    }

    /// Same usable keys, same skipped ones: nothing a token would notice.
    pub(in crate::auth) fn same_as(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && other.keys.iter().all(|k| self.holds(k))
            && self.skipped == other.skipped
    }

    pub(in crate::auth) fn len(&self) -> usize {
        self.keys.len()
    }

    /// `kid`s of the usable keys, for logs.
    pub(in crate::auth) fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.kid.as_deref().map_or("(no kid)".into(), shown))
            .collect();
        kids.sort();
        kids
    }

    /// Keys skipped, with why, for the log of a set that changed.
    pub(in crate::auth) fn skipped(&self) -> Vec<String> {
        let mut why: Vec<String> = self
            .skipped
            .iter()
            .map(|(kid, why)| format!("{} {why}", shown(kid)))
            .collect();
        why.sort();
        why
    }
}

/// One key of the set as a verifying key for `alg` with its encoding;
/// `Ok(None)` for a key that is not for signatures (RFC 7517 §4.2: `use`
/// other than `sig`); `Err` with why for a signing key this server cannot
/// use. Phrased to follow "key \"kid\"".
fn read_key(
    alg: Algorithm,
    jwk: &Map<String, Value>,
) -> Result<Option<(DecodingKey, Vec<u8>)>, String> {
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Ok(None),
    }
    let kty = text(jwk, "kty")?.ok_or("has no kty")?;
    if let Some(key_alg) = text(jwk, "alg")? {
        if key_alg != alg.as_str() {
            return Err(format!(
                "is for {}, but this server accepts {alg}",
                shown(key_alg)
            ));
        }
    }
    // The server must not hold signing keys, as with PEM files.
    if jwk.contains_key("d") {
        return Err("holds a private key (d); publish only public keys".into());
    }
    match (alg, kty) {
        (Algorithm::RS256, "RSA") => {
            let n = rsa::BigUint::from_bytes_be(&bytes(jwk, "n")?);
            let e = rsa::BigUint::from_bytes_be(&bytes(jwk, "e")?);
            let key = rsa::RsaPublicKey::new(n, e)
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            let decoding = rsa_decoding_key(&key)?;
            let der = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&key)
                .map_err(|_| "cannot be re-encoded".to_string())?;
            Ok(Some((decoding, der.as_bytes().to_vec())))
        }
        (Algorithm::ES256, "EC") => {
            let crv = text(jwk, "crv")?.ok_or("has no crv")?;
            if crv != "P-256" {
                return Err(format!("is on curve {}; ES256 needs P-256", shown(crv)));
            }
            let (x, y) = (bytes(jwk, "x")?, bytes(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("has x or y of the wrong length for P-256".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|_| "is not a point on P-256".to_string())?;
            Ok(Some((ec_decoding_key(&key), point)))
        }
        (_, kty) => Err(format!(
            "is of key type {}, which {alg} does not use",
            shown(kty)
        )),
    }
}

fn text<'a>(jwk: &'a Map<String, Value>, member: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("has a {member} that is not a string")),
    }
}

fn bytes(jwk: &Map<String, Value>, member: &str) -> Result<Vec<u8>, String> {
    let value = text(jwk, member)?.ok_or_else(|| format!("has no {member}"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("has a {member} that is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A P-256 point (the generator), valid without generating a key.
    const GX: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const GY: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    fn ec(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": GX, "y": GY, "kid": kid})
    }

    fn parse(doc: Value) -> Result<KeySet, String> {
        KeySet::parse(Algorithm::ES256, doc.to_string().as_bytes())
    }

    fn refused(set: &KeySet, kid: Option<&str>) -> AuthError {
        match set.select(kid) {
            Err(e) => e,
            Ok(_) => panic!("selected"),
        }
    }

    #[test]
    fn keys_are_chosen_by_kid_and_unknown_kids_are_told_apart() {
        let set = parse(json!({"keys": [ec("a"), ec("b")]})).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.select(Some("b")).ok().unwrap().kid.as_deref(),
            Some("b")
        );
        assert_eq!(
            refused(&set, Some("c")),
            AuthError::UnknownKeyId("\"c\"".into())
        );
        assert_eq!(refused(&set, None), AuthError::MissingKeyId(2));
        let one = parse(json!({"keys": [ec("a")]})).unwrap();
        assert!(one.select(None).is_ok(), "one key: no kid needed");
    }

    #[test]
    fn keys_for_other_uses_algorithms_or_curves_are_skipped_with_why() {
        let mut enc = ec("enc");
        enc["use"] = json!("enc");
        let mut rs = ec("rs");
        rs["alg"] = json!("RS256");
        let mut p384 = ec("p384");
        p384["crv"] = json!("P-384");
        let mut private = ec("private");
        private["d"] = json!("AAAA");
        let set = parse(json!({"keys": [ec("ok"), enc, rs, p384, private]})).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            refused(&set, Some("enc")).code(),
            "unknown_kid",
            "enc keys are ignored"
        );
        for (kid, says) in [
            ("rs", "is for \"RS256\""),
            ("p384", "P-256"),
            ("private", "private key"),
        ] {
            let err = refused(&set, Some(kid));
            assert_eq!(err.code(), "unusable_key");
            assert!(err.to_string().contains(says), "{err}");
        }
        assert!(set.select(None).is_ok(), "one usable key");
    }

    #[test]
    fn a_kid_given_twice_names_no_key() {
        let set = parse(json!({"keys": [ec("a"), ec("twice"), ec("twice")]})).unwrap();
        let err = refused(&set, Some("twice"));
        assert!(err.to_string().contains("more than once"), "{err}");
        assert!(set.select(Some("a")).is_ok());
    }

    #[test]
    fn documents_that_leave_no_usable_key_say_why() {
        for (doc, says) in [
            (&b"not json"[..], "is not JSON"),
            (br#"{"kty":"EC"}"#, "no \"keys\" array"),
            (br#"{"keys":[]}"#, "holds no key for ES256"),
        ] {
            let err = KeySet::parse(Algorithm::ES256, doc).err().unwrap();
            assert!(err.contains(says), "{err}");
        }
        let mut bad_point = ec("bad");
        bad_point["y"] = json!(GX);
        let err = parse(json!({"keys": [bad_point, {"kty": "RSA"}]}))
            .err()
            .unwrap();
        assert!(
            err.contains("holds no usable key for ES256")
                && err.contains("key \"bad\" is not a point on P-256")
                && err.contains("keys[1] is of key type \"RSA\""),
            "{err}"
        );
    }

    #[test]
    fn sets_compare_by_their_keys() {
        let ab = parse(json!({"keys": [ec("a"), ec("b")]})).unwrap();
        let ba = parse(json!({"keys": [ec("b"), ec("a")]})).unwrap();
        let a = parse(json!({"keys": [ec("a")]})).unwrap();
        assert!(ab.same_as(&ba));
        assert!(!ab.same_as(&a) && !a.same_as(&ab));
        assert!(ab.holds(a.select(Some("a")).ok().unwrap()));
        assert!(!a.holds(ab.select(Some("b")).ok().unwrap()));
    }
}
