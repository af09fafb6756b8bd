//! The error body every endpoint answers with, and the validation errors behind its 400s.

use serde::{Deserialize, Serialize};

/// The JSON body of every error response: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, in words a user can act on.
    pub error: String,
}

/// Why a value from a request was refused. The message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field is present but breaks its rule; the string says which rule.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field's name as the client sent it.
        field: &'static str,
        /// The rule it broke.
        reason: String,
    },
    /// The body is not what its content type says.
    #[error("malformed body: {0}")]
    Body(String),
}

impl ValidationError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ValidationError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
