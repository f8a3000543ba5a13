//! The route table: data plus a pure resolve function.

use std::collections::HashMap;
use std::sync::Arc;

use flare_model::{
    AliasSpec, CanarySpec, CanaryState, Error, ErrorCode, HttpTriggerSpec, PathPattern, Resource,
};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub function: Arc<str>,
    /// Path parameters, in pattern order.
    pub params: Vec<(String, String)>,
    /// For `/fn/{name}/rest`: the path (and query) the function sees.
    pub rewritten: Option<String>,
}

/// Which version of its function a route serves.
#[derive(Debug)]
enum Target {
    Latest,
    /// The version this alias (qualified name) names.
    Alias(String),
    /// Versions and their cumulative share out of 100.
    Weights(Vec<(u64, u32)>),
}

#[derive(Debug)]
struct Route {
    spec: HttpTriggerSpec,
    pattern: PathPattern,
    function: Arc<str>,
    target: Target,
    /// Sort key: host-bound routes first, then per-segment specificity.
    rank: (bool, Vec<u8>),
}

/// The compiled HTTP triggers, and the aliases they may name.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Qualified alias name to the version it names.
    aliases: HashMap<String, u64>,
    /// Qualified function name to its running canary: from, to, and the
    /// percent `to` gets.
    canaries: HashMap<String, (u64, u64, u32)>,
}

