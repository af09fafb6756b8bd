//! JSON parsing that refuses an object with the same key twice, at any depth.
//!
//! `serde_json::Value` keeps the last of two equal keys without a word, while a form with a
//! field given twice is refused. One rule for every body (issue 10): a duplicate is
//! refused with a 400 naming the key, in form, multipart and JSON bodies alike, and in tags
//! (which would otherwise depend on which copy a parser keeps). This module does no IO and
//! keeps serde_json's own bounds (its recursion limit guards the stack).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a JSON text was refused.
#[derive(Debug)]
pub(crate) enum StrictError {
    /// The same key twice in one object, `depth` objects or lists deep (0: the top object).
    Duplicate { key: String, depth: usize },
    /// Not JSON.
    Syntax(serde_json::Error),
}

/// Parses `text` as JSON, refusing duplicate keys in every object.
pub(crate) fn from_slice(text: &[u8]) -> Result<Value, StrictError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = StrictSeed {
        depth: 0,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    // A duplicate is recorded where it is found (serde's error carries only text); any
    // other error is syntax.
    value.map_err(|e| match duplicate.into_inner() {
        Some((key, depth)) => StrictError::Duplicate { key, depth },
        None => StrictError::Syntax(e),
    })
}

/// The first duplicate key found and the depth of its object.
type Found = RefCell<Option<(String, usize)>>;

/// Deserializes one JSON value `depth` levels deep, refusing duplicate keys.
struct StrictSeed<'a> {
    depth: usize,
    duplicate: &'a Found,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor {
            depth: self.depth,
            duplicate: self.duplicate,
        })
    }
}

struct StrictVisitor<'a> {
    depth: usize,
    duplicate: &'a Found,
}

impl<'a> StrictVisitor<'a> {
    fn inner(&self) -> StrictSeed<'a> {
        StrictSeed {
            depth: self.depth + 1,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> Visitor<'de> for StrictVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is always a number.
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictSeed {
            depth: self.depth,
            duplicate: self.duplicate,
        }
        .deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.inner())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let message = format!("duplicate key {key:?}");
                *self.duplicate.borrow_mut() = Some((key, self.depth));
                return Err(de::Error::custom(message));
            }
            let value = access.next_value_seed(self.inner())?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_named() {
        for (text, key, at) in [
            (r#"{"a":1,"a":2}"#, "a", 0),
            (r#"{"x":{"b":1,"b":1}}"#, "b", 1),
            (
                r#"[{"k y at line 3":null,"k y at line 3":[]}]"#,
                "k y at line 3",
                1,
            ),
        ] {
            match from_slice(text.as_bytes()) {
                Err(StrictError::Duplicate { key: k, depth }) => {
                    assert_eq!((k.as_str(), depth), (key, at), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn parses_like_serde_json_otherwise() {
        for text in [
            r#"{"a":1,"b":[1.5,null,true,"s"],"c":{"d":-3,"e":18446744073709551615}}"#,
            "[]",
            "\"x\"",
            "0.1",
        ] {
            let ours = from_slice(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
        assert!(matches!(from_slice(b"{"), Err(StrictError::Syntax(_))));
        // serde_json's recursion limit holds through our visitor: an error, not a stack
        // overflow.
        let deep = "[".repeat(100_000);
        assert!(matches!(
            from_slice(deep.as_bytes()),
            Err(StrictError::Syntax(_))
        ));
        let deep = r#"{"a":"#.repeat(100_000);
        assert!(matches!(
            from_slice(deep.as_bytes()),
            Err(StrictError::Syntax(_))
        ));
        assert!(matches!(from_slice(b"{} x"), Err(StrictError::Syntax(_))));
    }
}
