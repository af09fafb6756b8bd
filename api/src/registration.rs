//! The heartbeat (`POST /v1/registration/{service}`) and the weight override
//! (`POST /v1/loadbalancing/...`) request bodies, parsed from form, multipart or JSON.
//!
//! Every encoding follows one rule for a field given twice: the body is refused, naming the
//! field (a JSON object with a duplicate key included, where serde would keep the last).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::strict_json::{self, StrictError};
use crate::{HostStatus, Port, RepoName, Revision, Tags, ValidationError, Weight};

/// Parses a boolean field the way the seed's Python clients send one: `true/false`,
/// `1/0`, `yes/no`, `on/off` in any case (`requests` sends `True`); empty means false.
pub fn parse_bool(field: &'static str, text: &str) -> Result<bool, ValidationError> {
    const TRUE: [&str; 4] = ["true", "1", "yes", "on"];
    const FALSE: [&str; 5] = ["false", "0", "no", "off", ""];
    let text = text.trim();
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
        Ok(false)
    } else {
        Err(ValidationError::invalid(
            field,
            format!("{text:?} is not a boolean (use true/false, 1/0, yes/no or on/off)"),
        ))
    }
}

/// A validated heartbeat. `ip` is `None` only when `auto_ip` asks the server to use the
/// connecting peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The host's address; `None` with `auto_ip`.
    pub ip: Option<IpAddr>,
    /// The host's port.
    pub port: Port,
    /// The running code's revision.
    pub revision: Revision,
    /// The repository the service is built from, empty when absent.
    pub service_repo_name: RepoName,
    /// The host's tags.
    pub tags: Tags,
    /// The requested time to live in seconds, before the server clamps it.
    pub ttl: Option<u64>,
    /// `up` or `draining`.
    pub status: HostStatus,
    /// Use the connecting peer's address when `ip` is absent.
    pub auto_ip: bool,
}

/// One field's raw value: form fields are text, JSON fields are JSON values.
enum Raw {
    Text(String),
    Json(serde_json::Value),
}

impl Raw {
    /// The value as text: form text as is, JSON strings and numbers in their text form.
    fn text(&self, field: &'static str) -> Result<String, ValidationError> {
        match self {
            Raw::Text(s) => Ok(s.clone()),
            Raw::Json(serde_json::Value::String(s)) => Ok(s.clone()),
            Raw::Json(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Raw::Json(_) => Err(ValidationError::invalid(field, "must be a string")),
        }
    }

    fn integer(&self, field: &'static str, what: &str) -> Result<i64, ValidationError> {
        let bad = || ValidationError::invalid(field, format!("must be {what}"));
        match self {
            Raw::Json(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad),
            Raw::Json(serde_json::Value::String(s)) | Raw::Text(s) => {
                s.trim().parse().map_err(|_| bad())
            }
            Raw::Json(_) => Err(bad()),
        }
    }

    fn boolean(&self, field: &'static str) -> Result<bool, ValidationError> {
        match self {
            Raw::Json(serde_json::Value::Bool(b)) => Ok(*b),
            Raw::Json(serde_json::Value::String(s)) | Raw::Text(s) => parse_bool(field, s),
            Raw::Json(serde_json::Value::Number(n)) => parse_bool(field, &n.to_string()),
            Raw::Json(_) => Err(ValidationError::invalid(
                field,
                "must be a boolean (true/false, 1/0, yes/no or on/off)",
            )),
        }
    }
}

/// The one error for a field (or, in JSON, any object key) given twice.
fn twice(name: &str) -> ValidationError {
    ValidationError::Body(format!("field `{name}` is given twice"))
}

/// The fields of a request body, by name.
struct Fields(BTreeMap<String, Raw>);

impl Fields {
    fn from_form(body: &[u8]) -> Result<Self, ValidationError> {
        Fields::from_text(form_urlencoded::parse(body).into_owned())
    }

