//! The route table: data plus a pure resolve function.

use std::sync::Arc;

use flare_model::{Error, ErrorCode, HttpTriggerSpec, PathPattern, Resource};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub function: Arc<str>,
    /// Path parameters, in pattern order.
    pub params: Vec<(String, String)>,
    /// For `/fn/{name}/rest`: the path (and query) the function sees.
    pub rewritten: Option<String>,
}

#[derive(Debug)]
struct Route {
    spec: HttpTriggerSpec,
    pattern: PathPattern,
    function: Arc<str>,
    /// Sort key: host-bound routes first, then per-segment specificity.
    rank: (bool, Vec<u8>),
}

/// The compiled HTTP triggers.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles triggers; invalid ones (which the API never stores) are
    /// skipped with a warning rather than taking the router down.
    pub fn new(triggers: impl IntoIterator<Item = Resource<HttpTriggerSpec>>) -> Self {
        let mut routes: Vec<Route> = triggers
            .into_iter()
            .filter_map(|trigger| match trigger.spec.pattern() {
                Ok(pattern) => {
                    let rank = (
                        trigger.spec.host.is_some(),
                        pattern.segments().iter().map(|s| s.specificity()).collect(),
                    );
                    Some(Route {
                        // The function of the trigger's own namespace.
                        function: flare_model::qualified(
                            &trigger.spec.function,
                            &trigger.metadata.namespace,
                        )
                        .into(),
                        spec: trigger.spec,
                        pattern,
                        rank,
                    })
                }
                Err(e) => {
                    tracing::warn!("skipping trigger {}: {e}", trigger.metadata.name);
                    None
                }
            })
            .collect();
        // Most specific first: the first match wins. A longer pattern with
        // the same prefix ranks higher, since it only matches longer paths.
        routes.sort_by(|a, b| b.rank.cmp(&a.rank));
        RouteTable { routes }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the function for a request. `path_and_query` is the request
    /// target; `host` the `Host` header, port included or not.
    pub fn resolve(
        &self,
        method: &str,
        host: Option<&str>,
        path_and_query: &str,
    ) -> Result<Resolved, Error> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if let Some(rest) = path.strip_prefix("/fn/") {
            let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if name.is_empty() {
                return Err(Error::not_found("function", ""));
            }
            let mut rewritten = format!("/{tail}");
            if let Some(query) = query {
                rewritten.push('?');
                rewritten.push_str(query);
            }
            // `name.default` is `name`.
            let function: Arc<str> = match name.strip_suffix(".default") {
                Some(bare) => bare.into(),
                None => name.into(),
            };
            return Ok(Resolved {
                function,
                params: Vec::new(),
                rewritten: Some(rewritten),
            });
        }
        let host = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let mut path_matched = false;
        for route in &self.routes {
            if let Some(want) = &route.spec.host
                && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
            {
                continue;
            }
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if !route.spec.allows_method(method) {
                path_matched = true;
                continue;
            }
            return Ok(Resolved {
                function: route.function.clone(),
                params: params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                rewritten: None,
            });
        }
        if path_matched {
            Err(Error::new(
                ErrorCode::MethodNotAllowed,
                format!("method {method} is not allowed for {path}"),
            ))
        } else {
            Err(Error::new(
                ErrorCode::NotFound,
                format!("no route for {path}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(
        name: &str,
        methods: &[&str],
        path: &str,
        function: &str,
    ) -> Resource<HttpTriggerSpec> {
        Resource::new(
            name,
            HttpTriggerSpec {
                methods: methods.iter().map(|m| m.to_string()).collect(),
                path: path.into(),
                host: None,
                function: function.into(),
            },
        )
    }

    fn table() -> RouteTable {
        let mut on_host = trigger("h", &[], "/greet/{name}", "hosted");
        on_host.spec.host = Some("api.example.com".into());
        RouteTable::new([
            trigger("a", &["GET"], "/greet/{name}", "greeter"),
            trigger("b", &["GET"], "/greet/me", "me"),
            trigger("c", &[], "/static/{*rest}", "files"),
            trigger("d", &["POST"], "/orders", "orders"),
            on_host,
        ])
    }

    #[test]
    fn literal_beats_parameter_and_params_are_extracted() {
        let t = table();
        let r = t.resolve("GET", None, "/greet/ada").unwrap();
        assert_eq!(&*r.function, "greeter");
        assert_eq!(r.params, vec![("name".to_string(), "ada".to_string())]);
        assert_eq!(
            &*t.resolve("GET", None, "/greet/me").unwrap().function,
            "me"
        );
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let r = table()
            .resolve("DELETE", None, "/static/css/site.css?v=2")
            .unwrap();
        assert_eq!(&*r.function, "files");
        assert_eq!(
            r.params,
            vec![("rest".to_string(), "css/site.css".to_string())]
        );
    }

    #[test]
    fn host_bound_routes_win_for_their_host_only() {
        let t = table();
        assert_eq!(
            &*t.resolve("GET", Some("api.example.com:8080"), "/greet/x")
                .unwrap()
                .function,
            "hosted"
        );
        assert_eq!(
            &*t.resolve("GET", Some("other"), "/greet/x")
                .unwrap()
                .function,
            "greeter"
        );
    }

    #[test]
    fn wrong_method_is_405_and_no_route_is_404() {
        let t = table();
        assert_eq!(
            t.resolve("GET", None, "/orders").unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            t.resolve("GET", None, "/nothing").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            t.resolve("GET", None, "/").unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn fn_prefix_reaches_any_function_with_the_rest_of_the_path() {
        let t = RouteTable::default();
        let r = t.resolve("GET", None, "/fn/hello/a/b?x=1").unwrap();
        assert_eq!(&*r.function, "hello");
        assert_eq!(r.rewritten.as_deref(), Some("/a/b?x=1"));
        assert_eq!(
            t.resolve("GET", None, "/fn/hello")
                .unwrap()
                .rewritten
                .as_deref(),
            Some("/")
        );
        assert_eq!(
            t.resolve("GET", None, "/fn/hello?q")
                .unwrap()
                .rewritten
                .as_deref(),
            Some("/?q")
        );
        let r = t.resolve("GET", None, "/fn/hello.team-a/x").unwrap();
        assert_eq!(&*r.function, "hello.team-a");
        let r = t.resolve("GET", None, "/fn/hello.default/x").unwrap();
        assert_eq!(&*r.function, "hello");
        assert_eq!(
            t.resolve("GET", None, "/fn/").unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
