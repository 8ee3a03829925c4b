//! Checks a policy file's object the way kube-apiserver does before any CEL rule runs: the
//! CRD's openAPIV3Schema (types, patterns, enums, bounds, required fields), the strict
//! unknown-field check `kubectl apply` asks for (`fieldValidation=Strict`), and the object's
//! metadata (`metadata.name` is a DNS-1123 subdomain). Each problem quotes the bad value and,
//! where one is close, suggests the spelling the API server takes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// One schema problem: dotted field path and what is wrong.
pub type Found = (String, String);

/// Fields of `metadata` the API server knows (`ObjectMeta`); any other is an unknown field.
const OBJECT_META: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// Checks `object` (a whole ScalingPolicy as parsed from YAML) against `schema`, the CRD's
/// openAPIV3Schema; `apiVersion` and `kind` are checked by the caller.
pub fn check(object: &Value, schema: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    let Some(fields) = object.as_object() else {
        out.push((
            "(root)".into(),
            format!("must be a mapping, got {}", describe(object)),
        ));
        return out;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, value) in fields {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => metadata(value, &mut out),
            _ => match properties.and_then(|p| p.get(key)) {
                Some(sub) => walk(value, sub, key, &mut out),
                None => {
                    let known = ["apiVersion", "kind", "metadata"].into_iter().chain(
                        properties
                            .into_iter()
                            .flat_map(|p| p.keys().map(String::as_str)),
                    );
                    out.push((key.clone(), unknown_field(key, known)));
                }
            },
        }
    }
    if !fields.contains_key("metadata") {
        out.push((
            "metadata.name".into(),
            "Required value: name is required".into(),
        ));
    }
    required(fields, schema, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Values the API server drops before validating (null in a field that is not nullable).
fn pruned(value: &Value, schema: &Value) -> bool {
    value.is_null()
        && !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

fn walk(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    if pruned(value, schema) || value.is_null() {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        if !(value.is_string() || is_integer(value)) {
            out.push((
                path.into(),
                format!(
                    "{} must be quoted, e.g. \"{}\": quantities are integers or strings",
                    describe(value),
                    plain(value)
                ),
            ));
        }
        return;
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "object" => object(value, schema, path, out),
        "array" => array(value, schema, path, out),
        "string" => string(value, schema, path, out),
        "integer" => integer(value, schema, path, out),
        "number" if !value.is_number() => {
            out.push((path.into(), format!("{} must be a number", describe(value))));
        }
        "boolean" if !value.is_boolean() => {
            out.push((
                path.into(),
                format!("{} must be true or false", describe(value)),
            ));
        }
        _ => {}
    }
    enumeration(value, schema, path, out);
}

fn object(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    let Some(fields) = value.as_object() else {
        out.push((
            path.into(),
            format!("{} must be a mapping", describe(value)),
        ));
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, sub_value) in fields {
        let sub_path = join(path, key);
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(sub), _) => walk(sub_value, sub, &sub_path, out),
            (None, Some(extra)) if extra.is_object() => walk(sub_value, extra, &sub_path, out),
            (None, Some(Value::Bool(true))) => {}
            _ => {
                let known = properties
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str));
                out.push((sub_path, unknown_field(key, known)));
            }
        }
    }
    required(fields, schema, path, out);
}

fn required(fields: &Map<String, Value>, schema: &Value, path: &str, out: &mut Vec<Found>) {
    let properties = schema.get("properties");
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let present = fields.get(name).is_some_and(|v| {
            let sub = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
            !pruned(v, sub)
        });
        if !present {
            out.push((
                join(path, name),
                "Required value: this field must be set".into(),
            ));
        }
    }
}

fn array(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    let Some(items) = value.as_array() else {
        out.push((path.into(), format!("{} must be a list", describe(value))));
        return;
    };
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        out.push((
            path.into(),
            format!("has {} items, at most {max} are allowed", items.len()),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        out.push((
            path.into(),
            format!("has {} items, at least {min} are needed", items.len()),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item, item_schema, &format!("{path}[{i}]"), out);
        }
    }
    let set = schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if set {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.push((
                    format!("{path}[{i}]"),
                    format!("duplicate value {}", describe(item)),
                ));
            }
        }
    }
}

