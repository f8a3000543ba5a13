//! The JSON Schema of spec files (`flare.yaml`, `specs/*.yaml`), served at
//! `/v1/spec.schema.json` so that editors can check them as they are typed.
//!
//! It is derived from the OpenAPI document's schemas, so the two cannot
//! drift: the same definitions, with `$ref`s moved to `$defs`, unknown
//! fields refused (as `flare spec validate` refuses them), a function's
//! `spec.code` (its package's path) beside `spec.package`, and the
//! `Project` document that names what a directory owns.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// The kinds a spec file holds, each by its definition.
const DOCUMENTS: [&str; 8] = [
    "Project",
    "Environment",
    "SpecFunction",
    "Alias",
    "Canary",
    "HttpTrigger",
    "TimerTrigger",
    "MessageQueueTrigger",
];

/// The schema, built once.
pub fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(build)
}

fn build() -> Value {
    let openapi: Value = serde_json::from_str(crate::OPENAPI).unwrap_or(Value::Null);
    let mut defs = openapi
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_else(|| json!({}));
    rewrite_refs(&mut defs);
    if let Some(defs) = defs.as_object_mut() {
        add_spec_definitions(defs);
        for schema in defs.values_mut() {
            strict(schema);
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flare.dev/v1/spec.schema.json",
        "title": "A Flare spec document (flare.yaml, specs/*.yaml)",
        "description": "One document of a spec file: a Project naming what the directory owns, or a resource as the API stores it. A function's spec.code is the path of its package, relative to the file.",
        "oneOf": DOCUMENTS.iter().map(|d| json!({"$ref": format!("#/$defs/{d}")})).collect::<Vec<_>>(),
        "$defs": defs,
    })
}

/// `#/components/schemas/X` becomes `#/$defs/X`, everywhere.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/components/schemas/")
            {
                *target = format!("#/$defs/{name}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Objects that list their fields take no others. The branches of
/// allOf/anyOf/oneOf are left alone: each names only some of the fields
/// and would refuse the rest.
fn strict(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, child) in map.iter_mut() {
                if !matches!(key.as_str(), "allOf" | "anyOf" | "oneOf") {
                    strict(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

fn add_spec_definitions(defs: &mut Map<String, Value>) {
    let api_version = json!({"type": "string", "enum": [flare_model::API_VERSION]});
    defs.insert(
        "Project".into(),
        json!({
            "type": "object",
            "description": "Names what the directory owns: everything applied is labelled flare.dev/project with this name",
            "required": ["apiVersion", "kind", "metadata"],
            "properties": {
                "apiVersion": api_version,
                "kind": {"type": "string", "enum": ["Project"]},
                "metadata": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": defs.get("Metadata").and_then(|m| m.pointer("/properties/name")).cloned().unwrap_or(json!({"type": "string"}))}
                }
            }
        }),
    );
    // A function in a spec names its package by path: spec.code.
    let mut spec = defs
        .get("FunctionSpecUpload")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(properties) = spec.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert(
            "code".into(),
            json!({"type": "string", "description": "the package's path, relative to the spec file: a .wasm component, a source file or an archive (what `flare build` makes)"}),
        );
    }
    if let Some(spec) = spec.as_object_mut() {
        spec.insert(
            "anyOf".into(),
            json!([{"required": ["code"]}, {"required": ["package"]}]),
        );
        // In a spec, a function with an environment runs as a process
        // without saying so.
        spec.insert(
            "oneOf".into(),
            json!([
                {
                    "title": "wasm",
                    "description": "a wasm function takes no environment, entrypoint or network",
                    "not": {"required": ["environment"]},
                    "properties": {
                        "runtime": {"enum": ["wasm"]},
                        "entrypoint": {"enum": [null]},
                        "network": {"enum": [false]}
                    }
                },
                {
                    "title": "process",
                    "description": "a process function names its environment",
                    "required": ["environment"],
                    "properties": {"runtime": {"enum": ["process"]}}
                }
            ]),
        );
    }
    defs.insert("SpecFunctionSpec".into(), spec);
    let mut function = defs.get("Function").cloned().unwrap_or_else(|| json!({}));
    if let Some(properties) = function
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    {
        properties.insert("spec".into(), json!({"$ref": "#/$defs/SpecFunctionSpec"}));
    }
    defs.insert("SpecFunction".into(), function);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_built_from_the_openapi_document() {
        let schema = spec_schema();
        for document in DOCUMENTS {
            assert!(schema["$defs"][document].is_object(), "{document}");
        }
        let spec = &schema["$defs"]["SpecFunctionSpec"];
        assert_eq!(spec["additionalProperties"], false);
        assert!(spec["properties"]["code"].is_object());
        assert_eq!(schema["$defs"]["Limits"]["additionalProperties"], false);
        let text = schema.to_string();
        assert!(!text.contains("#/components/"), "a reference was not moved");
    }
}
