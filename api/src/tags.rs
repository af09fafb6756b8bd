//! Host tags: a small validated map of keys to JSON values.
//!
//! The known keys are typed, because the server routes on them: `az`, `region` and
//! `instance_id` are strings, `canary` a boolean and `load_balancing_weight` an integer
//! 1-100. Any other key may hold any JSON value (a float, `null`, a list, an object), as the
//! seed stored them: refusing one made the whole heartbeat a 400 and the host vanished from
//! discovery. What stays bounded is size (SPEC 2): at most 32 keys of 1-64 printable
//! characters, each value at most 256 bytes (a string's text, any other value's compact
//! JSON), 4 KiB for the whole object. Objects are kept with sorted keys at every depth, so
//! equal tags always serialize to equal bytes (host lists are byte-equal across nodes).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::strict_json::{self, StrictError};
use crate::{ValidationError, Weight};

/// The most tags one host may carry.
pub const MAX_TAGS: usize = 32;
/// The longest tag key, in characters.
pub const MAX_TAG_KEY_LEN: usize = 64;
/// The largest tag value, in bytes: a string's text, or any other value's compact JSON.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// The largest tags object, in bytes of compact JSON.
pub const MAX_TAGS_LEN: usize = 4096;

/// A tag key: 1-64 printable characters (spaces included, control characters not).
pub type TagKey = String;

/// A tag value. The typed variants are what the known keys hold; anything else is kept as
/// the JSON it came as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    /// A boolean, such as `canary`.
    Bool(bool),
    /// An integer that fits an `i64`, such as `load_balancing_weight`.
    Int(i64),
    /// A string, such as `az`.
    Str(String),
    /// Any other JSON value: a float, `null`, a list, an object, or an integer past `i64`.
    /// Objects inside keep their keys sorted.
    Json(serde_json::Value),
}

impl fmt::Display for TagValue {
    /// A string as its text, anything else as compact JSON (what `discovery hosts` shows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagValue::Bool(b) => write!(f, "{b}"),
            TagValue::Int(n) => write!(f, "{n}"),
            TagValue::Str(s) => f.write_str(s),
            TagValue::Json(v) => write!(f, "{v}"),
        }
    }
}

/// A host's validated tags, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<TagKey, TagValue>);

impl Tags {
    /// Validates tags given as a JSON value (which must be an object).
    pub fn from_json(value: serde_json::Value) -> Result<Self, ValidationError> {
        let serde_json::Value::Object(map) = value else {
            return Err(ValidationError::invalid("tags", "must be a JSON object"));
        };
        if map.len() > MAX_TAGS {
            return Err(ValidationError::invalid(
                "tags",
                format!("at most {MAX_TAGS} keys are allowed, got {}", map.len()),
            ));
        }
        let mut tags = BTreeMap::new();
        // Compact JSON size of the whole object: braces, then per key `"key":value` and a
        // comma between keys.
        let mut total = 2 + map.len().saturating_sub(1);
        for (key, value) in map {
            check_key(&key)?;
            total += json_len(&key) + 1;
            let (value, len) = tag_value(&key, value)?;
            total += len;
            tags.insert(key, value);
        }
        if total > MAX_TAGS_LEN {
            return Err(ValidationError::invalid(
                "tags",
                format!("are {total} bytes of JSON; at most {MAX_TAGS_LEN} are allowed"),
            ));
        }
        Ok(Tags(tags))
    }

    /// Validates tags given as JSON text, the way form bodies carry them. An object with a
    /// key given twice is refused.
    pub fn from_json_str(text: &str) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Ok(Tags::default());
        }
        let value = strict_json::from_slice(text.as_bytes()).map_err(|e| match e {
            StrictError::Duplicate { key, depth: 0 } => {
                ValidationError::invalid("tags", format!("key {key:?} is given twice"))
            }
            StrictError::Duplicate { key, .. } => ValidationError::invalid(
                "tags",
                format!("key {key:?} is given twice in one of the values"),
            ),
            StrictError::Syntax(e) => {
                ValidationError::invalid("tags", format!("is not valid JSON: {e}"))
            }
        })?;
        Tags::from_json(value)
    }

    /// Builds tags from `key=value` pairs, the way the CLI takes them: `true`/`false` become
    /// booleans and decimal numbers integers.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationError> {
        let mut map = serde_json::Map::new();
        for (k, v) in pairs {
            let value = match v {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => match v.parse::<i64>() {
                    Ok(n) => n.into(),
                    Err(_) => v.into(),
                },
            };
            map.insert(k.to_owned(), value);
        }
        Tags::from_json(serde_json::Value::Object(map))
    }

    /// The value of one tag.
    pub fn get(&self, key: &str) -> Option<&TagValue> {
        self.0.get(key)
    }

    /// A string tag's value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(TagValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The `canary` tag, false when absent.
    pub fn canary(&self) -> bool {
        matches!(self.0.get("canary"), Some(TagValue::Bool(true)))
    }

    /// The `load_balancing_weight` tag, when set.
    pub fn weight(&self) -> Option<Weight> {
        match self.0.get("load_balancing_weight") {
            Some(TagValue::Int(n)) => Weight::new(*n).ok(),
            _ => None,
        }
    }

    /// Iterates over the tags in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TagValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a key: 1-64 printable characters.