fn string(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    let Some(text) = value.as_str() else {
        out.push((
            path.into(),
            format!(
                "{} must be a string (quote it: \"{}\")",
                describe(value),
                plain(value)
            ),
        ));
        return;
    };
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        out.push((
            path.into(),
            format!("{text:?} is {length} characters long, at most {max} are allowed"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        out.push((
            path.into(),
            format!("{text:?} is too short: at least {min} characters are needed"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !matches(pattern, text)
    {
        out.push((path.into(), pattern_message(text, pattern)));
    }
}

fn integer(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    if !is_integer(value) {
        out.push((
            path.into(),
            format!("{} must be a whole number", describe(value)),
        ));
        return;
    }
    let n = value.as_f64().unwrap_or(0.0);
    // The API server stores an int32 field beyond 32 bits; the controller could not read it.
    let (low, high) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    if n < low || n > high {
        out.push((
            path.into(),
            format!("{value} is out of range: at most {high} (a 32-bit integer)"),
        ));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        out.push((path.into(), format!("{value} is below the minimum {min}")));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        out.push((path.into(), format!("{value} is above the maximum {max}")));
    }
}

fn enumeration(value: &Value, schema: &Value, path: &str, out: &mut Vec<Found>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.contains(value) {
        return;
    }
    let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
    let mut message = format!("{} is not one of {}", describe(value), names.join(", "));
    if let Some(text) = value.as_str()
        && let Some(close) = closest(text, names.iter().copied())
    {
        message.push_str(&format!("; did you mean \"{close}\"?"));
    }
    out.push((path.into(), message));
}

/// A whole number as the API server sees it: kubectl sends a float such as `2.0` as `2`.
fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// The value as it appears in a message: strings quoted, everything else as YAML would show it.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        other => other.to_string(),
    }
}

/// The value's text without quotes, for "quote it" hints.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `text` matches the schema's `pattern` (compiled once per pattern).
fn matches(pattern: &str, text: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = match cache.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let compiled = cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok());
    // A pattern this crate cannot compile was accepted by the API server; do not refuse on it.
    compiled.as_ref().is_none_or(|re| re.is_match(text))
}

/// Whether a schema pattern is the duration pattern (`30s`, `10m`, `1h30m`).
fn is_duration_pattern(pattern: &str) -> bool {
    pattern.contains("(ms|s|m|h|d)")
}

fn pattern_message(text: &str, pattern: &str) -> String {
    if is_duration_pattern(pattern) && !pattern.contains("auto") {
        return duration_message(text);
    }
    if is_duration_pattern(pattern) {
        let mut message =
            format!("{text:?} is neither auto nor a duration such as 30s, 10m or 1h30m");
        if let Some(s) = suggest_duration(text) {
            message.push_str(&format!("; did you mean \"{s}\"?"));
        }
        return message;
    }
    format!("{text:?} does not match the pattern {pattern}")
}

/// The message for a duration the API server refuses, with the spelling it takes.
pub fn duration_message(text: &str) -> String {
    let mut message = format!(
        "{text:?} is not a duration: write whole numbers with the units ms, s, m, h or d and no \
         spaces, e.g. 30s, 10m or 1h30m"
    );
    if let Some(s) = suggest_duration(text) {
        message.push_str(&format!("; did you mean \"{s}\"?"));
    }
    message
}

/// The accepted spelling of a duration written another way (`5min` → `5m`, `1h 30m` → `1h30m`,
/// `15sec` → `15s`), when the text is a duration at all.
pub fn suggest_duration(text: &str) -> Option<String> {
    let parsed = humantime::parse_duration(text.trim()).ok()?;
    let millis = parsed.as_millis();
    if millis == 0 {
        return Some("0s".into());
    }
    let mut rest = millis;
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        let n = rest / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest %= size;
        }
    }
    // Below a millisecond nothing the API server takes is close.
    (!out.is_empty() && out != text).then_some(out)
}

fn unknown_field<'a>(key: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    match closest(key, known.clone()) {
        Some(close) => format!("unknown field \"{key}\"; did you mean \"{close}\"?"),
        None => {
            let list: Vec<&str> = known.collect();
            format!(
                "unknown field \"{key}\"; known fields here: {}",
                list.join(", ")
            )
        }
    }
}

