//! {{name}}: a Flare function, a WASI 0.2 component exporting
//! `wasi:http/incoming-handler`. `/?name=ada` answers `Hello, ada!` whatever
//! the method: HTTP callers send GET, timer and queue triggers POST.

/// The function's logic, plain Rust so `cargo test` runs it on this machine:
/// the request's method and path (with its query) in, a status and a text
/// body out. Every method is greeted, so `_method` goes unused until you
/// want to treat some methods apart.
pub fn respond(_method: &str, path: &str) -> (u16, String) {
    let name = query_param(path, "name")
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "world".to_string());
    (200, format!("Hello, {name}!\n"))
}

/// The first value of `key` in the path's query string, decoded.
fn query_param(path: &str, key: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v))
    })
}

/// Undoes form encoding: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let escaped = text
            .get(i + 1..i + 3)
            .filter(|hex| hex.bytes().all(|c| c.is_ascii_hexdigit()));
        match (text.as_bytes()[i], escaped) {
            (b'%', Some(hex)) => {
                bytes.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            (b'+', _) => bytes.push(b' '),
            (byte, _) => bytes.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The wasi:http glue: turns the request into a call to `respond` and its
/// answer into the response. Only built for wasm.
#[cfg(target_arch = "wasm32")]
mod wasi {
    use std::io::Write as _;

    use wasip2::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };

    struct Function;

    fn method_name(method: Method) -> String {
        let name = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(other) => return other,
        };
        name.to_string()
    }

    wasip2::http::proxy::export!(Function);

    impl wasip2::exports::http::incoming_handler::Guest for Function {
        fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
            let method = method_name(request.method());
            let path = request.path_with_query().unwrap_or_default();
            let (status, text) = super::respond(&method, &path);
            // What a function prints goes to `flare fn logs`.
            println!("{method} {path} -> {status}");

            let headers = Fields::from_list(&[(
                "content-type".to_string(),
                b"text/plain; charset=utf-8".to_vec(),
            )])
            .unwrap_or_else(|_| Fields::new());
            let response = OutgoingResponse::new(headers);
            let _ = response.set_status_code(status);
            let Ok(body) = response.body() else { return };
            ResponseOutparam::set(response_out, Ok(response));
            if let Ok(mut out) = body.write() {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    #[test]
    fn greets_by_name() {
        assert_eq!(
            respond("GET", "/?name=ada"),
            (200, "Hello, ada!\n".to_string())
        );
    }

    #[test]
    fn greets_the_world_by_default() {
        assert_eq!(respond("GET", "/"), (200, "Hello, world!\n".to_string()));
        assert_eq!(
            respond("GET", "/?name="),
            (200, "Hello, world!\n".to_string())
        );
    }

    #[test]
    fn decodes_the_name() {
        assert_eq!(
            respond("GET", "/?x=1&name=Ada%20L+B").1,
            "Hello, Ada L B!\n"
        );
    }

    #[test]
    fn greets_a_post_too() {
        assert_eq!(
            respond("POST", "/?name=ada"),
            (200, "Hello, ada!\n".to_string())
        );
    }
}
