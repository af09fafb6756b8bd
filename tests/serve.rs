//! `discovery serve` as a process: flags from the environment, refused flags, expiry on the
//! wall clock, graceful shutdown.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{binary, get_json, http, wait_until, Node};

#[test]
fn every_flag_can_come_from_the_environment() {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DISCOVERY_ENV", "staging")
        .env("DISCOVERY_HOST_TTL", "42s")
        .env("DISCOVERY_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let (status, _) = http(
        "POST",
        &format!("{url}/v1/registration/web"),
        Some("application/x-www-form-urlencoded"),
        "ip=10.0.0.1&port=80&revision=r",
    );
    assert_eq!(status, 200);
    let list = get_json(&format!("{url}/v1/registration/web")).unwrap();
    assert_eq!(list["env"], "staging");
    assert_eq!(list["hosts"][0]["ttl"], 42);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let first = logs.lines().next().expect("a log line");
    let parsed: serde_json::Value = serde_json::from_str(first).expect("JSON logs");
    assert!(parsed["fields"]["message"].is_string(), "{first}");
}

#[test]
fn invalid_flags_are_refused_with_a_message_naming_the_flag() {
    for (args, word) in [
        (&["--min-ttl", "10m", "--max-ttl", "1m"][..], "--min-ttl"),
        (&["--expiry-guard", "2"][..], "--expiry-guard"),
        (&["--host-ttl", "soon"][..], "--host-ttl"),
        (&["--peers", "ftp://x"][..], "--peers"),
        (&["--node-id", "a b"][..], "--node-id"),
        (&["--write-timeout", "50ms"][..], "--write-timeout"),
        (&["--read-timeout", "0s"][..], "--read-timeout"),
    ] {
        let out = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(word), "{args:?}: {err}");
    }
}

#[test]
fn hosts_expire_on_the_wall_clock_and_sigterm_stops_cleanly() {
    let node = Node::start(&["--min-ttl", "1s", "--expiry-guard", "0"]);
    let (status, _) = http(
        "POST",
        &format!("{}/v1/registration/web", node.url),
        Some("application/json"),
        r#"{"ip":"10.0.0.1","port":80,"revision":"r","ttl":1}"#,
    );
    assert_eq!(status, 200);
    let hosts = |url: &str| {
        get_json(&format!("{url}/v1/registration/web"))
            .map(|v| v["hosts"].as_array().map_or(0, |a| a.len()))
    };
    assert_eq!(hosts(&node.url), Some(1));
    wait_until("the host to expire", Duration::from_secs(10), || {
        hosts(&node.url) == Some(0)
    });
    let services = get_json(&format!("{}/v1/services", node.url)).unwrap();
    assert_eq!(services["services"], serde_json::json!([]));
    assert!(node.stop());
}

#[test]
fn a_pending_long_poll_does_not_hold_up_shutdown() {
    let node = Node::start(&[]);
    let url = format!("{}/v1/registration/web?index=0&wait=5m", node.url);
    let poll = std::thread::spawn(move || http("GET", &url, None, ""));
    wait_until("the poll to be waiting", Duration::from_secs(10), || {
        let (_, metrics) = http("GET", &format!("{}/metrics", node.url), None, "");
        metrics.contains("discovery_long_polls 1")
    });
    let started = std::time::Instant::now();
    assert!(node.stop());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for the poll"
    );
    let (status, body) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn connections_past_the_limit_wait_until_one_closes() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let (node, logs) = Node::start_logged(&["--max-connections", "2"]);
    // Two idle clients hold both places.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(node.addr()).unwrap())
        .collect();
    wait_until("the limit to be reached", Duration::from_secs(10), || {
        logs.contains("connection limit reached")
    });
    let addr = node.addr().to_owned();
    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let _ = answer_tx.send(answer);
    });
    // Served within milliseconds if the limit did not hold; half a second says it does.
    assert!(
        answer_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a third connection was served past --max-connections 2"
    );
    drop(idle);
    let answer = answer_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
