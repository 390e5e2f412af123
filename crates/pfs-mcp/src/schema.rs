//! Tool input schemas every model provider accepts.
//!
//! MCP clients hand a tool's `inputSchema` to the model provider as a function declaration. The
//! providers accept different subsets of JSON Schema: Anthropic refuses `anyOf`/`oneOf`/`allOf` at
//! the root, OpenAI wants an object root with `properties`, and Gemini takes a small OpenAPI-3.0
//! subset (one scalar `type`, no `$ref`, no `additionalProperties`, no `const`, no `default`). So
//! the schema we advertise is schemars' schema rewritten once, at router construction, into the
//! intersection: an object root with `type`, `properties` and `required`, each property built only
//! from the keywords in [`KEYWORDS`]. What the rewrite drops is still enforced by the argument
//! decoder (unknown keys, patterns, ranges are checked server-side with clear errors); defaults are
//! folded into the property's description so the model still learns them.
//!
//! [`violations`] states the same rules as a checker; the tests run it over every tool.

use std::sync::Arc;

use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

/// The keywords a property schema may use: the intersection of what Anthropic, OpenAI and Gemini
/// document for function parameters.
pub const KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

/// The scalar types a `type` keyword may name.
const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

/// OpenAI's limit on a function description (characters).
pub const MAX_DESCRIPTION: usize = 1024;

/// The advertised input schema of a tool taking `T`.
pub fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    let raw = rmcp::handler::server::common::schema_for_type::<T>();
    Arc::new(portable(&raw))
}

/// The advertised output schema of a tool returning `T`: schemars' serialize-side schema without
/// the prose (`description`, `title`), `$schema` and `format` annotations. Clients validate
/// `structuredContent` against it (the TypeScript SDK with Ajv, which rejects unknown formats
/// such as `uint64` in strict mode); providers never see it, and the field meanings are in the
/// tool descriptions. Halves the size of `tools/list`.
pub fn output_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    let raw = rmcp::handler::server::common::schema_for_output::<T>();
    let mut v = Value::Object(raw.as_ref().clone());
    strip_annotations(&mut v, true);
    compact_output(&mut v);
    match v {
        Value::Object(o) => Arc::new(o),
        _ => raw,
    }
}

/// Shrink an output schema without admitting anything we do not emit or refusing anything we
/// do. In schemars' serialize-side schemas a property is left out of `required` exactly when it
/// is skipped when absent (`skip_serializing_if = "Option::is_none"`), so such a property is
/// never `null` and its nullable type collapses to the plain one. Then `required` goes (clients
/// validate types, and which fields appear when is in the tool descriptions) and so does
/// `minimum: 0` (from unsigned integers).
fn compact_output(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let required: Vec<String> = o
                .remove("required")
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            if let Some(Value::Object(props)) = o.get_mut("properties") {
                for (name, p) in props.iter_mut() {
                    if !required.contains(name) {
                        drop_null(p);
                    }
                }
            }
            if o.get("minimum") == Some(&json!(0)) {
                o.remove("minimum");
            }
            for child in o.values_mut() {
                compact_output(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(compact_output),
        _ => {}
    }
}

/// `{"type": ["T", "null"]}` → `{"type": "T"}`; `{"anyOf": [S, {"type": "null"}]}` → `S`.
fn drop_null(p: &mut Value) {
    let Value::Object(o) = p else { return };
    if let Some(Value::Array(types)) = o.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if kept.len() == 1 {
            o.insert("type".into(), kept[0].clone());
        }
    }
    let single = match o.get("anyOf") {
        Some(Value::Array(alts)) => {
            let kept: Vec<&Value> = alts
                .iter()
                .filter(|a| **a != json!({"type": "null"}))
                .collect();
            (kept.len() == 1 && alts.len() == 2).then(|| kept[0].clone())
        }
        _ => None,
    };
    if let Some(Value::Object(inner)) = single {
        o.remove("anyOf");
        for (k, val) in inner {
            o.entry(k).or_insert(val);
        }
    }
}