    /// Text fields by name, as a form or a multipart body carries them.
    fn from_text(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ValidationError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.contains_key(&k) {
                return Err(twice(&k));
            }
            map.insert(k, Raw::Text(v));
        }
        Ok(Fields(map))
    }

    fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let value = strict_json::from_slice(body).map_err(|e| match e {
            StrictError::Duplicate { key, depth: 0 } => twice(&key),
            StrictError::Duplicate { key, .. } => ValidationError::Body(format!(
                "key {key:?} is given twice in one object (in `tags` or another field's value)"
            )),
            StrictError::Syntax(e) => ValidationError::Body(format!("not valid JSON: {e}")),
        })?;
        let serde_json::Value::Object(obj) = value else {
            return Err(ValidationError::Body("expected a JSON object".into()));
        };
        Ok(Fields(
            obj.into_iter().map(|(k, v)| (k, Raw::Json(v))).collect(),
        ))
    }

    fn take(&mut self, name: &str) -> Option<Raw> {
        self.0.remove(name)
    }
}

impl Registration {
    /// Parses a form body (what `curl -d` sends).
    pub fn from_form(body: &[u8]) -> Result<Self, ValidationError> {
        Registration::from_fields(Fields::from_form(body)?)
    }

    /// Parses a JSON body.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        Registration::from_fields(Fields::from_json(body)?)
    }

    /// Parses text fields by name, as a multipart body (what `curl -F` sends) carries them.
    pub fn from_text_fields(
        fields: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ValidationError> {
        Registration::from_fields(Fields::from_text(fields)?)
    }

    fn from_fields(mut f: Fields) -> Result<Self, ValidationError> {
        let ip_raw = match (f.take("ip"), f.take("ip_address")) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::Body(
                    "give either `ip` or `ip_address`, not both".into(),
                ))
            }
            (a, b) => a.or(b),
        };
        let ip = match ip_raw {
            None => None,
            Some(raw) => {
                let s = raw.text("ip")?;
                // An IPv4 address written as IPv4-mapped IPv6 is the same host.
                Some(
                    s.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| {
                            ValidationError::invalid(
                                "ip",
                                format!("{s:?} is not an IPv4 or IPv6 address literal"),
                            )
                        })?
                        .to_canonical(),
                )
            }
        };
        let auto_ip = match f.take("auto_ip") {
            Some(raw) => raw.boolean("auto_ip")?,
            None => false,
        };
        let port = match f.take("port") {
            Some(raw) => Port::new(raw.integer("port", "an integer from 1 to 65535")?)?,
            None => return Err(ValidationError::Missing("port")),
        };
        let revision = match f.take("revision") {
            Some(raw) => Revision::parse(&raw.text("revision")?)?,
            None => return Err(ValidationError::Missing("revision")),
        };
        let service_repo_name = match f.take("service_repo_name") {
            Some(Raw::Json(serde_json::Value::Null)) | None => RepoName::empty(),
            Some(raw) => RepoName::parse(&raw.text("service_repo_name")?)?,
        };
        let tags = match f.take("tags") {
            None | Some(Raw::Json(serde_json::Value::Null)) => Tags::default(),
            Some(Raw::Text(s)) | Some(Raw::Json(serde_json::Value::String(s))) => {
                Tags::from_json_str(&s)?
            }
            Some(Raw::Json(v)) => Tags::from_json(v)?,
        };
        let ttl = match f.take("ttl") {
            None => None,
            Some(raw) => {
                let n = raw.integer("ttl", "a positive integer number of seconds")?;
                if n <= 0 {
                    return Err(ValidationError::invalid(
                        "ttl",
                        "must be a positive integer number of seconds",
                    ));
                }
                Some(n as u64)
            }
        };
        let status = match f.take("status") {
            None => HostStatus::Up,
            Some(raw) => HostStatus::parse(&raw.text("status")?)?,
        };
        Ok(Registration {
            ip,
            port,
            revision,
            service_repo_name,
            tags,
            ttl,
            status,
            auto_ip,
        })
    }
}

