//! Bearer-token checks (SPEC 3.4), shared by the HTTP API and the gossip endpoints.
//! Tokens are compared in constant time and never logged.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::config::Tokens;

/// The classes of request that tokens guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every read except `/healthz` and `/readyz`.
    Read,
    /// `POST`/`DELETE` on `/v1/registration/...`.
    Write,
    /// `/v1/loadbalancing/...`.
    Admin,
}

fn matches(given: &[u8], expected: &str) -> bool {
    given.ct_eq(expected.as_bytes()).into()
}

/// Whether the request may do `access`: true when the class has no token set, or the
/// request carries that token (the admin token counts for reads and writes too).
pub(crate) fn allowed(tokens: &Tokens, access: Access, headers: &HeaderMap) -> bool {
    let (own, also) = match access {
        Access::Read => (&tokens.read, &tokens.admin),
        Access::Write => (&tokens.write, &tokens.admin),
        Access::Admin => (&tokens.admin, &None),
    };
    carries(own.as_deref(), also.as_deref(), headers)
}

/// Whether a peer may gossip: true when no peer token is set (gossip's settings hold it),
/// or the request carries that token (the admin token does not count).
pub(crate) fn peer_allowed(peer_token: Option<&str>, headers: &HeaderMap) -> bool {
    carries(peer_token, None, headers)
}

/// True when `own` is unset, or the request's bearer token is `own` or `also`.
fn carries(own: Option<&str>, also: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(own) = own else {
        return true;
    };
    let Some(given) = bearer(headers) else {
        return false;
    };
    matches(given, own) || also.is_some_and(|a| matches(given, a))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn unset_tokens_leave_access_open_and_set_ones_are_required() {
        let open = Tokens::default();
        assert!(allowed(&open, Access::Write, &HeaderMap::new()));
        let tokens = Tokens {
            write: Some("w".into()),
            admin: Some("a".into()),
            peer: Some("p".into()),
            read: None,
        };
        assert!(!allowed(&tokens, Access::Write, &HeaderMap::new()));
        assert!(allowed(&tokens, Access::Write, &headers("Bearer w")));
        assert!(allowed(&tokens, Access::Write, &headers("bearer a")));
        assert!(!allowed(&tokens, Access::Write, &headers("Bearer p")));
        assert!(!allowed(&tokens, Access::Admin, &headers("Bearer w")));
        assert!(allowed(&tokens, Access::Admin, &headers("Bearer a")));
        assert!(!peer_allowed(tokens.peer.as_deref(), &headers("Bearer a")));
        assert!(peer_allowed(tokens.peer.as_deref(), &headers("Bearer p")));
        assert!(peer_allowed(None, &HeaderMap::new()));
        assert!(allowed(&tokens, Access::Read, &HeaderMap::new()));
        assert!(!allowed(&tokens, Access::Write, &headers("Basic w")));
    }
}
