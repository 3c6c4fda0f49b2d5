//! Kubernetes' protobuf request bodies decoded to JSON objects.
//!
//! client-go sends built-in types as `application/vnd.kubernetes.protobuf` (kubectl's
//! `create configmap`, `create deployment`, `auth can-i`, …): the bytes `k8s\0`, then a
//! `runtime.Unknown` envelope naming the `apiVersion` and `kind` around the object's own
//! protobuf encoding. This crate reads that into the JSON the rest of the API server works
//! with, following the shapes in [`schema`]. It refuses what it does not know — an unknown
//! kind, field number or wire type — naming where, rather than dropping data.
//!
//! Written here because no crate maps Kubernetes' protobuf to its JSON: `k8s-pb` has the
//! prost types but no JSON, and `k8s-openapi` has the JSON types but no protobuf.

mod schema;
mod wire;

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::wire::{Reader, WireType};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protobuf body: {path}: {why}")]
pub struct ProtobufError {
    /// Where in the object (`spec.template.spec.containers[0]`, or `envelope`).
    pub path: String,
    /// What is wrong.
    pub why: String,
}

fn error(path: &str, why: impl Into<String>) -> ProtobufError {
    ProtobufError {
        path: if path.is_empty() {
            "envelope".into()
        } else {
            path.to_owned()
        },
        why: why.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    String,
    Int,
    Bool,
    Bytes,
    Time,
    MicroTime,
    Quantity,
    IntOrString,
    FieldsV1,
    Map(Box<Kind>),
    Message(&'static str),
    Inline(&'static str),
}

#[derive(Debug, Clone)]
struct Field {
    name: &'static str,
    kind: Kind,
    repeated: bool,
    keep_zero: bool,
}

type Schema = HashMap<&'static str, HashMap<u32, Field>>;

fn parse_kind(text: &'static str) -> Result<Kind, String> {
    Ok(match text {
        "s" => Kind::String,
        "i" => Kind::Int,
        "b" => Kind::Bool,
        "y" => Kind::Bytes,
        "t" => Kind::Time,
        "mt" => Kind::MicroTime,
        "q" => Kind::Quantity,
        "io" => Kind::IntOrString,
        "fv" => Kind::FieldsV1,
        "m" => Kind::Map(Box::new(Kind::String)),
        "my" => Kind::Map(Box::new(Kind::Bytes)),
        "mq" => Kind::Map(Box::new(Kind::Quantity)),
        _ if text.starts_with('^') => Kind::Inline(&text[1..]),
        _ if text.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => Kind::Message(text),
        _ => return Err(format!("unknown kind {text:?}")),
    })
}

fn parse_schema(text: &'static str) -> Result<Schema, String> {
    let mut schema = Schema::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, fields) = line
            .split_once(':')
            .ok_or_else(|| format!("no ':' in {line:?}"))?;
        let mut parsed = HashMap::new();
        for spec in fields.split_whitespace() {
            let (json, rest) = spec
                .split_once('=')
                .ok_or_else(|| format!("{name}: bad field {spec:?}"))?;
            let keep_zero = rest.ends_with('!');
            let rest = rest.trim_end_matches('!');
            let (number, kind) = rest.split_once(':').unwrap_or((rest, "s"));
            let number: u32 = number
                .parse()
                .map_err(|_| format!("{name}.{json}: bad number"))?;
            let (repeated, kind) = match kind.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
                Some(inner) => (true, inner),
                None => (false, kind),
            };
            let field = Field {
                name: json,
                kind: parse_kind(kind)?,
                repeated,
                keep_zero,
            };
            if parsed.insert(number, field).is_some() {
                return Err(format!("{name}: field number {number} twice"));
            }
        }
        if schema.insert(name.trim(), parsed).is_some() {
            return Err(format!("type {name} twice"));
        }
    }
    for (name, fields) in &schema {
        for field in fields.values() {
            if let Kind::Message(t) | Kind::Inline(t) = field.kind
                && !schema.contains_key(t)
            {
                return Err(format!("{name}.{} refers to unknown type {t}", field.name));
            }
        }
    }
    Ok(schema)
}

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| parse_schema(schema::SCHEMA));

