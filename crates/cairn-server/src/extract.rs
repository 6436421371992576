//! Extractors that reject bad input with Cairn's error shape (400 naming the field) instead of
//! axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use cairn_core::Error;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; unknown fields and wrong types are a 400 that names the field.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(ApiError(json_rejection(rejection))),
        }
    }
}

fn json_rejection(r: JsonRejection) -> Error {
    match r {
        JsonRejection::JsonDataError(e) => {
            Error::invalid(format!("invalid request body: {}", strip(&e.body_text())))
        }
        JsonRejection::JsonSyntaxError(e) => {
            Error::invalid(format!("request body is not valid JSON: {}", strip(&e.body_text())))
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::invalid("expected a JSON body with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Error::TooLarge("request body is too large".into())
        }
        other => Error::invalid(other.body_text()),
    }
}

fn strip(text: &str) -> String {
    text.trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        .trim_start_matches("Failed to parse the request body as JSON: ")
        .to_string()
}

/// Query parameters; unknown or mistyped parameters are a 400 that names them.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError(Error::invalid(format!(
                "invalid query parameters: {}",
                e.body_text().trim_start_matches("Failed to deserialize query string: ")
            )))),
            Err(other) => Err(ApiError(Error::invalid(other.body_text()))),
        }
    }
}
