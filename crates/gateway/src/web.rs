//! The web app: static files under `web/`, embedded in the binary at build time (read from the
//! source tree in debug builds), so a node needs no other files and no internet to serve it.
//! There is no build step: the app is plain ES modules, HTML and CSS.
//!
//! Files are sent with an `ETag` (their SHA-256) and `Cache-Control: no-cache`, so a browser
//! revalidates and gets a new version as soon as the node has one; the app's service worker
//! keeps its own copy for offline use.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use runtime::Actor;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// Only this origin, no inline script: the app never needs more.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// Everything no route took: a file of the app for a `GET`, else the API's `not_found` (an
/// endpoint mistyped is not found, whatever its method).
pub async fn asset(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if method != Method::GET || path == "api" || path.starts_with("api/") {
        return crate::not_found().await.into_response();
    }
    serve(path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.data.into_owned().into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(file.metadata.mimetype()).expect("mime is a header value"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a header value"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if path == "sw.js" {
        // The service worker controls the whole app, not only its own folder.
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    response
}

/// Who the bearer token is: what the app shows depends on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// `admin`, `warehouse`, `association` or `driver`.
    pub role: String,
    /// The association or driver the token acts for.
    pub scope: Option<String>,
    pub name: String,
    /// The collective's time zone (IANA name): its days are the days of every rule.
    pub time_zone: String,
}

pub async fn me(State(state): State<AppState>, actor: Option<Extension<Actor>>) -> Result<Json<Me>, ApiError> {
    let Some(Extension(actor)) = actor else {
        return Err(ApiError::unauthenticated());
    };
    Ok(Json(Me {
        role: actor.role.as_str().to_owned(),
        scope: actor.scope,
        name: actor.name,
        time_zone: state.time_zone.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quoted, space-free paths (`'/js/app.js'`) a text names.
    fn paths(text: &str) -> Vec<String> {
        text.split(['"', '\''])
            .filter(|s| {
                s.starts_with('/') && !s.starts_with("/api") && *s != "/health" && !s.contains(char::is_whitespace)
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_offline_copy_is_the_whole_app() {
        let text = |name: &str| String::from_utf8(Assets::get(name).unwrap().data.into_owned()).unwrap();
        let shell = paths(&text("sw.js"));
        for name in Assets::iter().filter(|n| n != "sw.js") {
            let path = if name == "index.html" { "/".to_owned() } else { format!("/{name}") };
            assert!(shell.contains(&path), "{path} is served but not kept offline by sw.js");
        }
        for path in shell.iter().chain(&paths(&text("index.html"))) {
            let name = path.trim_start_matches('/');
            assert!(name.is_empty() || Assets::get(name).is_some(), "{path} is named but not embedded");
        }
    }
}
