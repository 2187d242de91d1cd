//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API, kept
//! in the repository (`docs/openapi.json`) and built into the binary.
//! `tests/it/openapi.rs` checks it against the routes the server has.

use actix_web::{http::header, HttpResponse};

/// The document, as written in `docs/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// Serves [`DOCUMENT`]; it needs no token.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        // It changes only with the binary.
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_of_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