impl RouteTable {
    /// Compiles triggers; invalid ones (which the API never stores) are
    /// skipped with a warning rather than taking the router down.
    pub fn new(
        triggers: impl IntoIterator<Item = Resource<HttpTriggerSpec>>,
        aliases: impl IntoIterator<Item = Resource<AliasSpec>>,
        canaries: impl IntoIterator<Item = Resource<CanarySpec>>,
    ) -> Self {
        let canaries = canaries
            .into_iter()
            .filter(|c| c.spec.status.state == CanaryState::Running)
            .map(|c| {
                let function = flare_model::qualified(&c.spec.function, &c.metadata.namespace);
                (function, (c.spec.from, c.spec.to, c.spec.status.weight))
            })
            .collect();
        let aliases = aliases
            .into_iter()
            .map(|a| (a.qualified_name(), a.spec.version))
            .collect();
        let mut routes: Vec<Route> = triggers
            .into_iter()
            .filter_map(|trigger| match trigger.spec.pattern() {
                Ok(pattern) => {
                    let rank = (
                        trigger.spec.host.is_some(),
                        pattern.segments().iter().map(|s| s.specificity()).collect(),
                    );
                    let namespace = &trigger.metadata.namespace;
                    let target = match (&trigger.spec.alias, trigger.spec.weights.is_empty()) {
                        (Some(alias), _) => Target::Alias(flare_model::qualified(alias, namespace)),
                        (None, false) => Target::Weights(
                            trigger
                                .spec
                                .weights
                                .iter()
                                .scan(0, |sum, (&version, &weight)| {
                                    *sum += weight;
                                    Some((version, *sum))
                                })
                                .collect(),
                        ),
                        (None, true) => Target::Latest,
                    };
                    Some(Route {
                        // The function of the trigger's own namespace.
                        function: flare_model::qualified(&trigger.spec.function, namespace).into(),
                        target,
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
        RouteTable {
            routes,
            aliases,
            canaries,
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// What serves a request for `function`'s latest version: a running
    /// canary's versions, by its weight, or the function itself.
    fn latest(&self, function: Arc<str>, roll: u32) -> Arc<str> {
        match self.canaries.get(&*function) {
            Some(&(from, to, weight)) => {
                let version = if roll < weight { to } else { from };
                versioned(&function, version).into()
            }
            None => function,
        }
    }

    /// Finds the function for a request. `path_and_query` is the request
    /// target; `host` the `Host` header, port included or not; `roll`, in
    /// 0..100, picks among weighted versions. A route that serves a
    /// version resolves to the executor's name for it (`hello@3`).
    pub fn resolve(
        &self,
        method: &str,
        host: Option<&str>,
        path_and_query: &str,
        roll: u32,
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
            let function = self.latest(function, roll);
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
            let version = match &route.target {
                Target::Latest => None,
                Target::Alias(alias) => Some(*self.aliases.get(alias).ok_or_else(|| {
                    Error::new(
                        ErrorCode::Unavailable,
                        format!("the route's alias {alias} does not exist"),
                    )
                })?),
                Target::Weights(cumulative) => cumulative
                    .iter()
                    .find(|(_, upto)| roll < *upto)
                    .or(cumulative.last())
                    .map(|(version, _)| *version),
            };
            let function = match version {
                Some(version) => versioned(&route.function, version).into(),
                None => self.latest(route.function.clone(), roll),
            };
            return Ok(Resolved {
                function,
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

/// The executor's name for `version` of the function `qualified`
/// (`hello@3`, `hello@3.team-a`).
fn versioned(qualified: &str, version: u64) -> String {
    let (name, namespace) = flare_model::split_qualified(qualified);
    flare_model::qualified(&format!("{name}@{version}"), namespace)
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
                alias: None,
                weights: Default::default(),
            },
        )
    }

    fn table() -> RouteTable {
        let mut on_host = trigger("h", &[], "/greet/{name}", "hosted");
        on_host.spec.host = Some("api.example.com".into());
        RouteTable::new(
            [
                trigger("a", &["GET"], "/greet/{name}", "greeter"),
                trigger("b", &["GET"], "/greet/me", "me"),
                trigger("c", &[], "/static/{*rest}", "files"),
                trigger("d", &["POST"], "/orders", "orders"),
                on_host,
            ],
            [],
            [],
        )
    }

    #[test]
    fn routes_serve_an_aliased_or_weighted_version() {
        let mut aliased = trigger("p", &[], "/prod", "hello");
        aliased.spec.alias = Some("prod".into());
        let mut missing = trigger("m", &[], "/gone", "hello");
        missing.spec.alias = Some("gone".into());
        let mut split = trigger("s", &[], "/split", "hello");
        split.spec.weights = [(3, 80), (4, 20)].into();
        let mut team = trigger("t", &[], "/team", "hello");
        team.metadata.namespace = "team-a".into();
        team.spec.weights = [(2, 100)].into();
        let t = RouteTable::new(
            [
                aliased,
                missing,
                split,
                team,
                trigger("l", &[], "/latest", "hello"),
            ],
            [Resource::new(
                "prod",
                AliasSpec {
                    function: "hello".into(),
                    version: 3,
                },
            )],
            [],
        );
        let at = |path: &str, roll| t.resolve("GET", None, path, roll).map(|r| r.function);
        assert_eq!(&*at("/prod", 0).unwrap(), "hello@3");
        assert_eq!(&*at("/latest", 0).unwrap(), "hello");
        assert_eq!(at("/gone", 0).unwrap_err().code, ErrorCode::Unavailable);
        for (roll, version) in [
            (0, "hello@3"),
            (79, "hello@3"),
            (80, "hello@4"),
            (99, "hello@4"),
        ] {
            assert_eq!(&*at("/split", roll).unwrap(), version, "roll {roll}");
        }
        assert_eq!(&*at("/team", 50).unwrap(), "hello@2.team-a");
    }

    #[test]
    fn a_running_canary_splits_the_latest_versions_traffic() {
        let mut pinned = trigger("p", &[], "/pinned", "hello");
        pinned.spec.weights = [(1, 100)].into();
        let canary = |state| {
            let mut c = Resource::new(
                "c",
                CanarySpec {
                    function: "hello".into(),
                    from: 1,
                    to: 2,
                    step: 20,
                    interval: std::time::Duration::from_secs(60),
                    failure_threshold: 10,
                    status: Default::default(),
                },
            );
            c.spec.status.state = state;
            c.spec.status.weight = 20;
            c
        };
        let t = RouteTable::new(
            [pinned, trigger("l", &[], "/latest", "hello")],
            [],
            [canary(CanaryState::Running)],
        );
        let at = |path: &str, roll| t.resolve("GET", None, path, roll).unwrap().function;
        for path in ["/latest", "/fn/hello"] {
            assert_eq!(&*at(path, 19), "hello@2", "{path}");
            assert_eq!(&*at(path, 20), "hello@1", "{path}");
        }
        // Routes pinned to a version, and other functions, are not its.
        assert_eq!(&*at("/pinned", 0), "hello@1");
        assert_eq!(&*at("/fn/other", 0), "other");
        // Once it ends, the function's latest version serves again.
        let done = RouteTable::new([], [], [canary(CanaryState::Failed)]);
        assert_eq!(
            &*done.resolve("GET", None, "/fn/hello", 0).unwrap().function,
            "hello"
        );
    }

    #[test]
    fn literal_beats_parameter_and_params_are_extracted() {
        let t = table();
        let r = t.resolve("GET", None, "/greet/ada", 0).unwrap();
        assert_eq!(&*r.function, "greeter");
        assert_eq!(r.params, vec![("name".to_string(), "ada".to_string())]);
        assert_eq!(
            &*t.resolve("GET", None, "/greet/me", 0).unwrap().function,
            "me"
        );
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let r = table()
            .resolve("DELETE", None, "/static/css/site.css?v=2", 0)
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
            &*t.resolve("GET", Some("api.example.com:8080"), "/greet/x", 0)
                .unwrap()
                .function,
            "hosted"
        );
        assert_eq!(
            &*t.resolve("GET", Some("other"), "/greet/x", 0)
                .unwrap()
                .function,
            "greeter"
        );
    }

    #[test]
    fn wrong_method_is_405_and_no_route_is_404() {
        let t = table();
        assert_eq!(
            t.resolve("GET", None, "/orders", 0).unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            t.resolve("GET", None, "/nothing", 0).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            t.resolve("GET", None, "/", 0).unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn fn_prefix_reaches_any_function_with_the_rest_of_the_path() {
        let t = RouteTable::default();
        let r = t.resolve("GET", None, "/fn/hello/a/b?x=1", 0).unwrap();
        assert_eq!(&*r.function, "hello");
        assert_eq!(r.rewritten.as_deref(), Some("/a/b?x=1"));
        assert_eq!(
            t.resolve("GET", None, "/fn/hello", 0)
                .unwrap()
                .rewritten
                .as_deref(),
            Some("/")
        );
        assert_eq!(
            t.resolve("GET", None, "/fn/hello?q", 0)
                .unwrap()
                .rewritten
                .as_deref(),
            Some("/?q")
        );
        let r = t.resolve("GET", None, "/fn/hello.team-a/x", 0).unwrap();
        assert_eq!(&*r.function, "hello.team-a");
        let r = t.resolve("GET", None, "/fn/hello.default/x", 0).unwrap();
        assert_eq!(&*r.function, "hello");
        assert_eq!(
            t.resolve("GET", None, "/fn/", 0).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