impl Serialize for Registration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(ip) = &self.ip {
            m.serialize_entry("ip", &ip.to_string())?;
        }
        m.serialize_entry("port", &self.port)?;
        m.serialize_entry("revision", &self.revision)?;
        m.serialize_entry("service_repo_name", &self.service_repo_name)?;
        m.serialize_entry("tags", &self.tags)?;
        if let Some(ttl) = self.ttl {
            m.serialize_entry("ttl", &ttl)?;
        }
        m.serialize_entry("status", &self.status)?;
        if self.auto_ip {
            m.serialize_entry("auto_ip", &true)?;
        }
        m.end()
    }
}

/// A weight override request: the field `load_balancing_weight`, 1-100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightUpdate {
    /// The weight to set.
    pub load_balancing_weight: Weight,
}

impl WeightUpdate {
    /// Parses a form body.
    pub fn from_form(body: &[u8]) -> Result<Self, ValidationError> {
        WeightUpdate::from_fields(Fields::from_form(body)?)
    }

    /// Parses a JSON body.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        WeightUpdate::from_fields(Fields::from_json(body)?)
    }

    /// Parses text fields by name, as a multipart body carries them.
    pub fn from_text_fields(
        fields: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ValidationError> {
        WeightUpdate::from_fields(Fields::from_text(fields)?)
    }

    fn from_fields(mut f: Fields) -> Result<Self, ValidationError> {
        let raw = f
            .take("load_balancing_weight")
            .ok_or(ValidationError::Missing("load_balancing_weight"))?;
        let n = raw.integer("load_balancing_weight", "an integer from 1 to 100")?;
        Ok(WeightUpdate {
            load_balancing_weight: Weight::new(n)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_heartbeat_parses_like_the_readme_example() {
        let body = b"ip=10.0.0.7&port=8080&revision=4f2a9c1&tags=%7B%22az%22%3A%22us-east-1a%22%7D";
        let r = Registration::from_form(body).unwrap();
        assert_eq!(r.ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(r.port.get(), 8080);
        assert_eq!(r.tags.get_str("az"), Some("us-east-1a"));
        assert_eq!(r.status, HostStatus::Up);
    }

    #[test]
    fn json_heartbeat_accepts_ip_address_and_object_tags() {
        let body = br#"{"ip_address":"::1","port":"9","revision":"r","tags":{"canary":true},"ttl":30,"status":"draining"}"#;
        let r = Registration::from_json(body).unwrap();
        assert_eq!(r.ip, Some("::1".parse().unwrap()));
        assert_eq!(r.ttl, Some(30));
        assert!(r.tags.canary());
        assert_eq!(r.status, HostStatus::Draining);
        let back = serde_json::to_vec(&r).unwrap();
        assert_eq!(Registration::from_json(&back).unwrap(), r);
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_ipv4_host() {
        let r = Registration::from_form(b"ip=::ffff:10.0.0.7&port=1&revision=r").unwrap();
        assert_eq!(r.ip, Some("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn every_invalid_field_is_refused_with_its_name() {
        let cases: &[(&[u8], &str)] = &[
            (b"port=1&revision=r&ip=foo.example", "ip"),
            (b"port=0&revision=r&ip=1.2.3.4", "port"),
            (b"revision=r&ip=1.2.3.4", "port"),
            (b"port=1&ip=1.2.3.4", "revision"),
            (b"port=1&revision=r&ip=1.2.3.4&ttl=-4", "ttl"),
            (b"port=1&revision=r&ip=1.2.3.4&status=gone", "status"),
            (b"port=1&revision=r&ip=1.2.3.4&tags=nope", "tags"),
            (
                b"port=1&revision=r&ip=1.2.3.4&service_repo_name=a%20b",
                "service_repo_name",
            ),
            (b"port=1&port=2&revision=r&ip=1.2.3.4", "twice"),
        ];
        for (body, word) in cases {
            let err = Registration::from_form(body).unwrap_err().to_string();
            assert!(
                err.contains(word),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn booleans_take_the_forms_python_clients_send() {
        for (text, want) in [
            ("True", true),
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("False", false),
            ("0", false),
            ("NO", false),
            ("off", false),
            ("", false),
        ] {
            assert_eq!(parse_bool("auto_ip", text), Ok(want), "{text:?}");
            let body = format!("port=1&revision=r&auto_ip={text}");
            assert_eq!(
                Registration::from_form(body.as_bytes()).unwrap().auto_ip,
                want
            );
        }
        let err = parse_bool("auto_ip", "maybe").unwrap_err().to_string();
        assert!(err.contains("auto_ip") && err.contains("maybe"), "{err}");
        let json = br#"{"port":1,"revision":"r","auto_ip":"True"}"#;
        assert!(Registration::from_json(json).unwrap().auto_ip);
        assert!(
            Registration::from_json(br#"{"port":1,"revision":"r","auto_ip":1}"#)
                .unwrap()
                .auto_ip
        );
        assert!(Registration::from_json(br#"{"port":1,"revision":"r","auto_ip":[]}"#).is_err());
    }

    #[test]
    fn a_field_given_twice_is_refused_in_every_encoding() {
        let form = Registration::from_form(b"ip=1.2.3.4&port=1&revision=r&revision=s");
        let json =
            Registration::from_json(br#"{"ip":"1.2.3.4","port":1,"revision":"r","revision":"s"}"#);
        let text = Registration::from_text_fields(
            [
                ("ip", "1.2.3.4"),
                ("port", "1"),
                ("revision", "r"),
                ("revision", "s"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        for result in [form, json, text] {
            assert_eq!(
                result.unwrap_err(),
                ValidationError::Body("field `revision` is given twice".into())
            );
        }
        let weight = [
            WeightUpdate::from_form(b"load_balancing_weight=1&load_balancing_weight=2"),
            WeightUpdate::from_json(br#"{"load_balancing_weight":1,"load_balancing_weight":2}"#),
        ];
        for result in weight {
            assert!(result
                .unwrap_err()
                .to_string()
                .contains("`load_balancing_weight` is given twice"));
        }
        let in_tags = Registration::from_json(
            br#"{"ip":"1.2.3.4","port":1,"revision":"r","tags":{"az":"a","az":"b"}}"#,
        )
        .unwrap_err();
        assert!(
            in_tags.to_string().contains("\"az\" is given twice"),
            "{in_tags}"
        );
        let in_form_tags = Registration::from_form(
            b"ip=1.2.3.4&port=1&revision=r&tags=%7B%22az%22%3A%22a%22%2C%22az%22%3A%22b%22%7D",
        )
        .unwrap_err();
        assert!(
            in_form_tags.to_string().contains("\"az\" is given twice"),
            "{in_form_tags}"
        );
    }

    #[test]
    fn multipart_text_fields_parse_like_a_form() {
        let fields = [
            ("ip", "10.0.0.7"),
            ("port", "8080"),
            ("revision", "r"),
            ("tags", r#"{"x":[1]}"#),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let from_text = Registration::from_text_fields(fields).unwrap();
        let from_form = Registration::from_form(
            b"ip=10.0.0.7&port=8080&revision=r&tags=%7B%22x%22%3A%5B1%5D%7D",
        )
        .unwrap();
        assert_eq!(from_text, from_form);
    }

    #[test]
    fn weight_updates_are_range_checked() {
        assert_eq!(
            WeightUpdate::from_form(b"load_balancing_weight=40")
                .unwrap()
                .load_balancing_weight
                .get(),
            40
        );
        assert!(WeightUpdate::from_json(br#"{"load_balancing_weight":0}"#).is_err());
        assert!(WeightUpdate::from_form(b"").is_err());
    }
}
