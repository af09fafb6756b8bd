//! The client subcommands as processes against real registry nodes: the `heartbeat` agent
//! (drain and deregister on SIGTERM, refusals, failover), `hosts` (table, JSON, `--watch`),
//! `services`, `peers`, and what they say when no registry answers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, get_json, http, wait_until, Node};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a client subcommand to completion.
fn discovery(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("DISCOVERY_REGISTRY")
        .env_remove("DISCOVERY_READ_TOKEN")
        .env_remove("DISCOVERY_WRITE_TOKEN")
        .env_remove("DISCOVERY_TIMEOUT")
        .env_remove("DISCOVERY_POLL_WAIT")
        .stdin(Stdio::null())
        .output()
        .expect("run discovery")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A long-running subcommand whose stdout is collected by a thread, so the test can wait
/// for what it prints without blocking on a read.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        Running::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(binary())
            .args(args)
            .env_remove("DISCOVERY_REGISTRY")
            .env_remove("DISCOVERY_READ_TOKEN")
            .env_remove("DISCOVERY_WRITE_TOKEN")
            .env_remove("DISCOVERY_TIMEOUT")
            .env_remove("DISCOVERY_POLL_WAIT")
            .envs(env.iter().copied())
            .env("DISCOVERY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start discovery");
        let pipe = child.stdout.take().expect("stdout");
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running { child, stdout }
    }

    fn output_so_far(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                }
                return (status.code(), err);
            }
            assert!(started.elapsed() < TIMEOUT, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base URL where nothing listens: a port bound and released again.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn register(node: &Node, service: &str, ip: &str, port: u16) {
    let (status, body) = http(
        "POST",
        &format!("{}/v1/registration/{service}", node.url),
        Some("application/x-www-form-urlencoded"),
        &format!("ip={ip}&port={port}&revision=r1"),
    );
    assert_eq!(status, 200, "{body}");
}

/// The hosts of a service on a node, as JSON values.
fn hosts_on(node: &Node, service: &str) -> Vec<Value> {
    get_json(&format!("{}/v1/registration/{service}", node.url))
        .and_then(|v| v["hosts"].as_array().cloned())
        .unwrap_or_default()
}

/// Starts a `discovery heartbeat` agent for `service` on port 9000 (plus `extra` flags) and
/// waits until `node` holds its host.
fn start_agent(node: &Node, registries: &str, service: &str, extra: &[&str]) -> Running {
    start_agent_with_env(node, registries, service, extra, &[])
}

fn start_agent_with_env(
    node: &Node,
    registries: &str,
    service: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let base = [
        "heartbeat",
        "--registry",
        registries,
        "--service",
        service,
        "--port",
        "9000",
    ];
    let agent = Running::start_with_env(&[&base[..], extra].concat(), env);
    wait_until("the agent's host is registered", TIMEOUT, || {
        hosts_on(node, service).len() == 1
    });
    agent
}

/// Stops an agent with `sig`; checks that it exits 0 and that its host is gone.
fn stop_agent(agent: Running, sig: &str, node: &Node, service: &str) -> String {
    agent.signal(sig);
    expect_clean_exit(agent, node, service)
}

/// Waits for a signalled agent to end; checks that it exits 0 and that its host is gone.
fn expect_clean_exit(agent: Running, node: &Node, service: &str) -> String {
    let (code, logs) = agent.wait();
    assert_eq!(code, Some(0), "{logs}");
    assert!(hosts_on(node, service).is_empty(), "{logs}");
    logs
}

#[test]
fn sigterm_makes_the_agent_drain_then_deregister_and_exit_0() {
    let node = Node::start(&[]);
    let flags = [
        "--ip",
        "10.0.0.7",
        "--revision",
        "4f2a9c1",
        "--repo",
        "payments-repo",
        "--tag",
        "az=us-east-1a",
        "--tag",
        "canary=true",
        "--tag",
        "load_balancing_weight=20",
        "--interval",
        "1s",
        "--ttl",
        "30s",
        // Long enough for this test to see the draining state between its polls.
        "--drain-period",
        "2s",
    ];
    let agent = start_agent(&node, &node.url, "payments", &flags);
    let host = hosts_on(&node, "payments").remove(0);
    assert_eq!(host["ip_address"], "10.0.0.7");
    assert_eq!(host["port"], 9000);
    assert_eq!(host["revision"], "4f2a9c1");
    assert_eq!(host["service_repo_name"], "payments-repo");
    assert_eq!(host["status"], "up");
    assert_eq!(host["ttl"], 30);
    assert_eq!(
        host["tags"],
        serde_json::json!({"az": "us-east-1a", "canary": true, "load_balancing_weight": 20})
    );

    agent.signal("TERM");
    wait_until("the host is draining", TIMEOUT, || {
        hosts_on(&node, "payments")
            .first()
            .is_some_and(|h| h["status"] == "draining")
    });
    wait_until("the host is gone", TIMEOUT, || {
        hosts_on(&node, "payments").is_empty()
    });
    let logs = expect_clean_exit(agent, &node, "payments");
    assert!(logs.contains("deregistered"), "{logs}");
}

#[test]
fn without_ip_the_agent_registers_its_address_towards_the_registry_and_still_deregisters() {
    let node = Node::start(&[]);
    let agent = start_agent(&node, &node.url, "web", &[]);
    let host = hosts_on(&node, "web").remove(0);
    assert_eq!(host["ip_address"], "127.0.0.1");
    assert_eq!(host["revision"], "unknown");
    stop_agent(agent, "INT", &node, "web");
}

#[test]
fn a_refused_first_heartbeat_stops_the_agent_with_the_reason() {
    let node = Node::start(&["--write-token", "s3cret"]);
    let out = discovery(&[
        "heartbeat",
        "--registry",
        &node.url,
        "--service",
        "web",
        "--port",
        "9000",
        "--token",
        "wrong",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("error: the first heartbeat was refused") && err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("s3cret") && !err.contains("wrong"), "{err}");
    assert!(hosts_on(&node, "web").is_empty());

    // The same token, from the environment the registry itself reads it from.
    let env = [("DISCOVERY_WRITE_TOKEN", "s3cret")];
    let agent = start_agent_with_env(&node, &node.url, "web", &[], &env);
    stop_agent(agent, "TERM", &node, "web");
}

#[test]
fn hosts_watch_prints_the_list_again_when_it_changes() {
    let node = Node::start(&[]);
    register(&node, "payments", "10.0.0.1", 8080);
    let watch = Running::start(&["hosts", "payments", "--registry", &node.url, "--watch"]);
    wait_until("the first list", TIMEOUT, || {
        watch.output_so_far().contains("10.0.0.1:8080")
    });
    assert!(watch.output_so_far().starts_with("payments: 1 hosts at "));

    register(&node, "payments", "10.0.0.2", 8080);
    wait_until("the list with the new host", TIMEOUT, || {
        watch.output_so_far().contains("10.0.0.2:8080")
    });
    let out = watch.output_so_far();
    let updates: Vec<&str> = out.split("\n\n").filter(|s| !s.is_empty()).collect();
    assert_eq!(updates.len(), 2, "{out}");
    assert!(updates[1].starts_with("payments: 2 hosts at "), "{out}");
    assert!(updates[1].contains("10.0.0.1:8080"), "{out}");

    watch.signal("INT");
    let (code, logs) = watch.wait();
    assert_eq!(code, Some(0), "{logs}");
}

#[test]
fn hosts_watch_fails_over_from_a_frozen_registry_within_poll_wait_plus_timeout() {
    let frozen = Node::start(&[]);
    let healthy = Node::start(&[]);
    for node in [&frozen, &healthy] {
        register(node, "payments", "10.0.0.1", 8080);
    }
    let registries = format!("{},{}", frozen.url, healthy.url);
    let watch = Running::start(&[
        "hosts",
        "payments",
        "--registry",
        &registries,
        "--watch",
        "--json",
        "--poll-wait",
        "1s",
        "--timeout",
        "500ms",
    ]);
    wait_until("the first list", TIMEOUT, || {
        watch.output_so_far().contains("10.0.0.1")
    });

    frozen.signal("STOP");
    let frozen_at = Instant::now();
    register(&healthy, "payments", "10.0.0.2", 8080);
    // --poll-wait + --timeout, with slack for a loaded debug build.
    let bound = Duration::from_millis(1500);
    wait_until(
        "the list with the host added on the healthy registry",
        bound + Duration::from_secs(3),
        || watch.output_so_far().contains("10.0.0.2"),
    );
    let elapsed = frozen_at.elapsed();
    assert!(elapsed < bound + Duration::from_secs(3), "took {elapsed:?}");

    frozen.signal("CONT");
    watch.signal("INT");
    let (code, logs) = watch.wait();
    assert_eq!(code, Some(0), "{logs}");
    let warning = logs
        .lines()
        .find(|l| l.contains("failed over to another registry node"))
        .unwrap_or_else(|| panic!("no failover warning:\n{logs}"));
    assert!(
        warning.contains(&format!("{}: timed out", frozen.url)),
        "{warning}"
    );
}

#[test]
fn hosts_watch_json_prints_one_body_per_line() {
    let node = Node::start(&[]);
    let watch = Running::start(&[
        "hosts",
        "payments",
        "--registry",
        &node.url,
        "--watch",
        "--json",
    ]);
    wait_until("the first (empty) list", TIMEOUT, || {
        watch.output_so_far().lines().count() == 1
    });
    register(&node, "payments", "10.0.0.3", 8443);
    wait_until("a second list", TIMEOUT, || {
        watch.output_so_far().lines().count() == 2
    });
    let out = watch.output_so_far();
    let bodies: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON body per line"))
        .collect();
    assert_eq!(bodies[0]["hosts"], serde_json::json!([]));
    assert_eq!(bodies[1]["service"], "payments");
    assert_eq!(bodies[1]["hosts"][0]["ip_address"], "10.0.0.3");
    assert_eq!(bodies[1]["hosts"][0]["port"], 8443);
    watch.signal("TERM");
    assert_eq!(watch.wait().0, Some(0));
}

#[test]
fn hosts_services_and_peers_print_what_the_registry_answers() {
    let a = Node::start(&["--env", "staging"]);
    let b = Node::start(&["--env", "staging", "--peers", &a.url]);
    register(&a, "payments", "10.0.0.1", 8080);
    register(&a, "payments", "10.0.0.2", 8080);
    register(&a, "billing", "10.0.1.1", 9000);
    wait_until("a sees b", TIMEOUT, || {
        get_json(&format!("{}/v1/peers", a.url)).is_some_and(|p| {
            p["peers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["node_id"].is_string()))
        })
    });

    let out = discovery(&["hosts", "payments", "--registry", &a.url, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let served = get_json(&format!("{}/v1/registration/payments", a.url)).unwrap();
    assert_eq!(printed, served);

    let out = discovery(&["hosts", "payments", "--registry", &a.url]);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ADDRESS"), "{table}");
    for (line, ip) in lines[1..].iter().zip(["10.0.0.1", "10.0.0.2"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            [&format!("{ip}:8080"), "up", "1", "r1"],
            "{table}"
        );
    }

    let out = discovery(&["services", "--registry", &a.url, "--json"]);
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        printed,
        get_json(&format!("{}/v1/services", a.url)).unwrap()
    );
    let out = discovery(&["services", "--registry", &a.url]);
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["SERVICE", "HOSTS", "STALE", "INDEX"]);
    assert_eq!(rows[1][..3], ["billing", "1", "0"], "{table}");
    assert_eq!(rows[2][..3], ["payments", "2", "0"], "{table}");

    let out = discovery(&["peers", "--registry", &a.url, "--json"]);
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let served = get_json(&format!("{}/v1/peers", a.url)).unwrap();
    assert_eq!(printed["node_id"], served["node_id"]);
    let b_id = printed["peers"][0]["node_id"].as_str().unwrap().to_owned();
    assert_eq!(printed["peers"][0]["address"], b.url);
    let out = discovery(&["peers", "--registry", &a.url]);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "node {} at {}",
            served["node_id"].as_str().unwrap(),
            a.url
        )),
        "{table}"
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..2], [b.url.as_str(), b_id.as_str()], "{table}");
}