/// Decodes a `application/vnd.kubernetes.protobuf` body into a JSON object with its
/// `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
    let schema = SCHEMA
        .as_ref()
        .map_err(|e| error("", format!("schema: {e}")))?;
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| error("", "does not start with the k8s protobuf prefix"))?;
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &[][..], String::new());
    let mut reader = Reader::new(envelope);
    while let Some((number, wire)) = reader.field().map_err(|e| error("", e))? {
        match (number, wire) {
            (1, WireType::Len) => {
                let mut meta = Reader::new(reader.bytes().map_err(|e| error("", e))?);
                while let Some((n, w)) = meta.field().map_err(|e| error("", e))? {
                    match (n, w) {
                        (1, WireType::Len) => {
                            api_version = meta.string().map_err(|e| error("typeMeta", e))?
                        }
                        (2, WireType::Len) => {
                            kind = meta.string().map_err(|e| error("typeMeta", e))?
                        }
                        _ => meta.skip(w).map_err(|e| error("typeMeta", e))?,
                    }
                }
            }
            (2, WireType::Len) => raw = reader.bytes().map_err(|e| error("", e))?,
            (3, WireType::Len) => encoding = reader.string().map_err(|e| error("", e))?,
            _ => reader.skip(wire).map_err(|e| error("", e))?,
        }
    }
    if !encoding.is_empty() {
        return Err(error(
            "",
            format!("content encoding {encoding:?} is not supported"),
        ));
    }
    let message = schema::KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, m)| *m)
        .ok_or_else(|| {
            error("", format!("{kind} ({api_version}) is not accepted as protobuf by this server; send it as application/json"))
        })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    decode_message(schema, message, raw, "", &mut object)?;
    Ok(object)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn decode_message(
    schema: &Schema,
    message: &str,
    bytes: &[u8],
    path: &str,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    let fields = schema
        .get(message)
        .ok_or_else(|| error(path, format!("type {message} is not known")))?;
    let mut reader = Reader::new(bytes);
    while let Some((number, wire)) = reader.field().map_err(|e| error(path, e))? {
        let Some(field) = fields.get(&number) else {
            return Err(error(
                path,
                format!(
                    "field number {number} of {message} is not supported by this server; send the object as application/json"
                ),
            ));
        };
        let at = join(path, field.name);
        if let Kind::Inline(inner) = field.kind {
            let bytes = reader.bytes().map_err(|e| error(&at, e))?;
            decode_message(schema, inner, bytes, path, out)?;
            continue;
        }
        if field.repeated {
            let values = match &field.kind {
                // Packed repeated integers.
                Kind::Int if wire == WireType::Len => {
                    let mut packed = Reader::new(reader.bytes().map_err(|e| error(&at, e))?);
                    let mut values = Vec::new();
                    while !packed.done() {
                        values.push(Value::Number(Number::from(
                            packed.varint().map_err(|e| error(&at, e))? as i64,
                        )));
                    }
                    values
                }
                kind => vec![decode_value(schema, kind, wire, &mut reader, &at)?],
            };
            let entry = out
                .entry(field.name.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.extend(values);
            }
            continue;
        }
        if let Kind::Map(value_kind) = &field.kind {
            let (key, value) = decode_map_entry(schema, value_kind, wire, &mut reader, &at)?;
            let entry = out
                .entry(field.name.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                map.insert(key, value);
            }
            continue;
        }
        let value = decode_value(schema, &field.kind, wire, &mut reader, &at)?;
        if field.keep_zero || !is_zero(&value) {
            out.insert(field.name.to_owned(), value);
        } else {
            out.remove(field.name);
        }
    }
    Ok(())
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Null => true,
        _ => false,
    }
}

fn check_wire(wire: WireType, wanted: WireType, path: &str) -> Result<(), ProtobufError> {
    if wire == wanted {
        Ok(())
    } else {
        Err(error(
            path,
            format!("wire type {wire:?} where {wanted:?} was expected"),
        ))
    }
}

fn decode_map_entry(
    schema: &Schema,
    value_kind: &Kind,
    wire: WireType,
    reader: &mut Reader<'_>,
    path: &str,
) -> Result<(String, Value), ProtobufError> {
    check_wire(wire, WireType::Len, path)?;
    let mut entry = Reader::new(reader.bytes().map_err(|e| error(path, e))?);
    let (mut key, mut value) = (String::new(), None);
    while let Some((number, wire)) = entry.field().map_err(|e| error(path, e))? {
        match number {
            1 => {
                check_wire(wire, WireType::Len, path)?;
                key = entry.string().map_err(|e| error(path, e))?;
            }
            2 => value = Some(decode_value(schema, value_kind, wire, &mut entry, path)?),
            _ => entry.skip(wire).map_err(|e| error(path, e))?,
        }
    }
    let value = value.unwrap_or_else(|| match value_kind {
        Kind::Bytes | Kind::String | Kind::Quantity => Value::String(String::new()),
        _ => Value::Null,
    });
    Ok((key, value))
}

