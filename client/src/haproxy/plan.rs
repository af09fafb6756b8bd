//! The planner: what to change in one HAProxy backend so that its managed servers match a
//! service's host list, under the stale-tolerance rules of SPEC 6.
//!
//! Pure: it takes the wanted servers, what HAProxy reports, whether the registry is
//! reachable, and `now`, and returns actions; the only state it keeps is [`Memory`] (since
//! when each vanished server has been absent), which the caller holds and passes back.
//! No IO, no clock, no HAProxy commands: the sync loop turns actions into commands.
//!
//! The rules, the same as Envoy's for eventually consistent discovery (an absent but
//! healthy host keeps getting traffic; an empty list is an outage):
//! - a host in the registry and not in HAProxy is added; its weight and `draining` status
//!   are kept equal to the registry's;
//! - a server that vanished from the registry is removed only when HAProxy's own health
//!   check finds it down (or it is in maintenance), or once it has been absent for
//!   `max_stale`: then it is drained first and removed when its sessions are gone or
//!   `drain_timeout` has passed;
//! - while the registry is unreachable nothing is removed;
//! - servers without the managed prefix are never touched.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use discovery_api::{Host, HostStatus};

use super::naming::{is_managed, server_name};
use super::parse::{Admin, Health};

/// A server the registry wants in the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    /// The weight a proxy gives the host ([`Host::weight`]).
    pub(crate) weight: u16,
    /// The host is `draining`: it keeps its sessions, takes no new ones.
    pub(crate) draining: bool,
}

/// The wanted servers of a host list, by server name.
pub(crate) fn wanted_servers(hosts: &[Host]) -> BTreeMap<String, Wanted> {
    hosts
        .iter()
        .map(|host| {
            let port = host.port.get();
            let wanted = Wanted {
                name: server_name(host.ip_address, port),
                ip: host.ip_address,
                port,
                weight: u16::from(host.weight()),
                draining: host.status == HostStatus::Draining,
            };
            (wanted.name.clone(), wanted)
        })
        .collect()
}

/// A server as HAProxy reports it (`show servers state` joined with `show stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) name: String,
    pub(crate) weight: u16,
    pub(crate) admin: Admin,
    pub(crate) health: Health,
    pub(crate) checks_enabled: bool,
    /// Current sessions.
    pub(crate) sessions: u64,
    /// The last check's result (`L4CON`...), for the log.
    pub(crate) check_status: String,
}

/// The planner's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// How long a server may stay after its host vanished while its check finds it up.
    pub(crate) max_stale: Duration,
    /// How long a stale server is drained before it is removed with sessions still open.
    pub(crate) drain_timeout: Duration,
}

/// Why a server that vanished from the registry stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepReason {
    /// HAProxy's check finds it up and `max_stale` has not passed.
    Healthy,
    /// The registry cannot be reached: its absence may not be true.
    RegistryUnreachable,
}

/// Why a server is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainReason {
    /// The registry says the host is `draining`.
    RegistryDraining,
    /// It vanished from the registry `max_stale` ago; removal follows.
    Stale,
}

/// Why a server is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoveReason {
    /// It vanished and HAProxy's check finds it down (with the check's status).
    CheckDown(String),
    /// It vanished and is in maintenance, so it serves nothing anyway.
    NotServing,
    /// It vanished `max_stale` ago and has been drained.
    Stale,
}

/// One change to the backend, or one decision worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Add the server, start its checks, make it ready but down until the checks pass
    /// (and drain it if the registry says `draining`).
    Add(Wanted),
    /// Start the health checks of a server whose checks are off.
    EnableHealth { name: String },
    /// Change the weight.
    SetWeight { name: String, from: u16, to: u16 },
    /// Put a drained or maintenance server back in service; one coming out of maintenance
    /// is forced down until its checks pass.
    Ready { name: String, from: Admin },
    /// Stop sending it new sessions.
    Drain { name: String, reason: DrainReason },
    /// Maintenance, close its sessions, delete it.
    Remove { name: String, reason: RemoveReason },
    /// No change: a vanished server stays (logged once per reason).
    Keep { name: String, reason: KeepReason },
}

/// What the planner remembers between rounds about servers absent from the registry.
#[derive(Debug, Default, Clone)]
pub(crate) struct Memory {
    absent: BTreeMap<String, Absence>,
}

#[derive(Debug, Clone)]
struct Absence {
    /// When the planner first saw it in HAProxy but not in the registry.
    since: Instant,
    /// When the planner first saw it drained after `max_stale`.
    drained_at: Option<Instant>,
    /// The last keep decision logged, so each is logged once.
    announced: Option<KeepReason>,
}