#[test]
fn no_registry_answering_is_one_line_on_stderr_and_a_non_zero_exit() {
    let (dead_1, dead_2) = (dead_url(), dead_url());
    let registries = format!("{dead_1},{dead_2}");
    for args in [
        &["hosts", "payments", "--registry", &registries][..],
        &["hosts", "payments", "--registry", &registries, "--watch"][..],
        &["services", "--registry", &registries, "--json"][..],
        &["peers", "--registry", &registries][..],
    ] {
        let out = discovery(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: no registry answered: "), "{err}");
        assert!(err.contains(&dead_1) && err.contains(&dead_2), "{err}");
        assert!(err.contains("Connection refused"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn every_command_fails_over_when_the_first_registry_is_dead() {
    let node = Node::start(&[]);
    register(&node, "payments", "10.0.0.1", 8080);
    let registries = format!("{},{}", dead_url(), node.url);
    for args in [
        &["hosts", "payments", "--registry", &registries, "--json"][..],
        &["services", "--registry", &registries][..],
        &["peers", "--registry", &registries][..],
    ] {
        let out = discovery(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = discovery(&["hosts", "payments", "--registry", &registries, "--json"]);
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["hosts"][0]["ip_address"], "10.0.0.1");

    let agent = start_agent(
        &node,
        &registries,
        "web",
        &["--ip", "10.0.0.5", "--timeout", "1s"],
    );
    stop_agent(agent, "TERM", &node, "web");
}

#[test]
fn read_commands_send_the_read_token_and_report_a_refusal() {
    let node = Node::start(&["--read-token", "r34d"]);
    let out = discovery(&["services", "--registry", &node.url]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: {} refused the request with 401", node.url)),
        "{err}"
    );
    let out = discovery(&["hosts", "web", "--registry", &node.url, "--token", "r34d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(binary())
        .args(["peers", "--registry", &node.url, "--json"])
        .env("DISCOVERY_READ_TOKEN", "r34d")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The part of a `--help` text about one flag: from its line to the next flag's.
fn flag_help<'a>(help: &'a str, flag: &str) -> Option<&'a str> {
    let start = help.find(&format!("      {flag} "))?;
    let rest = &help[start + 6..];
    let end = rest.find("\n      --").unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn request_timeouts_and_the_poll_wait_show_the_library_defaults_in_help() {
    let format = |d: Duration| humantime::format_duration(d).to_string();
    let timeout = format!(
        "[default: {}]",
        format(discovery_client::DEFAULT_REQUEST_TIMEOUT)
    );
    let poll_wait = format!("[default: {}]", format(discovery_client::DEFAULT_POLL_WAIT));
    for (command, wanted) in [
        (
            "hosts",
            vec![("--timeout", &timeout), ("--poll-wait", &poll_wait)],
        ),
        (
            "haproxy-sync",
            vec![("--timeout", &timeout), ("--poll-wait", &poll_wait)],
        ),
        ("services", vec![("--timeout", &timeout)]),
        ("peers", vec![("--timeout", &timeout)]),
    ] {
        let out = discovery(&[command, "--help"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        for (flag, default) in wanted {
            let section = flag_help(&help, flag)
                .unwrap_or_else(|| panic!("{command} --help has no {flag}:\n{help}"));
            assert!(
                section.contains(default.as_str()),
                "{command} {flag}: {section}"
            );
        }
    }
    let out = discovery(&["heartbeat", "--help"]);
    let help = stdout(&out);
    let rule = format!(
        "[default: half of --interval, within {}..{}]",
        format(discovery_client::MIN_HEARTBEAT_TIMEOUT),
        format(discovery_client::MAX_HEARTBEAT_TIMEOUT)
    );
    assert!(help.contains("--timeout <DURATION>"), "{help}");
    assert!(help.contains(&rule), "{help}");
}

#[test]
fn a_read_gives_up_on_a_frozen_registry_after_its_timeout_and_asks_the_next() {
    let frozen = Node::start(&[]);
    let healthy = Node::start(&[]);
    register(&healthy, "payments", "10.0.0.1", 8080);
    frozen.signal("STOP");
    let timeout = Duration::from_millis(500);
    // Slack for a loaded debug build: the point is "about the timeout", not the 10 s a
    // fixed timeout used to cost.
    let margin = Duration::from_secs(3);

    let registries = format!("{},{}", frozen.url, healthy.url);
    let started = Instant::now();
    let out = discovery(&[
        "hosts",
        "payments",
        "--registry",
        &registries,
        "--timeout",
        "500ms",
        "--json",
    ]);
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["hosts"][0]["ip_address"], "10.0.0.1");
    assert!(elapsed < timeout + margin, "took {elapsed:?}");

    // Only the frozen one: the error says it timed out.
    let started = Instant::now();
    let out = discovery(&["services", "--registry", &frozen.url, "--timeout", "500ms"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        format!("error: no registry answered: {}: timed out", frozen.url)
    );
    assert!(
        elapsed >= timeout && elapsed < timeout + margin,
        "took {elapsed:?}"
    );
    frozen.signal("CONT");
}
