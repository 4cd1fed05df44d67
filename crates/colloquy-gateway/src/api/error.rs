//! API errors and their one JSON shape, `{"error":{"code","message"}}`,
//! used as an HTTP body and, tagged `"type":"error"`, as a WebSocket frame.

use crate::auth::AuthError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An API error: status, stable code, message. Internals are never leaked.
/// Cloned when one failed publish answers its concurrent duplicates too.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// More for a program to read, beside `code` and `message` (e.g. every
    /// error of a bot that does not compile).
    details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    pub(super) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Tells the client when to try again (`Retry-After`, seconds).
    pub(super) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn object(&self) -> Value {
        let mut o = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            o["details"] = d.clone();
        }
        o
    }

    /// The error as a WebSocket frame, where there is no status to carry it.
    pub(super) fn frame(&self) -> Value {
        json!({"type": "error", "error": self.object()})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.object()}))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut err = ApiError::new(status, e.code(), e.to_string());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "authentication is misconfigured");
            err.message = "internal error".into();
        }
        err
    }
}

/// A failure of the bus or the store: logged here, and shown to the
/// client only as "retry later".
pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the service cannot handle this now; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[tokio::test]
    async fn body_frame_and_retry_after_share_one_shape() {
        let e =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "later").retry_after(1);
        assert_eq!(
            e.frame(),
            json!({"type": "error", "error": {"code": "overloaded", "message": "later"}})
        );
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let body: Value =
            serde_json::from_slice(&to_bytes(r.into_body(), 1024).await.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "overloaded", "message": "later"}})
        );
    }

    #[test]
    fn misconfigured_auth_is_not_explained_to_the_client() {
        let e = ApiError::from(AuthError::Config("secret file /x unreadable".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "internal error");
        let e = ApiError::from(AuthError::Expired);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNAUTHORIZED, "token_expired")
        );
    }
}
