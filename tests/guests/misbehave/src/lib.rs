//! A function that does what functions should not, chosen by path:
//!
//! - `/trap`: panics (a wasm trap)
//! - `/loop`: spins forever
//! - `/oom`: allocates until memory runs out
//! - `/sleep?ms=N`: blocks in a host call for N ms
//! - `/log?n=N`: writes N lines to stdout and one to stderr
//! - `/env`: lists the environment it sees
//! - `/config`: lists what `wasi:config/store` answers (`get-all`), and
//!   `/config?key=K` what `get` answers for K
//! - `/fs`: tries to read the host's files
//! - `/fetch?url=http://host:port/path`: outbound HTTP GET
//! - `/state`: counts its calls in a global and marks an 8 MiB global
//!   array; a fresh instance answers "calls=1 dirty=0" (nothing left over
//!   from an earlier request in the same pool slot)
//! - anything else: "ok", or a trap when the request's `ce-subject` (a
//!   message's subject, from a message-queue trigger) ends in `.trap`

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

// wasi:config/store, which the wasip2 crate does not bind.
mod config {
    wit_bindgen::generate!({
        inline: "
            package flare:misbehave;
            package wasi:config@0.2.0-rc.1 {
                interface store {
                    variant error { upstream(string), io(string) }
                    get: func(key: string) -> result<option<string>, error>;
                    get-all: func() -> result<list<tuple<string, string>>, error>;
                }
            }
            world guest { import wasi:config/store@0.2.0-rc.1; }
        ",
        world: "flare:misbehave/guest",
        generate_all,
    });
    pub use self::wasi::config::store::{get, get_all};
}

struct Misbehave;

static CALLS: AtomicU64 = AtomicU64::new(0);
/// 8 MiB of zero-initialized memory: larger than what the runtime resets in
/// place, so both the in-place reset and the decommit are checked.
static BIG: [AtomicU8; 8 << 20] = [const { AtomicU8::new(0) }; 8 << 20];

fn state() -> String {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let dirty = (0..BIG.len())
        .step_by(64 << 10)
        .filter(|&i| BIG[i].swap(1, Ordering::Relaxed) != 0)
        .count();
    format!("calls={calls} dirty={dirty}")
}

wasip2::http::proxy::export!(Misbehave);

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(mut stream) = body.write() {
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

fn fetch(url: &str) -> Result<String, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("unsupported url {url}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    request.set_authority(Some(authority)).map_err(|_| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let body = request.body().map_err(|_| "body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let future = wasip2::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let mut text = Vec::new();
    if let Ok(body) = response.consume()
        && let Ok(mut stream) = body.stream()
    {
        let _ = stream.read_to_end(&mut text);
    }
    Ok(format!("{status} {}", String::from_utf8_lossy(&text)))
}

impl wasip2::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_query.split_once('?').unwrap_or((&path_query, ""));
        match path {
            "/trap" => panic!("misbehave: deliberate panic"),
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/state" => respond(out, 200, &state()),
            "/oom" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            "/sleep" => {
                let ms = query_param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, "slept");
            }
            "/log" => {
                let n: usize = query_param(query, "n").and_then(|v| v.parse().ok()).unwrap_or(1);
                for i in 0..n {
                    println!("line {i}");
                }
                eprintln!("to stderr");
                respond(out, 200, "logged");
            }
            "/config" => {
                let answer = match query_param(query, "key") {
                    Some(key) => format!("{:?}", config::get(key).map_err(|_| "error")),
                    None => match config::get_all() {
                        Ok(mut all) => {
                            all.sort();
                            all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
                        }
                        Err(_) => "error".into(),
                    },
                };
                respond(out, 200, &answer);
            }
            "/env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                respond(out, 200, &vars.join("\n"));
            }
            "/fs" => {
                let root = std::fs::read_dir("/").map(|_| "listed /".to_string());
                let passwd = std::fs::read_to_string("/etc/passwd").map(|_| "read /etc/passwd".to_string());
                let text = format!("{root:?}\n{passwd:?}");
                respond(out, 200, &text);
            }
            "/fetch" => {
                let url = query_param(query, "url").unwrap_or("");
                match fetch(url) {
                    Ok(text) => respond(out, 200, &text),
                    Err(e) => respond(out, 502, &format!("fetch failed: {e}")),
                }
            }
            _ => {
                let subject = request.headers().get("ce-subject");
                if subject.iter().any(|s| s.ends_with(b".trap")) {
                    panic!("misbehave: deliberate panic on a message");
                }
                respond(out, 200, "ok")
            }
        }
    }
}
