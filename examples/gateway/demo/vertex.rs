//! Claude on Vertex AI: the model in the URL, Vertex's request rules. The events are
//! Anthropic's (`anthropic.rs`), with Vertex's `msg_vrtx_`/`toolu_vrtx_` ids.
//!
//! The 400s for a body with `model` or without `anthropic_version` are Anthropic-shaped, as
//! the Anthropic backend validates the body Vertex passes on; their exact wording is the
//! demo's (no recording of either was found). Credentials and unknown models are refused by
//! Google's front end, in Google's error format.

use http::{HeaderMap, Response};
use serde_json::{json, Value};

use super::body::DemoBody;
use super::{anthropic, json_response, with_status, Refused, Route, Wire};

/// The `anthropic_version` values current SDKs put in the body: anthropic-python before 2.0
/// and the Vertex docs (`vertex-2023-10-16`), anthropic-python 2.x and @anthropic-ai/vertex-sdk
/// (`2026-10-21`).
pub const ANTHROPIC_VERSIONS: [&str; 2] = ["vertex-2023-10-16", "2026-10-21"];

/// `/v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:{method}`.
pub fn route(path: &str) -> Result<Route, Refused> {
    let segments: Vec<&str> = path.split('/').collect();
    let model = match segments.as_slice() {
        ["", "v1", "projects", project, "locations", region, "publishers", "anthropic", "models", last]
            if !project.is_empty() && !region.is_empty() =>
        {
            match last.rsplit_once(':') {
                Some((model, "streamRawPredict" | "rawPredict")) if !model.is_empty() => model,
                _ => return Err(Box::new(not_found(path))),
            }
        }
        _ => return Err(Box::new(not_found(path))),
    };
    Ok(Route {
        wire: Wire::Vertex,
        model: Some(model.to_owned()),
        stream: None,
    })
}

/// Vertex's front end wants an OAuth token; the body it passes on has no `model` and says
/// which `anthropic_version` it speaks.
pub fn refuse(headers: &HeaderMap, body: &Value) -> Option<Response<DemoBody>> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty());
    if !bearer {
        return Some(google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "UNAUTHENTICATED",
        ));
    }
    if body.get("model").is_some() {
        return Some(anthropic::error(
            400,
            None,
            "model: Extra inputs are not permitted",
        ));
    }
    match body.get("anthropic_version").and_then(Value::as_str) {
        None => Some(anthropic::error(
            400,
            None,
            "anthropic_version: Field required",
        )),
        Some(v) if !ANTHROPIC_VERSIONS.contains(&v) => Some(anthropic::error(
            400,
            None,
            &format!(
                "anthropic_version: `{v}` is not supported on Vertex AI (use {})",
                ANTHROPIC_VERSIONS.join(" or ")
            ),
        )),
        Some(_) => None,
    }
}

pub fn not_found(path: &str) -> Response<DemoBody> {
    let resource = path
        .strip_prefix("/v1/")
        .and_then(|p| p.rsplit_once(':').map(|(r, _)| r))
        .unwrap_or(path);
    google_error(
        404,
        &format!("Publisher Model `{resource}` not found."),
        "NOT_FOUND",
    )
}

fn google_error(code: u16, message: &str, status: &str) -> Response<DemoBody> {
    with_status(
        json_response(json!({"error":{"code":code,"message":message,"status":status}})),
        code,
    )
}
