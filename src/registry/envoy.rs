//! A service's hosts as Envoy's `ClusterLoadAssignment` (SPEC 3.2): hosts grouped by locality
//! from their `region` and `az` tags, weights (override, else tag, else 1), `DRAINING` for
//! draining hosts and the `canary` tag in `envoy.lb` metadata.

use std::collections::BTreeMap;

use discovery_api::{
    Address, ClusterLoadAssignment, Endpoint, HostStatus, LbEndpoint, Locality,
    LocalityLbEndpoints, Metadata, ServiceName, SocketAddress, Tags, EDS_TYPE_URL,
};

use super::Registry;

impl Registry {
    /// The assignment of a service, or `None` when it has no live hosts (Envoy then keeps
    /// the hosts it has). Its version is the service view's content hash.
    pub fn envoy_assignment(&self, service: &ServiceName) -> Option<ClusterLoadAssignment> {
        let svc = self.services.get(service)?;
        if svc.tally.live == 0 {
            return None;
        }
        let mut localities: BTreeMap<Locality, Vec<LbEndpoint>> = BTreeMap::new();
        for ((ip, port), entry) in &svc.hosts {
            let Some(routing) = entry.record.routing() else {
                continue;
            };
            let tags = Tags::from_json_str(&routing.tags).unwrap_or_default();
            let locality = Locality {
                region: tags.get_str("region").unwrap_or_default().to_owned(),
                zone: tags.get_str("az").unwrap_or_default().to_owned(),
            };
            let weight = entry
                .record
                .weight_override()
                .or_else(|| tags.weight())
                .map_or(1, |w| u32::from(w.get()));
            let metadata = tags.canary().then(|| {
                let mut lb = serde_json::Map::new();
                lb.insert("canary".into(), serde_json::Value::Bool(true));
                let mut filter_metadata = serde_json::Map::new();
                filter_metadata.insert("envoy.lb".into(), serde_json::Value::Object(lb));
                Metadata { filter_metadata }
            });
            localities.entry(locality).or_default().push(LbEndpoint {
                endpoint: Endpoint {
                    address: Address {
                        socket_address: SocketAddress {
                            address: ip.to_string(),
                            port_value: *port,
                        },
                    },
                },
                health_status: match routing.status {
                    HostStatus::Up => "HEALTHY",
                    HostStatus::Draining => "DRAINING",
                }
                .to_owned(),
                load_balancing_weight: weight,
                metadata,
            });
        }
        let assignment = ClusterLoadAssignment {
            type_marker: EDS_TYPE_URL.to_owned(),
            cluster_name: service.to_string(),
            endpoints: localities
                .into_iter()
                .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
                    load_balancing_weight: lb_endpoints
                        .iter()
                        .map(|e| e.load_balancing_weight)
                        .sum(),
                    locality,
                    lb_endpoints,
                })
                .collect(),
        };
        Some(assignment)
    }
}
