//! The API's wall against browsers (CSRF): any page a user opens can make
//! their browser send requests here, with no script needed for a form
//! post. A request that would change something is refused when it comes
//! from another origin (its `Origin` is not this API's own, or
//! `Sec-Fetch-Site` says cross-site or same-site: a function's page on the
//! router's port is same-site), and a body a page can send without asking
//! first (`text/plain`, a URL-encoded form) is refused everywhere but
//! `invoke`, which forwards any body to the function. Clients that are not
//! browsers (the CLI, curl, scripts) send no `Origin` and pass.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use flare_model::{Error, ErrorCode};
use http::{HeaderMap, Method};

pub(crate) async fn same_origin(request: Request, next: Next) -> Response {
    match check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => crate::access::refuse(request, e).await,
    }
}

fn check(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Error> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: String| Err(Error::new(ErrorCode::Forbidden, why));
    if let Some(site) = text(http::header::HeaderName::from_static("sec-fetch-site"))
        && (site == "cross-site" || site == "same-site")
    {
        return refused(format!(
            "a browser request from another site ({site}) may not change anything here"
        ));
    }
    if let Some(origin) = text(http::header::ORIGIN) {
        let host = text(http::header::HOST).unwrap_or("");
        let from = origin.split_once("://").map(|(_, authority)| authority);
        if from != Some(host) {
            return refused(format!(
                "a browser request from {origin} may not change anything on {host}"
            ));
        }
    }
    let invoke = path
        .strip_prefix("/v1/functions/")
        .and_then(|rest| rest.split('/').nth(1))
        == Some("invoke");
    if !invoke && let Some(kind) = text(http::header::CONTENT_TYPE) {
        let essence = kind
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "text/plain" || essence == "application/x-www-form-urlencoded" {
            return Err(Error::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "this endpoint does not take {essence}; send application/json (or multipart/form-data with a function and its code)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::header::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn cross_origin_writes_and_form_bodies_are_refused() {
        let host = ("host", "127.0.0.1:8081");
        let post = Method::POST;
        let refused = |m: &Method, path: &str, h: &[(&'static str, &'static str)]| {
            check(m, path, &headers(h)).err().map(|e| e.code)
        };
        // The CLI: no Origin.
        assert_eq!(refused(&post, "/v1/functions", &[host]), None);
        // A page on another origin, even the router's port on this host.
        for origin in ["http://evil.example", "http://127.0.0.1:8080", "null"] {
            let h = [host, ("origin", origin)];
            assert_eq!(
                refused(&post, "/v1/functions", &h),
                Some(ErrorCode::Forbidden)
            );
        }
        let h = [host, ("sec-fetch-site", "same-site")];
        assert_eq!(
            refused(&Method::DELETE, "/v1/functions/x", &h),
            Some(ErrorCode::Forbidden)
        );
        // The API's own origin, and reads from anywhere.
        let h = [host, ("origin", "http://127.0.0.1:8081")];
        assert_eq!(refused(&post, "/v1/functions", &h), None);
        let h = [host, ("origin", "http://evil.example")];
        assert_eq!(refused(&Method::GET, "/v1/functions", &h), None);
        // Bodies a form sends, except to a function.
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded; charset=utf-8",
        ] {
            let h = [host, ("content-type", kind)];
            assert_eq!(
                refused(&post, "/v1/environments", &h),
                Some(ErrorCode::UnsupportedMediaType)
            );
            assert_eq!(refused(&post, "/v1/functions/f/invoke/a", &h), None);
        }
    }
}
