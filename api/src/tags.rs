//! Host tags: a small validated map of string keys to string, boolean or integer values.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::names::check_name;
use crate::{ValidationError, Weight};

/// The most tags one host may carry.
pub const MAX_TAGS: usize = 32;
/// The longest tag key, in characters.
pub const MAX_TAG_KEY_LEN: usize = 64;
/// The longest string tag value, in bytes.
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// A tag key: 1-64 characters of `[A-Za-z0-9._-]`.
pub type TagKey = String;

/// A tag value: a string (at most 256 bytes), a boolean or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    /// A boolean, such as `canary`.
    Bool(bool),
    /// An integer, such as `load_balancing_weight`.
    Int(i64),
    /// A string, such as `az`.
    Str(String),
}

/// A host's validated tags, ordered by key. The known keys `az`, `region`, `instance_id`
/// (strings), `canary` (boolean) and `load_balancing_weight` (1-100) are type-checked.
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
        for (key, value) in map {
            check_name("tags", &key, 1, MAX_TAG_KEY_LEN).map_err(|e| match e {
                ValidationError::Invalid { reason, .. } => {
                    ValidationError::invalid("tags", format!("key {key:?}: {reason}"))
                }
                other => other,
            })?;
            let value = tag_value(&key, value)?;
            tags.insert(key, value);
        }
        Ok(Tags(tags))
    }

    /// Validates tags given as JSON text, the way form bodies carry them.
    pub fn from_json_str(text: &str) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Ok(Tags::default());
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ValidationError::invalid("tags", format!("is not valid JSON: {e}")))?;
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

fn tag_value(key: &str, value: serde_json::Value) -> Result<TagValue, ValidationError> {
    let bad = |what: &str| ValidationError::invalid("tags", format!("{key:?} {what}"));
    let value = match value {
        serde_json::Value::Bool(b) => TagValue::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => TagValue::Int(i),
            None => return Err(bad("must be a string, a boolean or an integer")),
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
        _ => return Err(bad("must be a string, a boolean or an integer")),
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
    Ok(value)
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
        assert!(Tags::from_json(json!({"canary": "yes"})).is_err());
        assert!(Tags::from_json(json!({"load_balancing_weight": 0})).is_err());
        assert!(Tags::from_json(json!({"load_balancing_weight": 101})).is_err());
        assert!(Tags::from_json(json!({"x": 1.5})).is_err());
        assert!(Tags::from_json(json!({"x": null})).is_err());
        assert!(Tags::from_json(json!({"x": [1]})).is_err());
        assert!(Tags::from_json(json!([1])).is_err());
    }

    #[test]
    fn sizes_are_limited() {
        let many: serde_json::Map<_, _> = (0..33).map(|i| (format!("k{i}"), json!(1))).collect();
        assert!(Tags::from_json(serde_json::Value::Object(many)).is_err());
        assert!(Tags::from_json(json!({"k": "v".repeat(257)})).is_err());
        assert!(Tags::from_json(json!({"k": "v".repeat(256)})).is_ok());
        assert!(Tags::from_json(json!({"k".repeat(65): 1})).is_err());
        assert!(Tags::from_json(json!({"": 1})).is_err());
        assert!(Tags::from_json(json!({"a b": 1})).is_err());
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
