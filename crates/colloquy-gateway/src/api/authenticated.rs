//! Who is calling, and whether they may act for the user a route names.

use super::error::ApiError;
use super::Gateway;
use crate::auth::{AuthError, Principal};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use colloquy_core::check_user_id;
use std::sync::Arc;

/// The caller of a route with a `{user}` segment: authenticated by the
/// bearer token and allowed to act for that user. Checks run in the order
/// clients rely on: token (401), then user id (400), then rights (403).
pub struct Authenticated {
    pub principal: Principal,
    /// The `{user}` of the path.
    pub user: String,
}

impl FromRequestParts<Arc<Gateway>> for Authenticated {
    /// A bad path keeps axum's own answer; everything else is an
    /// [`ApiError`].
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        let Path(user) = Path::<String>::from_request_parts(parts, gw)
            .await
            .map_err(IntoResponse::into_response)?;
        let check = async {
            let principal = gw.verifier.authenticate(bearer(&parts.headers)?).await?;
            permit(&principal, &user)?;
            Ok::<_, ApiError>(principal)
        };
        let principal = check.await.map_err(IntoResponse::into_response)?;
        Ok(Authenticated { principal, user })
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 7235 §2.1). Only an absent header is `Missing`: a header that is
/// there but names no token is malformed.
pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let h = h
        .to_str()
        .map_err(|_| AuthError::Malformed("Authorization header is not ASCII".into()))?;
    match h.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Malformed(
            "expected `Authorization: Bearer <token>`".into(),
        )),
    }
}

/// May `principal` act for `user`? A user id no store would accept is a
/// bad request whoever asks.
pub(super) fn permit(principal: &Principal, user: &str) -> Result<(), ApiError> {
    check_user_id(user).map_err(|e| ApiError::bad("invalid_user", e))?;
    if !principal.can_act_for(user) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not act for that user",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use axum::http::HeaderValue;

    fn bearer_of(value: Option<&[u8]>) -> Result<String, AuthError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        bearer(&headers).map(str::to_string)
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(
            bearer_of(Some(b"Bearer abc.def.ghi")),
            Ok("abc.def.ghi".into())
        );
        assert_eq!(
            bearer_of(Some(b"bearer  abc.def.ghi ")),
            Ok("abc.def.ghi".into())
        );
        assert_eq!(bearer_of(None), Err(AuthError::Missing));
        for malformed in [
            &b""[..],
            b"Bearer",
            b"Bearer   ",
            b"Basic dXNlcjpwYXNz",
            b"Bearerabc",
            b"Bearer \xff",
        ] {
            assert!(
                matches!(bearer_of(Some(malformed)), Err(AuthError::Malformed(_))),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn permit_checks_the_user_id_before_the_rights() {
        let alice = Principal {
            user_id: "alice".into(),
            scopes: vec![Scope::Chat],
            expires_at: 0,
            token_id: 0,
        };
        assert!(permit(&alice, "alice").is_ok());
        let e = permit(&alice, "bob").unwrap_err();
        assert_eq!(e.frame()["error"]["code"], "forbidden");
        let e = permit(&alice, "a/b").unwrap_err();
        assert_eq!(e.frame()["error"]["code"], "invalid_user");
    }
}