fn check_key(key: &str) -> Result<(), ValidationError> {
    let chars = key.chars().count();
    if !(1..=MAX_TAG_KEY_LEN).contains(&chars) {
        return Err(ValidationError::invalid(
            "tags",
            format!("key {key:?}: must be 1 to {MAX_TAG_KEY_LEN} characters long, got {chars}"),
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(ValidationError::invalid(
            "tags",
            format!("key {key:?}: control character {c:?} is not allowed"),
        ));
    }
    Ok(())
}

/// Counts bytes written, to size JSON without building it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as compact JSON.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and these values (strings, JSON values) always
    // serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Validates one value against its key's type and the size bound; returns it with its
/// compact JSON length.
fn tag_value(key: &str, value: serde_json::Value) -> Result<(TagValue, usize), ValidationError> {
    let bad = |what: &str| ValidationError::invalid("tags", format!("{key:?} {what}"));
    let len = json_len(&value);
    let value = match value {
        serde_json::Value::Bool(b) => TagValue::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => TagValue::Int(i),
            None => TagValue::Json(serde_json::Value::Number(n)),
        },
        serde_json::Value::String(s) => {
            if s.len() > MAX_TAG_VALUE_LEN {
                return Err(bad(&format!(
                    "is {} bytes long; at most {MAX_TAG_VALUE_LEN} are allowed",
                    s.len()
                )));
            }
            TagValue::Str(s)
        }
        mut other => {
            if len > MAX_TAG_VALUE_LEN {
                return Err(bad(&format!(
                    "is {len} bytes of JSON; at most {MAX_TAG_VALUE_LEN} are allowed"
                )));
            }
            // Sorted keys at every depth even if some crate turns on serde_json's
            // `preserve_order` (a no-op otherwise): nodes must render equal tags equally.
            other.sort_all_objects();
            TagValue::Json(other)
        }
    };
    match (key, &value) {
        ("az" | "region" | "instance_id", TagValue::Str(_)) => {}
        ("az" | "region" | "instance_id", _) => return Err(bad("must be a string")),
        ("canary", TagValue::Bool(_)) => {}
        ("canary", _) => return Err(bad("must be a boolean")),
        ("load_balancing_weight", TagValue::Int(n)) if (1..=100).contains(n) => {}
        ("load_balancing_weight", _) => return Err(bad("must be an integer from 1 to 100")),
        _ => {}
    }
    Ok((value, len))
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Tags::from_json(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_keys_are_type_checked() {
        assert!(
            Tags::from_json(json!({"az": "a", "canary": true, "load_balancing_weight": 5})).is_ok()
        );
        assert!(Tags::from_json(json!({"az": 1})).is_err());
        assert!(Tags::from_json(json!({"region": null})).is_err());
        assert!(Tags::from_json(json!({"instance_id": ["i"]})).is_err());
        assert!(Tags::from_json(json!({"canary": "yes"})).is_err());
        assert!(Tags::from_json(json!({"load_balancing_weight": 0})).is_err());
        assert!(Tags::from_json(json!({"load_balancing_weight": 101})).is_err());
        assert!(Tags::from_json(json!({"load_balancing_weight": 5.0})).is_err());
        assert!(Tags::from_json(json!([1])).is_err());
    }

    #[test]
    fn other_keys_keep_any_json_value_as_the_seed_did() {
        let t = Tags::from_json_str(
            r#"{"ratio": 1.5, "gone": null, "list": [1, "a"], "nested": {"b": 2, "a": {"y": 1, "x": 0}}, "big": 18446744073709551615, "with space": "ok"}"#,
        )
        .unwrap();
        assert_eq!(t.get("ratio"), Some(&TagValue::Json(json!(1.5))));
        assert_eq!(t.get("gone"), Some(&TagValue::Json(json!(null))));
        assert_eq!(t.get_str("with space"), Some("ok"));
        // Canonical: sorted keys at every depth, whatever order they came in.
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"big":18446744073709551615,"gone":null,"list":[1,"a"],"nested":{"a":{"x":0,"y":1},"b":2},"ratio":1.5,"with space":"ok"}"#
        );
        let reordered =
            Tags::from_json_str(r#"{"nested": {"a": {"x": 0, "y": 1}, "b": 2}}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&reordered).unwrap(),
            r#"{"nested":{"a":{"x":0,"y":1},"b":2}}"#
        );
        // What a node serializes, a peer reads back to the same tags.
        let back = Tags::from_json_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(TagValue::Json(json!([1, "a"])).to_string(), r#"[1,"a"]"#);
        assert_eq!(TagValue::Str("a b".into()).to_string(), "a b");
    }

    #[test]
    fn canonical_text_is_a_fixed_point_so_nodes_agree_on_it() {
        // What one node stores (and sends), the next parses and stores: the text must not
        // drift, or equal states would render different bytes.
        for value in [
            "1e5",
            "-0",
            "-0.0",
            "1.0",
            "0.1",
            "18446744073709551615",
            "-9223372036854775808",
            r#""\u00e9\n""#,
            r#"{"b":[{"d":1,"c":2}],"a":null}"#,
        ] {
            let first = Tags::from_json_str(&format!(r#"{{"k":{value}}}"#)).unwrap();
            let text = serde_json::to_string(&first).unwrap();
            let second = Tags::from_json_str(&text).unwrap();
            assert_eq!(second, first, "{value}");
            assert_eq!(serde_json::to_string(&second).unwrap(), text, "{value}");
        }
    }

    #[test]
    fn sizes_are_limited() {
        let many: serde_json::Map<_, _> = (0..33).map(|i| (format!("k{i}"), json!(1))).collect();
        assert!(Tags::from_json(serde_json::Value::Object(many)).is_err());
        let most: serde_json::Map<_, _> = (0..32).map(|i| (format!("k{i}"), json!(1))).collect();
        assert!(Tags::from_json(serde_json::Value::Object(most)).is_ok());
        assert!(Tags::from_json(json!({"k": "v".repeat(257)})).is_err());
        assert!(Tags::from_json(json!({"k": "v".repeat(256)})).is_ok());
        // A non-string value is measured as compact JSON: 256 bytes pass, 257 do not.
        let list_of = |n: usize| json!(["x".repeat(n - 4)]);
        assert_eq!(json_len(&list_of(256)), 256);
        assert!(Tags::from_json(json!({"k": list_of(256)})).is_ok());
        assert!(Tags::from_json(json!({"k": list_of(257)})).is_err());
        assert!(Tags::from_json(json!({"k".repeat(65): 1})).is_err());
        assert!(Tags::from_json(json!({"é".repeat(64): 1})).is_ok());
        assert!(Tags::from_json(json!({"": 1})).is_err());
        assert!(Tags::from_json(json!({"a\nb": 1})).is_err());
        assert!(Tags::from_json(json!({"a\u{7f}": 1})).is_err());
        assert!(Tags::from_json(json!({"a b": 1})).is_ok());
    }

    #[test]
    fn the_whole_object_is_limited_to_4_kib() {
        // 16 keys `kNN` with 240-byte strings: 16 * (5 + 1 + 242) + 15 + 2 = 3985 bytes.
        let fits: serde_json::Map<_, _> = (10..26)
            .map(|i| (format!("k{i}"), json!("v".repeat(240))))
            .collect();
        let fits = Tags::from_json(serde_json::Value::Object(fits)).unwrap();
        assert_eq!(serde_json::to_string(&fits).unwrap().len(), 3985);
        // One more byte-heavy key passes 4096.
        let over: serde_json::Map<_, _> = (10..27)
            .map(|i| (format!("k{i}"), json!("v".repeat(240))))
            .collect();
        let err = Tags::from_json(serde_json::Value::Object(over)).unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
        // Exactly at the bound passes: the size is counted, not estimated.
        let mut exact: serde_json::Map<_, _> = (10..26)
            .map(|i| (format!("k{i}"), json!("v".repeat(240))))
            .collect();
        // `,"z":"…"` adds 7 bytes plus the text: 3985 + 7 + 104 = 4096.
        exact.insert("z".into(), json!("v".repeat(104)));
        let exact = Tags::from_json(serde_json::Value::Object(exact.clone())).unwrap();
        assert_eq!(serde_json::to_string(&exact).unwrap().len(), 4096);
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let err = Tags::from_json_str(r#"{"az":"a","az":"b"}"#).unwrap_err();
        assert!(err.to_string().contains("\"az\" is given twice"), "{err}");
    }

    #[test]
    fn pairs_become_typed_values() {
        let t = Tags::from_pairs([
            ("canary", "true"),
            ("load_balancing_weight", "7"),
            ("az", "z"),
        ])
        .unwrap();
        assert!(t.canary());
        assert_eq!(t.weight().unwrap().get(), 7);
        assert_eq!(t.get_str("az"), Some("z"));
    }
}
