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

/// The page's scripts and style sheet: (path, content type, text). The
/// scripts run in this order (`defer`): core.js (the API and the token),
/// tasks.js (the task list), app.js (the mesh, services, events, clock).
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/dashboard/core.js",
        SCRIPT,
        include_str!("dashboard/core.js"),
    ),
    (
        "/dashboard/tasks.js",
        SCRIPT,
        include_str!("dashboard/tasks.js"),
    ),
    (
        "/dashboard/app.js",
        SCRIPT,
        include_str!("dashboard/app.js"),
    ),
    (
        "/dashboard/style.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    ),
];
const SCRIPT: &str = "text/javascript; charset=utf-8";

/// Only this origin's script and style, calls to this origin only, and
/// not to be framed by another site.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page's routes, outside the API's authentication.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = Router::new().route(
        "/",
        get(|| async { asset("text/html; charset=utf-8", INDEX) }),
    );
    ASSETS
        .iter()
        .fold(page, |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
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
        for (path, _, body) in ASSETS {
            assert!(INDEX.contains(path), "{path}");
            assert!(!body.contains("http://") && !body.contains("https://"));
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        // Scripts in the order they need each other.
        let at = |p: &str| INDEX.find(p).unwrap_or(usize::MAX);
        assert!(at("core.js") < at("tasks.js") && at("tasks.js") < at("app.js"));
    }
}
