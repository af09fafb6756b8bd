//! Every live host as a Prometheus target group (`http_sd_configs`): `host:port` (IPv6 in
//! brackets) with `__meta_discovery_*` labels for its service, revision, repository, status,
//! weight, region, az and canary, and each tag as `__meta_discovery_tag_<key>`, the key made
//! a valid label name (every character outside `[A-Za-z0-9_]` becomes `_`; when two keys
//! meet in one name, the first in key order wins).

use std::collections::BTreeMap;
use std::net::IpAddr;

use discovery_api::{TagValue, Tags, TargetGroup};

use super::Registry;

/// The prefix of every label.
const PREFIX: &str = "__meta_discovery_";

impl Registry {
    /// One group per live host, ordered by service, address and port.
    pub(crate) fn prometheus_targets(&self) -> Vec<TargetGroup> {
        let mut groups = Vec::new();
        let mut services: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.tally.live > 0)
            .map(|s| s.name.clone())
            .collect();
        services.sort();
        for name in services {
            let Some(svc) = self.services.get(&name) else {
                continue;
            };
            for ((ip, port), entry) in &svc.hosts {
                let Some(routing) = entry.record.routing() else {
                    continue;
                };
                let tags = Tags::from_json_str(&routing.tags).unwrap_or_default();
                let mut labels = BTreeMap::new();
                let mut label = |key: &str, value: String| {
                    labels.entry(format!("{PREFIX}{key}")).or_insert(value);
                };
                label("service", name.to_string());
                label("revision", routing.revision.to_string());
                label("service_repo_name", routing.service_repo_name.to_string());
                label("status", routing.status.as_str().to_owned());
                let weight = entry.record.weight_override().or_else(|| tags.weight());
                label("weight", weight.map_or(1, |w| w.get()).to_string());
                label(
                    "region",
                    tags.get_str("region").unwrap_or_default().to_owned(),
                );
                label("az", tags.get_str("az").unwrap_or_default().to_owned());
                label("canary", tags.canary().to_string());
                for (key, value) in tags.iter() {
                    let value = match value {
                        TagValue::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    label(&format!("tag_{}", label_name(key)), value);
                }
                groups.push(TargetGroup {
                    targets: vec![target(*ip, *port)],
                    labels,
                });
            }
        }
        groups
    }
}

/// `addr:port`, with an IPv6 address in brackets.
fn target(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A tag key as the tail of a label name: `[A-Za-z0-9_]`, anything else as `_`.
fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, ServiceName, Weight};

    use super::*;
    use crate::registry::{RegistryConfig, SECOND};

    #[test]
    fn hosts_become_targets_with_sanitized_tag_labels_and_bracketed_ipv6() {
        let r = Registry::new(RegistryConfig::new("test", "a"));
        let web = ServiceName::parse("web").unwrap();
        let tags = Tags::from_json_str(
            r#"{"az":"z1","region":"r1","canary":true,"team-name":"pay","a.b":1,"a_b":"x","ünï":"u"}"#,
        )
        .unwrap();
        let reg = Registration {
            ip: None,
            port: Port::new(8080).unwrap(),
            revision: Revision::parse("abc").unwrap(),
            service_repo_name: RepoName::empty(),
            tags,
            ttl: Some(60),
            status: HostStatus::Draining,
            auto_ip: false,
        };
        let now = 1_800_000_000 * SECOND;
        r.heartbeat(&web, "fd00::1".parse().unwrap(), &reg, now)
            .unwrap();
        r.heartbeat(&web, "10.0.0.1".parse().unwrap(), &reg, now)
            .unwrap();
        r.set_weight(
            &web,
            Some("10.0.0.1".parse().unwrap()),
            Weight::new(9).unwrap(),
            now,
        )
        .unwrap();
        let groups = r.prometheus_targets();
        let targets: Vec<_> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["10.0.0.1:8080", "[fd00::1]:8080"]);
        let labels = &groups[0].labels;
        let get = |k: &str| {
            labels
                .get(&format!("__meta_discovery_{k}"))
                .map(String::as_str)
        };
        assert_eq!(get("service"), Some("web"));
        assert_eq!(get("revision"), Some("abc"));
        assert_eq!(get("status"), Some("draining"));
        assert_eq!(get("az"), Some("z1"));
        assert_eq!(get("region"), Some("r1"));
        assert_eq!(get("canary"), Some("true"));
        assert_eq!(get("weight"), Some("9"));
        assert_eq!(get("tag_team_name"), Some("pay"));
        // "a.b" and "a_b" meet in one name: the first in key order wins.
        assert_eq!(get("tag_a_b"), Some("1"));
        assert_eq!(get("tag__n_"), Some("u"));
        assert_eq!(groups[1].labels["__meta_discovery_weight"], "1");
        for name in labels.keys() {
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name} is not a valid label name"
            );
        }
    }
}
