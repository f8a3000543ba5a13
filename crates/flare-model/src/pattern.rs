//! URL path patterns of HTTP triggers: `/users/{id}`, `/static/{*rest}`.

use std::fmt;

use crate::{Error, Result};

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `{name}`: matches one non-empty segment.
    Param(String),
    /// `{*name}`: matches the rest of the path (possibly empty); last only.
    CatchAll(String),
}

impl Segment {
    /// Rank for choosing among several matching routes: a literal beats a
    /// parameter, which beats a catch-all.
    pub fn specificity(&self) -> u8 {
        match self {
            Segment::Literal(_) => 2,
            Segment::Param(_) => 1,
            Segment::CatchAll(_) => 0,
        }
    }
}

/// A parsed, validated path pattern. A trailing `/` is not significant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

/// Path prefixes the router serves itself; triggers may not take them.
const RESERVED_PREFIXES: [&str; 2] = ["fn", "async"];

/// A literal segment must be something a request path can hold (RFC 3986
/// `pchar`): a space, CR/LF, NUL or unencoded non-ASCII could never match
/// and would corrupt listings. Percent-encoded text is fine.
fn check_literal(part: &str) -> std::result::Result<(), String> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(format!(
                    "segment {part:?} has a '%' that does not start a percent-encoded byte (%XX)"
                ));
            }
            i += 3;
            continue;
        }
        if !ok {
            let c = part[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "segment {part:?} has {c:?}, which no request path can hold; percent-encode it"
            ));
        }
        i += 1;
    }
    Ok(())
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self> {
        let bad = |why: String| {
            Err(Error::invalid(format!(
                "invalid URL pattern \"{pattern}\": {why}"
            )))
        };
        let Some(rest) = pattern.strip_prefix('/') else {
            return bad("it must start with '/'".into());
        };
        if pattern.contains(['?', '#']) {
            return bad("it must be a path, without '?' or '#'".into());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.into_iter().enumerate() {
                if part.is_empty() {
                    return bad("it has an empty segment ('//')".into());
                }
                let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(inner) => {
                        let (catch_all, name) = match inner.strip_prefix('*') {
                            Some(name) => (true, name),
                            None => (false, inner),
                        };
                        let valid = !name.is_empty()
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                        if !valid {
                            return bad(format!(
                                "parameter \"{part}\" needs a name of letters, digits, '_' or '-'"
                            ));
                        }
                        if names.contains(&name) {
                            return bad(format!("parameter \"{name}\" appears twice"));
                        }
                        names.push(name);
                        if catch_all {
                            if i != last {
                                return bad(format!(
                                    "catch-all \"{part}\" must be the last segment"
                                ));
                            }
                            Segment::CatchAll(name.to_string())
                        } else {
                            Segment::Param(name.to_string())
                        }
                    }
                    None => {
                        if part.contains(['{', '}']) {
                            return bad(format!(
                                "segment \"{part}\" mixes text and a parameter; a parameter must be a whole segment"
                            ));
                        }
                        if let Err(why) = check_literal(part) {
                            return bad(why);
                        }
                        Segment::Literal(part.to_string())
                    }
                };
                segments.push(segment);
            }
        }
        if let Some(Segment::Literal(first)) = segments.first()
            && RESERVED_PREFIXES.contains(&first.as_str())
        {
            return bad(format!("the prefix /{first} is reserved by the router"));
        }
        Ok(PathPattern { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The pattern with parameter names erased: two patterns with the same
    /// shape match exactly the same paths.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param(_) => out.push_str("{}"),
                Segment::CatchAll(_) => out.push_str("{*}"),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Matches a request path (without query), returning the parameters.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut params = Vec::new();
        let mut remaining = if rest.is_empty() { None } else { Some(rest) };
        for segment in &self.segments {
            match segment {
                Segment::CatchAll(name) => {
                    params.push((name.as_str(), remaining.unwrap_or("")));
                    return Some(params);
                }
                Segment::Literal(text) => {
                    let (head, tail) = split_first(remaining?);
                    if head != text {
                        return None;
                    }
                    remaining = tail;
                }
                Segment::Param(name) => {
                    let (head, tail) = split_first(remaining?);
                    if head.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), head));
                    remaining = tail;
                }
            }
        }
        remaining.is_none().then_some(params)
    }
}

fn split_first(path: &str) -> (&str, Option<&str>) {
    match path.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => write!(f, "/{text}")?,
                Segment::Param(name) => write!(f, "/{{{name}}}")?,
                Segment::CatchAll(name) => write!(f, "/{{*{name}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    #[test]
    fn literals_must_be_what_a_request_path_can_hold() {
        for bad in [
            "/a b",
            "/a\r\nb",
            "/a\0",
            "/caf\u{e9}",
            "/a%2",
            "/a%zz",
            "/a\"b",
            "/<x>",
        ] {
            let err = PathPattern::parse(bad).unwrap_err();
            assert!(err.message.contains("segment"), "{bad:?}: {}", err.message);
        }
        for good in ["/caf%C3%A9", "/a-b_c.d~e", "/v1:run", "/@me", "/a+b"] {
            assert!(PathPattern::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "/",
            "/greet/{name}",
            "/static/{*rest}",
            "/a/b/c",
            "/users/{id}/posts/{post}",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("/greet/").to_string(), "/greet");
    }

    #[test]
    fn rejects_malformed_patterns() {
        for s in [
            "greet",
            "/a//b",
            "/{}",
            "/{a b}",
            "/x{id}",
            "/{*rest}/more",
            "/{id}/{id}",
            "/a?b=1",
            "/fn/x",
            "/async",
        ] {
            let err = PathPattern::parse(s).unwrap_err();
            assert!(
                err.message.contains("invalid URL pattern"),
                "{s}: {}",
                err.message
            );
        }
    }

    #[test]
    fn matches_paths() {
        assert_eq!(
            p("/greet/{name}").matches("/greet/ada"),
            Some(vec![("name", "ada")])
        );
        assert_eq!(
            p("/greet/{name}").matches("/greet/ada/"),
            Some(vec![("name", "ada")])
        );
        assert_eq!(p("/greet/{name}").matches("/greet"), None);
        assert_eq!(p("/greet/{name}").matches("/greet/ada/x"), None);
        assert_eq!(
            p("/s/{*rest}").matches("/s/a/b.css"),
            Some(vec![("rest", "a/b.css")])
        );
        assert_eq!(p("/s/{*rest}").matches("/s"), Some(vec![("rest", "")]));
        assert_eq!(p("/").matches("/"), Some(vec![]));
        assert_eq!(p("/").matches("/x"), None);
        assert_eq!(p("/a").matches("/b"), None);
    }

    #[test]
    fn shape_ignores_parameter_names() {
        assert_eq!(p("/u/{id}").shape(), p("/u/{name}").shape());
        assert_ne!(p("/u/{id}").shape(), p("/u/me").shape());
        assert_ne!(p("/u/{id}").shape(), p("/u/{*id}").shape());
    }
}