/// The known name closest to `text`: same letters ignoring case, else within a small edit
/// distance (a third of the name, at least two edits).
pub fn closest<'a>(text: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = text.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for name in known {
        let d = if name.to_lowercase() == lower {
            0
        } else {
            edit_distance(&lower, &name.to_lowercase())
        };
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, name));
        }
    }
    let limit = (text.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `metadata` as the API server checks it for a namespaced custom resource.
fn metadata(value: &Value, out: &mut Vec<Found>) {
    let Some(fields) = value.as_object() else {
        out.push((
            "metadata".into(),
            format!("{} must be a mapping", describe(value)),
        ));
        return;
    };
    for key in fields.keys() {
        if !OBJECT_META.contains(&key.as_str()) {
            out.push((
                format!("metadata.{key}"),
                unknown_field(key, OBJECT_META.iter().copied()),
            ));
        }
    }
    let name = fields.get("name").and_then(Value::as_str);
    let generate = fields.get("generateName").and_then(Value::as_str);
    match (name, generate) {
        (Some(name), _) => {
            if let Some(why) = dns_subdomain(name) {
                out.push(("metadata.name".into(), name_message(name, &why)));
            }
        }
        (None, Some(_)) => {}
        (None, None) => out.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        )),
    }
    if let Some(namespace) = fields.get("namespace") {
        match namespace.as_str() {
            Some(ns) => {
                if let Some(why) = dns_label(ns) {
                    out.push(("metadata.namespace".into(), name_message(ns, &why)));
                }
            }
            None => out.push((
                "metadata.namespace".into(),
                format!("{} must be a string", describe(namespace)),
            )),
        }
    }
    for map in ["labels", "annotations"] {
        let Some(entries) = fields.get(map) else {
            continue;
        };
        let Some(entries) = entries.as_object() else {
            out.push((
                format!("metadata.{map}"),
                "must be a mapping of strings".into(),
            ));
            continue;
        };
        for (key, v) in entries {
            let path = format!("metadata.{map}.{key}");
            if let Some(why) = qualified_name(key) {
                out.push((path.clone(), format!("key {key:?} {why}")));
            }
            match v.as_str() {
                None => out.push((
                    path,
                    format!(
                        "{} must be a string (quote it: \"{}\")",
                        describe(v),
                        plain(v)
                    ),
                )),
                Some(text) if map == "labels" => {
                    if let Some(why) = label_value(text) {
                        out.push((path, format!("value {text:?} {why}")));
                    }
                }
                Some(_) => {}
            }
        }
    }
}

fn name_message(name: &str, why: &str) -> String {
    let suggestion: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suggestion = suggestion.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut message = format!("{name:?} {why}");
    if !suggestion.is_empty() && suggestion != name {
        message.push_str(&format!("; did you mean \"{suggestion}\"?"));
    }
    message
}

/// Why `name` is not a DNS-1123 subdomain (`metadata.name` of a custom resource), if it is not.
pub fn dns_subdomain(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if name.split('.').any(|part| dns_label(part).is_some()) {
        return Some(
            "must be a lowercase DNS-1123 subdomain: lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
                .into(),
        );
    }
    None
}

/// Why `name` is not a DNS-1123 label (a namespace), if it is not.
pub fn dns_label(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| {
        "must be a lowercase DNS-1123 label: at most 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit"
            .into()
    })
}

/// Why a label or annotation key is not a qualified name (`[prefix/]name`), if it is not.
fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && dns_subdomain(p).is_some()
    {
        return Some("has a prefix that is not a DNS-1123 subdomain".into());
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Some(
            "must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a \
             letter or digit, with an optional DNS subdomain prefix and '/'"
                .into(),
        );
    }
    None
}

/// Why a label value is refused, if it is.
fn label_value(value: &str) -> Option<String> {
    (value.len() > 63 || (!value.is_empty() && !name_chars(value))).then(|| {
        "must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter \
         or digit"
            .into()
    })
}

fn name_chars(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_get_the_spelling_the_api_server_takes() {
        assert_eq!(suggest_duration("5min").as_deref(), Some("5m"));
        assert_eq!(suggest_duration("1h 30m").as_deref(), Some("1h30m"));
        assert_eq!(suggest_duration("15sec").as_deref(), Some("15s"));
        assert_eq!(suggest_duration("90s").as_deref(), Some("1m30s"));
        assert_eq!(suggest_duration("soon"), None);
        let message = duration_message("15sec");
        assert!(message.ends_with("did you mean \"15s\"?"), "{message}");
    }

    #[test]
    fn closest_names_ignore_case_and_small_typos() {
        let known = ["dryRun", "suspend", "interval"];
        assert_eq!(closest("dryrun", known.into_iter()), Some("dryRun"));
        assert_eq!(closest("intervall", known.into_iter()), Some("interval"));
        assert_eq!(closest("replicas", known.into_iter()), None);
        assert_eq!(
            closest("minReplica", ["minReplicas", "maxReplicas"].into_iter()),
            Some("minReplicas")
        );
    }

    #[test]
    fn names_follow_dns_rules() {
        assert!(dns_subdomain("pulsar.prod-1").is_none());
        assert!(dns_subdomain("Bad_Name").is_some());
        assert!(dns_subdomain("-x").is_some());
        assert!(dns_subdomain(&"a".repeat(254)).is_some());
        assert!(dns_label("a.b").is_some());
        assert!(qualified_name("app.kubernetes.io/name").is_none());
        assert!(qualified_name("bad key").is_some());
    }
}
