//! The web console: `ui/dist/` (built by `ui/build.sh`, committed) embedded
//! in the binary and served at `/ui/`. The page itself is public, like a
//! login page; everything it shows comes from the `/v1` API with the
//! token the user signs in with, under the same checks as the CLI.

use axum::response::{IntoResponse, Redirect, Response};
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderName, HeaderValue};

const INDEX: &[u8] = include_bytes!("../../../ui/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../../ui/dist/app.js");
const STYLE: &[u8] = include_bytes!("../../../ui/dist/app.css");

/// Only our own files run and load; no inline script or style, no
/// framing, no form posts elsewhere, no referrer leaking a path.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

pub(crate) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

fn file(kind: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
            // A new binary serves new files under the same names.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response()
}