fn decode_value(
    schema: &Schema,
    kind: &Kind,
    wire: WireType,
    reader: &mut Reader<'_>,
    path: &str,
) -> Result<Value, ProtobufError> {
    let wrap = |e: String| error(path, e);
    Ok(match kind {
        Kind::String => {
            check_wire(wire, WireType::Len, path)?;
            Value::String(reader.string().map_err(wrap)?)
        }
        Kind::Int => {
            check_wire(wire, WireType::Varint, path)?;
            Value::Number(Number::from(reader.varint().map_err(wrap)? as i64))
        }
        Kind::Bool => {
            check_wire(wire, WireType::Varint, path)?;
            Value::Bool(reader.varint().map_err(wrap)? != 0)
        }
        Kind::Bytes => {
            check_wire(wire, WireType::Len, path)?;
            Value::String(
                base64::engine::general_purpose::STANDARD.encode(reader.bytes().map_err(wrap)?),
            )
        }
        Kind::Time | Kind::MicroTime => {
            check_wire(wire, WireType::Len, path)?;
            let mut time = Reader::new(reader.bytes().map_err(wrap)?);
            let (mut seconds, mut nanos) = (0i64, 0i64);
            while let Some((number, wire)) = time.field().map_err(wrap)? {
                match number {
                    1 => seconds = time.varint().map_err(wrap)? as i64,
                    2 => nanos = time.varint().map_err(wrap)? as i64,
                    _ => time.skip(wire).map_err(wrap)?,
                }
            }
            let at = jiff::Timestamp::new(seconds, nanos as i32)
                .map_err(|e| error(path, e.to_string()))?;
            let format = if *kind == Kind::Time {
                "%Y-%m-%dT%H:%M:%SZ"
            } else {
                "%Y-%m-%dT%H:%M:%S.%6fZ"
            };
            Value::String(at.strftime(format).to_string())
        }
        Kind::Quantity => {
            check_wire(wire, WireType::Len, path)?;
            let mut quantity = Reader::new(reader.bytes().map_err(wrap)?);
            let mut text = String::new();
            while let Some((number, wire)) = quantity.field().map_err(wrap)? {
                match number {
                    1 => text = quantity.string().map_err(wrap)?,
                    _ => quantity.skip(wire).map_err(wrap)?,
                }
            }
            Value::String(text)
        }
        Kind::IntOrString => {
            check_wire(wire, WireType::Len, path)?;
            let mut value = Reader::new(reader.bytes().map_err(wrap)?);
            let (mut ty, mut int, mut text) = (0u64, 0i64, String::new());
            while let Some((number, wire)) = value.field().map_err(wrap)? {
                match number {
                    1 => ty = value.varint().map_err(wrap)?,
                    2 => int = value.varint().map_err(wrap)? as i32 as i64,
                    3 => text = value.string().map_err(wrap)?,
                    _ => value.skip(wire).map_err(wrap)?,
                }
            }
            if ty == 1 {
                Value::String(text)
            } else {
                Value::Number(Number::from(int))
            }
        }
        Kind::FieldsV1 => {
            check_wire(wire, WireType::Len, path)?;
            let mut fields = Reader::new(reader.bytes().map_err(wrap)?);
            let mut raw: &[u8] = b"{}";
            while let Some((number, wire)) = fields.field().map_err(wrap)? {
                match number {
                    1 => raw = fields.bytes().map_err(wrap)?,
                    _ => fields.skip(wire).map_err(wrap)?,
                }
            }
            serde_json::from_slice(raw)
                .map_err(|e| error(path, format!("fieldsV1 is not JSON: {e}")))?
        }
        Kind::Message(name) => {
            check_wire(wire, WireType::Len, path)?;
            let mut nested = Map::new();
            decode_message(
                schema,
                name,
                reader.bytes().map_err(wrap)?,
                path,
                &mut nested,
            )?;
            Value::Object(nested)
        }
        Kind::Map(_) | Kind::Inline(_) => {
            return Err(error(
                path,
                "a map or inlined message in an unexpected place",
            ));
        }
    })
}

#[cfg(test)]
mod tests;