impl Memory {
    /// Forgets everything: after an HAProxy reload the old servers are gone.
    pub(crate) fn clear(&mut self) {
        self.absent.clear();
    }

    /// How many vanished servers are being kept.
    #[cfg(test)]
    pub(crate) fn absent_count(&self) -> usize {
        self.absent.len()
    }
}

/// The actions that bring the backend's managed servers to `wanted`: additions first (so
/// capacity comes before it goes), then changes, then removals.
pub(crate) fn plan(
    wanted: &BTreeMap<String, Wanted>,
    current: &[Observed],
    registry_reachable: bool,
    rules: &Rules,
    memory: &mut Memory,
    now: Instant,
) -> Vec<Action> {
    let managed: BTreeMap<&str, &Observed> = current
        .iter()
        .filter(|s| is_managed(&s.name))
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut adds = Vec::new();
    let mut changes = Vec::new();
    let mut removals = Vec::new();

    for want in wanted.values() {
        let Some(server) = managed.get(want.name.as_str()) else {
            adds.push(Action::Add(want.clone()));
            continue;
        };
        let name = || want.name.clone();
        if !server.checks_enabled {
            changes.push(Action::EnableHealth { name: name() });
        }
        if server.weight != want.weight {
            changes.push(Action::SetWeight {
                name: name(),
                from: server.weight,
                to: want.weight,
            });
        }
        match (server.admin, want.draining) {
            (Admin::Maint, draining) => {
                changes.push(Action::Ready {
                    name: name(),
                    from: Admin::Maint,
                });
                if draining {
                    changes.push(Action::Drain {
                        name: name(),
                        reason: DrainReason::RegistryDraining,
                    });
                }
            }
            (Admin::Ready, true) => changes.push(Action::Drain {
                name: name(),
                reason: DrainReason::RegistryDraining,
            }),
            (Admin::Drain, false) => changes.push(Action::Ready {
                name: name(),
                from: Admin::Drain,
            }),
            (Admin::Ready, false) | (Admin::Drain, true) => {}
        }
    }

    memory
        .absent
        .retain(|name, _| managed.contains_key(name.as_str()) && !wanted.contains_key(name));
    for server in managed.values().filter(|s| !wanted.contains_key(&s.name)) {
        let absence = memory.absent.entry(server.name.clone()).or_insert(Absence {
            since: now,
            drained_at: None,
            announced: None,
        });
        let name = || server.name.clone();
        let mut keep = |reason: KeepReason, removals: &mut Vec<Action>| {
            if absence.announced != Some(reason) {
                absence.announced = Some(reason);
                removals.push(Action::Keep {
                    name: name(),
                    reason,
                });
            }
        };
        if !registry_reachable {
            keep(KeepReason::RegistryUnreachable, &mut removals);
            continue;
        }
        if server.admin == Admin::Maint {
            removals.push(Action::Remove {
                name: name(),
                reason: RemoveReason::NotServing,
            });
        } else if server.health == Health::Down {
            removals.push(Action::Remove {
                name: name(),
                reason: RemoveReason::CheckDown(server.check_status.clone()),
            });
        } else if now.saturating_duration_since(absence.since) >= rules.max_stale {
            if server.admin != Admin::Drain {
                removals.push(Action::Drain {
                    name: name(),
                    reason: DrainReason::Stale,
                });
            } else {
                let drained_at = *absence.drained_at.get_or_insert(now);
                if server.sessions == 0
                    || now.saturating_duration_since(drained_at) >= rules.drain_timeout
                {
                    removals.push(Action::Remove {
                        name: name(),
                        reason: RemoveReason::Stale,
                    });
                }
            }
        } else {
            keep(KeepReason::Healthy, &mut removals);
        }
    }

    adds.extend(changes);
    adds.extend(removals);
    adds
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_stale: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(30),
    };

    fn host(ip: &str, port: u16, weight: Option<u8>, status: &str) -> Host {
        serde_json::from_value(serde_json::json!({
            "service": "web", "ip_address": ip, "port": port, "revision": "r1",
            "last_check_in": "2026-11-28T12:00:00.000000Z", "status": status,
            "load_balancing_weight": weight,
        }))
        .unwrap()
    }

    fn up(name: &str, weight: u16) -> Observed {
        Observed {
            name: name.into(),
            weight,
            admin: Admin::Ready,
            health: Health::Up,
            checks_enabled: true,
            sessions: 0,
            check_status: "L7OK".into(),
        }
    }

    fn down(name: &str) -> Observed {
        Observed {
            health: Health::Down,
            check_status: "L4CON".into(),
            ..up(name, 1)
        }
    }

    /// A first round (no memory) with the registry reachable.
    fn first_round(wanted: &BTreeMap<String, Wanted>, current: &[Observed]) -> Vec<Action> {
        plan(
            wanted,
            current,
            true,
            &RULES,
            &mut Memory::default(),
            Instant::now(),
        )
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions.iter().map(|a| format!("{a:?}")).collect()
    }

    #[test]
    fn a_new_host_is_added_with_its_effective_weight_or_one() {
        let wanted = wanted_servers(&[
            host("10.0.0.1", 80, Some(30), "up"),
            host("fd00::2", 81, None, "draining"),
        ]);
        let actions = first_round(&wanted, &[]);
        assert_eq!(
            actions,
            vec![
                Action::Add(Wanted {
                    name: "d-10.0.0.1-80".into(),
                    ip: "10.0.0.1".parse().unwrap(),
                    port: 80,
                    weight: 30,
                    draining: false,
                }),
                Action::Add(Wanted {
                    name: "d-fd00__2-81".into(),
                    ip: "fd00::2".parse().unwrap(),
                    port: 81,
                    weight: 1,
                    draining: true,
                }),
            ]
        );
    }

    #[test]
    fn a_backend_equal_to_the_registry_needs_no_action() {
        let wanted = wanted_servers(&[host("10.0.0.1", 80, Some(5), "up")]);
        let current = [up("d-10.0.0.1-80", 5), up("static", 1)];
        let actions = first_round(&wanted, &current);
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn weight_and_draining_status_follow_the_registry() {
        let mut memory = Memory::default();
        let now = Instant::now();
        let wanted = wanted_servers(&[host("10.0.0.1", 80, Some(7), "draining")]);
        let actions = plan(
            &wanted,
            &[up("d-10.0.0.1-80", 1)],
            true,
            &RULES,
            &mut memory,
            now,
        );
        assert_eq!(
            actions,
            vec![
                Action::SetWeight {
                    name: "d-10.0.0.1-80".into(),
                    from: 1,
                    to: 7
                },
                Action::Drain {
                    name: "d-10.0.0.1-80".into(),
                    reason: DrainReason::RegistryDraining
                },
            ]
        );
        let back_up = wanted_servers(&[host("10.0.0.1", 80, Some(7), "up")]);
        let drained = Observed {
            admin: Admin::Drain,
            ..up("d-10.0.0.1-80", 7)
        };
        let actions = plan(&back_up, &[drained], true, &RULES, &mut memory, now);
        assert_eq!(
            actions,
            vec![Action::Ready {
                name: "d-10.0.0.1-80".into(),
                from: Admin::Drain
            }]
        );
    }

    #[test]
    fn a_half_added_server_gets_its_checks_and_is_readied() {
        let wanted = wanted_servers(&[host("10.0.0.1", 80, None, "up")]);
        let half = Observed {
            admin: Admin::Maint,
            health: Health::Unchecked,
            checks_enabled: false,
            ..up("d-10.0.0.1-80", 1)
        };
        let actions = first_round(&wanted, &[half]);
        assert_eq!(
            names(&actions),
            names(&[
                Action::EnableHealth {
                    name: "d-10.0.0.1-80".into()
                },
                Action::Ready {
                    name: "d-10.0.0.1-80".into(),
                    from: Admin::Maint
                },
            ])
        );
    }

    #[test]
    fn a_vanished_host_that_is_healthy_keeps_serving_until_max_stale() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        let current = [up("d-10.0.0.1-80", 1)];
        let first = plan(&BTreeMap::new(), &current, true, &RULES, &mut memory, t0);
        assert_eq!(
            first,
            vec![Action::Keep {
                name: "d-10.0.0.1-80".into(),
                reason: KeepReason::Healthy
            }]
        );
        let later = t0 + RULES.max_stale - Duration::from_secs(1);
        assert_eq!(
            plan(&BTreeMap::new(), &current, true, &RULES, &mut memory, later),
            vec![],
            "the keep decision is logged once"
        );
    }

    #[test]
    fn a_vanished_host_is_removed_once_its_check_finds_it_down() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        plan(
            &BTreeMap::new(),
            &[up("d-10.0.0.1-80", 1)],
            true,
            &RULES,
            &mut memory,
            t0,
        );
        let actions = plan(
            &BTreeMap::new(),
            &[down("d-10.0.0.1-80")],
            true,
            &RULES,
            &mut memory,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            actions,
            vec![Action::Remove {
                name: "d-10.0.0.1-80".into(),
                reason: RemoveReason::CheckDown("L4CON".into())
            }]
        );
    }

    #[test]
    fn a_host_in_the_registry_is_never_removed_even_when_down() {
        let wanted = wanted_servers(&[host("10.0.0.1", 80, None, "up")]);
        let actions = first_round(&wanted, &[down("d-10.0.0.1-80")]);
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn a_stale_host_is_drained_then_removed_when_its_sessions_end_or_drain_times_out() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        let name = "d-10.0.0.1-80";
        plan(
            &BTreeMap::new(),
            &[up(name, 1)],
            true,
            &RULES,
            &mut memory,
            t0,
        );
        let stale = t0 + RULES.max_stale;
        assert_eq!(
            plan(
                &BTreeMap::new(),
                &[up(name, 1)],
                true,
                &RULES,
                &mut memory,
                stale
            ),
            vec![Action::Drain {
                name: name.into(),
                reason: DrainReason::Stale
            }]
        );
        let busy = Observed {
            admin: Admin::Drain,
            sessions: 3,
            ..up(name, 1)
        };
        assert_eq!(
            plan(
                &BTreeMap::new(),
                std::slice::from_ref(&busy),
                true,
                &RULES,
                &mut memory,
                stale
            ),
            vec![],
            "drained with sessions: wait"
        );
        let removed = vec![Action::Remove {
            name: name.into(),
            reason: RemoveReason::Stale,
        }];
        let idle = Observed {
            sessions: 0,
            ..busy.clone()
        };
        let mut idle_memory = memory.clone();
        assert_eq!(
            plan(
                &BTreeMap::new(),
                &[idle],
                true,
                &RULES,
                &mut idle_memory,
                stale
            ),
            removed
        );
        assert_eq!(
            plan(
                &BTreeMap::new(),
                &[busy],
                true,
                &RULES,
                &mut memory,
                stale + RULES.drain_timeout
            ),
            removed
        );
    }

    #[test]
    fn nothing_is_removed_while_the_registry_is_unreachable() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        let current = [down("d-10.0.0.1-80"), up("d-10.0.0.2-80", 1)];
        let actions = plan(&BTreeMap::new(), &current, false, &RULES, &mut memory, t0);
        assert!(
            actions.iter().all(|a| matches!(
                a,
                Action::Keep {
                    reason: KeepReason::RegistryUnreachable,
                    ..
                }
            )),
            "{actions:?}"
        );
        assert_eq!(actions.len(), 2);
        let much_later = t0 + RULES.max_stale * 10;
        assert_eq!(
            plan(
                &BTreeMap::new(),
                &current,
                false,
                &RULES,
                &mut memory,
                much_later
            ),
            vec![]
        );
        // Reachable again, and the absence counted from the first sighting: both go.
        let actions = plan(
            &BTreeMap::new(),
            &current,
            true,
            &RULES,
            &mut memory,
            much_later,
        );
        assert_eq!(
            names(&actions),
            names(&[
                Action::Remove {
                    name: "d-10.0.0.1-80".into(),
                    reason: RemoveReason::CheckDown("L4CON".into())
                },
                Action::Drain {
                    name: "d-10.0.0.2-80".into(),
                    reason: DrainReason::Stale
                },
            ])
        );
    }

    #[test]
    fn servers_without_the_prefix_are_never_touched() {
        let current = [
            Observed {
                admin: Admin::Maint,
                ..down("static")
            },
            up("web1", 3),
        ];
        let actions = first_round(&BTreeMap::new(), &current);
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn after_a_reload_every_host_is_added_again_and_old_absences_are_forgotten() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        let wanted = wanted_servers(&[host("10.0.0.1", 80, Some(4), "up")]);
        let before = [up("d-10.0.0.1-80", 4), up("d-10.0.0.9-80", 1)];
        plan(&wanted, &before, true, &RULES, &mut memory, t0);
        assert_eq!(memory.absent_count(), 1);
        let actions = plan(&wanted, &[up("static", 1)], true, &RULES, &mut memory, t0);
        assert_eq!(actions.len(), 1);
        assert!(
            matches!(&actions[0], Action::Add(w) if w.name == "d-10.0.0.1-80" && w.weight == 4)
        );
        assert_eq!(
            memory.absent_count(),
            0,
            "a server gone from HAProxy is forgotten"
        );
    }

    #[test]
    fn a_vanished_server_in_maintenance_is_removed() {
        let current = [Observed {
            admin: Admin::Maint,
            ..up("d-10.0.0.1-80", 1)
        }];
        let actions = first_round(&BTreeMap::new(), &current);
        assert_eq!(
            actions,
            vec![Action::Remove {
                name: "d-10.0.0.1-80".into(),
                reason: RemoveReason::NotServing
            }]
        );
    }
}
