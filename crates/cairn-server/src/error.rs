//! Turns [`cairn_core::Error`] into an HTTP response of one shape:
//! `{"error": {"code": "…", "message": "…"}}`, with the status that matches the error.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::api::{ErrorBody, ErrorDetail};
use cairn_core::Error;

/// The error type of every handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        match &self.0 {
            Error::Internal(m) => tracing::error!(error = %m, "internal error"),
            Error::Unavailable(m) | Error::StorageFull(m) => {
                tracing::warn!(error = %m, "request failed")
            }
            _ => {}
        }
        let body =
            ErrorBody { error: ErrorDetail { code: self.0.code().to_string(), message: self.0.to_string() } };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
