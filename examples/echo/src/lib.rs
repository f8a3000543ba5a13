//! Echoes the request back as JSON: method, path, headers, body and the
//! `GREETING` environment variable. Handy to see exactly what a function
//! receives through a trigger or `/fn/{name}`.

use std::io::{Read as _, Write as _};

use serde_json::{Map, Value, json};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Echo;

wasip2::http::proxy::export!(Echo);

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(body) = request.consume() {
        if let Ok(mut stream) = body.stream() {
            let _ = stream.read_to_end(&mut bytes);
        }
        let _ = wasip2::http::types::IncomingBody::finish(body);
    }
    bytes
}

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let mut headers = Map::new();
        for (name, value) in request.headers().entries() {
            headers.insert(name, Value::String(String::from_utf8_lossy(&value).into_owned()));
        }
        let body = read_body(&request);
        let reply = json!({
            "method": method_name(&request.method()),
            "path": request.path_with_query().unwrap_or_default(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "greeting": std::env::var("GREETING").ok(),
        });
        let event = headers
            .get("ce-type")
            .and_then(Value::as_str)
            .map(|t| format!(" (event {t})"))
            .unwrap_or_default();
        println!(
            "echo {} {}{event}",
            method_name(&request.method()),
            request.path_with_query().unwrap_or_default()
        );

        let fields = Fields::from_list(&[(
            "content-type".to_string(),
            b"application/json".to_vec(),
        )])
        .unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(fields);
        let Ok(out_body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = out_body.write() {
            let _ = out.write_all(reply.to_string().as_bytes());
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(out_body, None);
    }
}
