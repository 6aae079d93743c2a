//! `GET /api/v1/openapi.json`: docs/openapi.yaml, compiled into the binary and converted to
//! JSON once, on first use. The YAML is the source; `tests/openapi.rs` keeps it true to the
//! running API.

use std::sync::LazyLock;

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use bytes::Bytes;

/// The OpenAPI 3.1 document as written.
pub const YAML: &str = include_str!("../../../../docs/openapi.yaml");

#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenApiError {
    #[error("docs/openapi.yaml is not valid YAML: {0}")]
    Yaml(String),
    #[error("docs/openapi.yaml does not convert to JSON: {0}")]
    Json(String),
}

static JSON: LazyLock<Result<Bytes, OpenApiError>> = LazyLock::new(|| {
    let value: serde_json::Value =
        serde_yaml::from_str(YAML).map_err(|e| OpenApiError::Yaml(e.to_string()))?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| OpenApiError::Json(e.to_string()))
});

/// The document as JSON bytes.
pub fn json() -> Result<Bytes, OpenApiError> {
    JSON.clone()
}

pub async fn document() -> Response {
    match json() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot serve the OpenAPI document");
            super::ReportError::Internal(error.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_converts_to_an_openapi_3_1_document() {
        let value: serde_json::Value = serde_json::from_slice(&json().unwrap()).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
        assert!(value["paths"]["/api/v1/attribution"]["get"].is_object());
        // YAML anchors are resolved: devices shares the parameters of countries.
        assert_eq!(
            value["paths"]["/api/v1/devices"]["get"]["parameters"],
            value["paths"]["/api/v1/countries"]["get"]["parameters"]
        );
    }
}
