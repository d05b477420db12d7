//! The dashboard: one HTML page, its script and its style sheet, embedded
//! in the binary (no build step, no external assets, works offline) and
//! served at `/` without credentials: they hold no data. Every call the
//! page makes for data goes to the API like any other client's, with the
//! bearer token the user pastes when the API answers 401, so the page can
//! do no more than that token's role allows.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Where the page's script and style sheet are served.
pub const SCRIPT_PATH: &str = "/dashboard/app.js";
pub const STYLE_PATH: &str = "/dashboard/style.css";

/// Only this origin's script and style, calls to this origin only, and
/// not to be framed by another site.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page's routes, outside the API's authentication.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            SCRIPT_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            STYLE_PATH,
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            // A new agent's page replaces the old one at once.
            (CACHE_CONTROL, "no-cache"),
            (axum::http::header::CONTENT_SECURITY_POLICY, POLICY),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_and_nothing_outside() {
        assert!(INDEX.contains(SCRIPT_PATH) && INDEX.contains(STYLE_PATH));
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
