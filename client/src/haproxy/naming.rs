//! Names in HAProxy: which servers belong to the sync, what each one is called, and which
//! backend names may be put into a command.
//!
//! A managed server's name is derived from its address alone (`d-10.0.0.7-8080`,
//! `d-fd00__1-8080` for `[fd00::1]:8080`), so the same host always gets the same name, in
//! every sync process and after every restart, and the sync can recognise its own servers
//! in HAProxy without remembering anything. Servers whose names lack the prefix (those of
//! the configuration file) are never touched.

use std::net::IpAddr;

/// The prefix of every server the sync manages. Configuration-file servers must not use it.
pub const SERVER_PREFIX: &str = "d-";

/// The name of the managed server for `ip:port`. `:` (IPv6) becomes `_`, so the name
/// never holds the character HAProxy uses between an address and a port.
pub(crate) fn server_name(ip: IpAddr, port: u16) -> String {
    let ip = ip.to_string().replace(':', "_");
    format!("{SERVER_PREFIX}{ip}-{port}")
}

/// Whether a server of HAProxy belongs to the sync.
pub(crate) fn is_managed(name: &str) -> bool {
    name.starts_with(SERVER_PREFIX)
}

/// Whether `name` is a valid HAProxy proxy name: HAProxy allows letters, digits, `.`, `_`,
/// `-` and `:`. Checked before a name goes into a command line, where a space or `;` would
/// change the command.
pub(crate) fn is_valid_proxy_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_address_and_safe_for_ipv6() {
        assert_eq!(
            server_name("10.0.0.7".parse().unwrap(), 8080),
            "d-10.0.0.7-8080"
        );
        let v6 = server_name("fd00::1".parse().unwrap(), 443);
        assert_eq!(v6, "d-fd00__1-443");
        assert!(is_valid_proxy_name(&v6) && is_managed(&v6));
        assert!(!is_managed("web1"));
    }

    #[test]
    fn proxy_names_that_would_change_a_command_are_invalid() {
        assert!(is_valid_proxy_name("be_web-1.a:b"));
        for bad in ["", "be web", "be;del server x/y", "be\nshow info", "be/x"] {
            assert!(!is_valid_proxy_name(bad), "{bad:?}");
        }
    }
}
