//! Validated scalar values: service and repository names, revisions, ports and weights.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValidationError;

/// The longest service or repository name, in characters.
pub const MAX_NAME_LEN: usize = 128;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a name of `[A-Za-z0-9._-]` with a length in `min..=max`.
pub(crate) fn check_name(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    if s.len() < min || s.len() > max {
        return Err(ValidationError::invalid(
            field,
            format!("must be {min} to {max} characters long, got {}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| !is_name_char(*c)) {
        return Err(ValidationError::invalid(
            field,
            format!("character {c:?} is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"),
        ));
    }
    Ok(())
}

/// Checks a name that travels as one URL path segment (`/v1/registration/{service}`): the
/// rules of [`check_name`], and not `.` or `..`, which URL clients resolve as directory steps
/// (RFC 3986 5.2.4) so that a service so named could never be read or deleted by URL.
fn check_segment_name(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    check_name(field, s, min, max)?;
    if s == "." || s == ".." {
        return Err(ValidationError::invalid(
            field,
            format!(
                "{s:?} is not allowed: URLs read it as a directory step, so it could not be \
                 used in a path; use at least one letter, digit, '_' or '-'"
            ),
        ));
    }
    Ok(())
}

macro_rules! shared_str_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

shared_str_newtype!(
    /// A service name: 1-128 characters of `[A-Za-z0-9._-]`, not `.` or `..`. Cheap to clone.
    ServiceName
);
shared_str_newtype!(
    /// A repository name: up to 128 characters of `[A-Za-z0-9._-]`, not `.` or `..`, empty
    /// when absent.
    RepoName
);
shared_str_newtype!(
    /// The running code's revision: 1-128 printable ASCII characters.
    Revision
);

impl ServiceName {
    /// Validates a service name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_segment_name("service", s, 1, MAX_NAME_LEN)?;
        Ok(ServiceName(s.into()))
    }
}

impl RepoName {
    /// Validates a repository name (the empty string means "none").
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_segment_name("service_repo_name", s, 0, MAX_NAME_LEN)?;
        Ok(RepoName(s.into()))
    }

    /// The absent repository name, `""`.
    pub fn empty() -> Self {
        RepoName("".into())
    }
}

impl Revision {
    /// Validates a revision: 1-128 printable ASCII characters (space included).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > 128 {
            return Err(ValidationError::invalid(
                "revision",
                format!("must be 1 to 128 characters long, got {}", s.len()),
            ));
        }
        if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ValidationError::invalid(
                "revision",
                "must be printable ASCII",
            ));
        }
        Ok(Revision(s.into()))
    }
}

/// A TCP port, 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    /// Validates a port number.
    pub fn new(n: i64) -> Result<Self, ValidationError> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(ValidationError::invalid(
                "port",
                format!("must be an integer from 1 to 65535, got {n}"),
            )),
        }
    }

    /// Parses a port from its decimal text.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let n: i64 = s.trim().parse().map_err(|_| {
            ValidationError::invalid(
                "port",
                format!("must be an integer from 1 to 65535, got {s:?}"),
            )
        })?;
        Port::new(n)
    }

    /// As a number, 1-65535.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Port::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A load-balancing weight, 1-100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Weight(u8);

impl Weight {
    /// Validates a weight.
    pub fn new(n: i64) -> Result<Self, ValidationError> {
        if (1..=100).contains(&n) {
            Ok(Weight(n as u8))
        } else {
            Err(ValidationError::invalid(
                "load_balancing_weight",
                format!("must be an integer from 1 to 100, got {n}"),
            ))
        }
    }

    /// Parses a weight from its decimal text.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let n: i64 = s.trim().parse().map_err(|_| {
            ValidationError::invalid(
                "load_balancing_weight",
                format!("must be an integer from 1 to 100, got {s:?}"),
            )
        })?;
        Weight::new(n)
    }

    /// As a number, 1-100.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Weight::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_charset_and_length_rules() {
        assert!(ServiceName::parse("payments-v2.api_x").is_ok());
        assert!(ServiceName::parse(&"a".repeat(128)).is_ok());
        assert!(ServiceName::parse("").is_err());
        assert!(ServiceName::parse(&"a".repeat(129)).is_err());
        assert!(ServiceName::parse("a/b").is_err());
        assert!(ServiceName::parse("päy").is_err());
        assert!(RepoName::parse("").is_ok());
    }

    #[test]
    fn dot_segments_are_refused_as_service_and_repo_names() {
        for name in [".", ".."] {
            let e = ServiceName::parse(name).unwrap_err().to_string();
            assert!(e.contains("directory step"), "{e}");
            assert!(RepoName::parse(name).is_err(), "{name}");
            assert!(serde_json::from_str::<ServiceName>(&format!("{name:?}")).is_err());
        }
        for name in ["...", ".a", "a..", "._", "-."] {
            assert!(ServiceName::parse(name).is_ok(), "{name}");
            assert!(RepoName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn ports_and_weights_are_range_checked() {
        assert!(Port::new(0).is_err());
        assert!(Port::new(65536).is_err());
        assert_eq!(Port::parse(" 8080").unwrap().get(), 8080);
        assert!(Port::parse("80x").is_err());
        assert!(Weight::new(0).is_err());
        assert!(Weight::new(101).is_err());
        assert_eq!(Weight::parse("100").unwrap().get(), 100);
    }

    #[test]
    fn revisions_are_printable_ascii() {
        assert!(Revision::parse("4f2a9c1 build 7").is_ok());
        assert!(Revision::parse("").is_err());
        assert!(Revision::parse("a\nb").is_err());
        assert!(Revision::parse("é").is_err());
    }
}
