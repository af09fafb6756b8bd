//! The open files limit a node starts under: `serve` raises the soft limit so that both ports'
//! `--max-connections` fit (its own process: the test lowers the limit its nodes inherit).

mod common;

use common::{wait_until, Node};
use std::time::Duration;

/// The soft "Max open files" of a process, from `/proc/PID/limits`.
fn soft_open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_node_raises_its_open_files_limit_to_what_both_ports_need() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        hard >= 1024,
        "this test needs a hard limit of at least 1024, not {hard}"
    );
    rlimit::Resource::NOFILE.set(256, hard).unwrap();

    // Two ports of 100 connections and 512 spare: 712, under the hard limit.
    let (node, logs) = Node::start_logged(&["--max-connections", "100"]);
    assert_eq!(soft_open_files(node.pid()), 712);
    assert!(
        !logs.contains("open files limit is below"),
        "{}",
        logs.text()
    );

    // More than the hard limit allows: raised to it, and the operator is told.
    let beyond = ((hard - 512) / 2 + 1).to_string();
    let (node, logs) = Node::start_logged(&["--max-connections", &beyond]);
    assert_eq!(soft_open_files(node.pid()), hard);
    wait_until("the warning", Duration::from_secs(5), || {
        logs.contains("open files limit is below twice --max-connections")
    });
}