/// Remove annotation keywords everywhere below a schema node (not inside `properties` maps,
/// whose keys are field names).
fn strip_annotations(v: &mut Value, is_schema: bool) {
    match v {
        Value::Object(o) => {
            if is_schema {
                for k in ["description", "title", "$schema", "format", "default"] {
                    o.remove(k);
                }
            }
            for (k, child) in o.iter_mut() {
                // `properties` and `$defs` map names to schemas; everything else is a schema,
                // a list of schemas, or a value.
                let child_is_map = matches!(k.as_str(), "properties" | "$defs");
                if child_is_map {
                    if let Value::Object(m) = child {
                        for s in m.values_mut() {
                            strip_annotations(s, true);
                        }
                    }
                } else if matches!(k.as_str(), "enum" | "const" | "required") {
                    // values, not schemas
                } else {
                    strip_annotations(child, true);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                strip_annotations(x, is_schema);
            }
        }
        _ => {}
    }
}

/// Rewrite a schemars root schema into the portable subset.
pub fn portable(root: &JsonObject) -> JsonObject {
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = match rewrite(&Value::Object(root.clone()), &defs, 0) {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    };
    // The root is always an object with properties and required (possibly empty), and carries no
    // description of its own (the tool's description says it).
    out.remove("description");
    out.insert("type".into(), json!("object"));
    out.entry("properties").or_insert_with(|| json!({}));
    out.entry("required").or_insert_with(|| json!([]));
    out
}

/// Deep enough for any argument struct; a cycle in `$defs` stops here instead of recursing.
const MAX_DEPTH: usize = 16;

fn rewrite(node: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Some(obj) = node.as_object() else {
        return json!({});
    };
    if depth > MAX_DEPTH {
        return json!({});
    }
    // `$ref` → the definition, with this node's own description winning.
    if let Some(target) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        let mut resolved = rewrite(target, defs, depth + 1);
        merge_description(obj, &mut resolved);
        return resolved;
    }
    // `anyOf`/`oneOf` of one schema and `null` (an `Option`) → that schema.
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = obj.get(key).and_then(Value::as_array) {
            let non_null: Vec<&Value> = alts
                .iter()
                .filter(|a| a.get("type") != Some(&json!("null")))
                .collect();
            if let Some(consts) = const_strings(&non_null) {
                return string_enum(obj, consts, &non_null);
            }
            if let [only] = non_null.as_slice() {
                let mut inner = rewrite(only, defs, depth + 1);
                merge_description(obj, &mut inner);
                return inner;
            }
        }
    }
    let mut out = JsonObject::new();
    for (k, v) in obj {
        match k.as_str() {
            "type" => {
                if let Some(t) = scalar_type(v) {
                    out.insert("type".into(), json!(t));
                }
            }
            "properties" => {
                if let Some(props) = v.as_object() {
                    let props: JsonObject = props
                        .iter()
                        .map(|(name, p)| (name.clone(), rewrite(p, defs, depth + 1)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                out.insert("items".into(), rewrite(v, defs, depth + 1));
            }
            "enum" => {
                let vals: Vec<Value> = v
                    .as_array()
                    .map(|a| a.iter().filter(|x| !x.is_null()).cloned().collect())
                    .unwrap_or_default();
                out.insert("enum".into(), Value::Array(vals));
            }
            "format" => {}
            other if KEYWORDS.contains(&other) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    if let Some(default) = obj.get("default").filter(|d| !d.is_null()) {
        let d = match default {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let text = match out.get("description").and_then(Value::as_str) {
            Some(desc) if desc.contains("default") => desc.to_string(),
            Some(desc) => format!("{desc} (default: {d})"),
            None => format!("Default: {d}."),
        };
        out.insert("description".into(), json!(text));
    }
    if out.get("type") == Some(&json!("object")) {
        out.entry("properties").or_insert_with(|| json!({}));
    }
    Value::Object(out)
}

/// Put the referring node's description on the resolved schema (an enum's values stay in its
/// `enum`, which every provider reads).
fn merge_description(outer: &JsonObject, resolved: &mut Value) {
    let (Some(d), Some(o)) = (
        outer.get("description").and_then(Value::as_str),
        resolved.as_object_mut(),
    ) else {
        return;
    };
    o.insert("description".into(), json!(d));
}

/// `["string", "null"]` → `"string"`; `"integer"` stays; anything else is dropped.
fn scalar_type(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if TYPES.contains(&s.as_str()) => Some(s),
        Value::Array(a) => {
            let non_null: Vec<&str> = a
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match non_null.as_slice() {
                [one] if TYPES.contains(one) => Some(one),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The string constants of a `oneOf` of `{"const": …}` / `{"enum": [...]}` alternatives (schemars'
/// form of an enum whose variants carry doc comments).
fn const_strings(alts: &[&Value]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for a in alts {
        if let Some(c) = a.get("const").and_then(Value::as_str) {
            out.push(c.to_string());
        } else if let Some(e) = a.get("enum").and_then(Value::as_array) {
            for v in e {
                out.push(v.as_str()?.to_string());
            }
        } else {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// One `{"type": "string", "enum": [...]}` whose description lists what each value means.
fn string_enum(obj: &JsonObject, consts: Vec<String>, alts: &[&Value]) -> Value {
    let meanings: Vec<String> = alts
        .iter()
        .filter_map(|a| {
            let c = a.get("const").and_then(Value::as_str)?;
            let d = a.get("description").and_then(Value::as_str)?;
            Some(format!("{c}: {d}"))
        })
        .collect();
    let mut desc = obj
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !meanings.is_empty() && !consts.iter().all(|c| desc.contains(c.as_str())) {
        if !desc.is_empty() {
            desc.push(' ');
        }
        desc.push_str(&meanings.join("; "));
    }
    let mut out = JsonObject::new();
    out.insert("type".into(), json!("string"));
    out.insert("enum".into(), json!(consts));
    if !desc.is_empty() {
        out.insert("description".into(), json!(desc));
    }
    Value::Object(out)
}

/// Every way `tool`'s declaration breaks the portable rules (empty when it is accepted by all of
/// Anthropic, OpenAI and Gemini as their function-calling documentation states them).
pub fn violations(tool: &rmcp::model::Tool) -> Vec<String> {
    let mut v = Vec::new();
    let name = tool.name.as_ref();
    let name_ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        v.push(format!(
            "{name}: name must match ^[A-Za-z_][A-Za-z0-9_-]{{0,63}}$"
        ));
    }
    match tool.description.as_deref() {
        None | Some("") => v.push(format!("{name}: no description")),
        Some(d) if d.chars().count() > MAX_DESCRIPTION => v.push(format!(
            "{name}: description longer than {MAX_DESCRIPTION} characters"
        )),
        Some(_) => {}
    }
    let root = tool.input_schema.as_ref();
    for k in [
        "anyOf", "oneOf", "allOf", "not", "if", "then", "else", "enum",
    ] {
        if root.contains_key(k) {
            v.push(format!("{name}: `{k}` at the root of inputSchema"));
        }
    }
    if root.get("type") != Some(&json!("object")) {
        v.push(format!("{name}: inputSchema type is not \"object\""));
    }
    let props = root.get("properties").and_then(Value::as_object);
    if props.is_none() {
        v.push(format!("{name}: inputSchema has no properties object"));
    }
    match root.get("required").and_then(Value::as_array) {
        None => v.push(format!(
            "{name}: inputSchema has no top-level required array"
        )),
        Some(req) => {
            for r in req {
                let known = r
                    .as_str()
                    .is_some_and(|r| props.is_some_and(|p| p.contains_key(r)));
                if !known {
                    v.push(format!("{name}: required {r} is not a property"));
                }
            }
        }
    }
    for (k, _) in root {
        if !KEYWORDS.contains(&k.as_str()) {
            v.push(format!("{name}: keyword `{k}` at the root"));
        }
    }
    if let Some(props) = props {
        for (p, s) in props {
            check_node(&format!("{name}.{p}"), s, true, &mut v);
        }
    }
    match &tool.output_schema {
        Some(out) if out.get("type") == Some(&json!("object")) => {}
        Some(_) => v.push(format!("{name}: outputSchema type is not \"object\"")),
        None => {}
    }
    v
}

fn check_node(at: &str, node: &Value, is_property: bool, v: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        v.push(format!("{at}: schema is not an object"));
        return;
    };
    for k in obj.keys() {
        if !KEYWORDS.contains(&k.as_str()) {
            v.push(format!("{at}: keyword `{k}` is not portable"));
        }
    }
    let ty = obj.get("type").and_then(Value::as_str);
    match ty {
        Some(t) if TYPES.contains(&t) => {}
        _ => v.push(format!("{at}: `type` must be one of {TYPES:?}")),
    }
    if is_property && obj.get("description").and_then(Value::as_str).is_none() {
        v.push(format!("{at}: no description"));
    }
    if let Some(e) = obj.get("enum") {
        let all_strings = e
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
        if !all_strings || ty != Some("string") {
            v.push(format!("{at}: enum must be non-empty strings on a string"));
        }
    }
    match ty {
        Some("array") => match obj.get("items") {
            Some(items) => check_node(&format!("{at}[]"), items, false, v),
            None => v.push(format!("{at}: array without items")),
        },
        Some("object") => match obj.get("properties").and_then(Value::as_object) {
            Some(props) => {
                for (p, s) in props {
                    check_node(&format!("{at}.{p}"), s, true, v);
                }
            }
            None => v.push(format!("{at}: object without properties")),
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn options_refs_and_documented_enums_become_plain_properties() {
        let raw = obj(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Args",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "book_id": {"type": "string", "pattern": "^[a-z]+$", "description": "Book."},
                "user_id": {"type": ["string", "null"], "description": "User."},
                "limit": {"type": ["integer", "null"], "format": "uint64", "minimum": 1,
                          "default": 100, "description": "Page size."},
                "scope": {"anyOf": [{"$ref": "#/$defs/Scope"}, {"type": "null"}],
                          "description": "How much."}
            },
            "required": ["book_id"],
            "$defs": {"Scope": {"oneOf": [
                {"const": "file", "type": "string", "description": "One file."},
                {"const": "book", "type": "string", "description": "The whole book."}
            ]}}
        }));
        let p = portable(&raw);
        assert_eq!(
            Value::Object(p.clone()),
            json!({
                "type": "object",
                "properties": {
                    "book_id": {"type": "string", "description": "Book."},
                    "user_id": {"type": "string", "description": "User."},
                    "limit": {"type": "integer", "minimum": 1,
                              "description": "Page size. (default: 100)"},
                    "scope": {"type": "string", "enum": ["file", "book"],
                              "description": "How much."}
                },
                "required": ["book_id"]
            })
        );
    }

    #[test]
    fn the_checker_catches_what_providers_reject() {
        let tool = |schema: Value| rmcp::model::Tool::new("t", "A tool.", obj(schema));
        let ok = tool(json!({"type": "object", "properties": {
            "a": {"type": "string", "description": "A."}}, "required": ["a"]}));
        assert_eq!(violations(&ok), Vec::<String>::new());
        for bad in [
            json!({"type": "object", "properties": {}, "anyOf": [{"required": []}]}),
            json!({"type": "object", "properties": {}}),
            json!({"type": "object", "properties": {"a": {"type": ["string", "null"],
                   "description": "A."}}, "required": []}),
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}},
                   "required": []}),
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": []}),
            json!({"type": "object", "properties": {}, "required": ["b"]}),
            json!({"type": "object", "properties": {}, "required": [],
                   "additionalProperties": false}),
        ] {
            assert!(!violations(&tool(bad.clone())).is_empty(), "{bad}");
        }
    }
}
