//! Walks the curl examples of README.md, in order, against the real binary on port 0.

mod common;

use std::process::Command;

use common::{get_json, Node};

/// The shell commands between the readme-test markers, continuation lines joined.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("<!-- readme-test:begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- readme-test:end -->").next())
        .expect("readme-test markers");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("```")
            || line.starts_with('#')
            || (line.is_empty() && current.is_empty())
        {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

#[test]
fn readme_curl_examples_work_against_a_real_server() {
    let node = Node::start(&["--env", "development"]);
    let commands = readme_commands();
    assert!(
        commands.len() >= 15,
        "found only {} commands",
        commands.len()
    );
    for command in &commands {
        assert!(
            command.starts_with("curl "),
            "not a curl command: {command}"
        );
        let command = command
            .replacen("curl ", "curl -sS --fail-with-body -o /dev/null ", 1)
            .replace("http://localhost:8080", &node.url);
        let out = Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{command}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // After the walk: the two deletes left only the auto_ip host (from 127.0.0.1).
    let list = get_json(&format!("{}/v1/registration/payments", node.url)).expect("list");
    let hosts = list["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{list}");
    assert_eq!(hosts[0]["ip_address"], "127.0.0.1");
    assert_eq!(hosts[0]["port"], 9090);
    assert_eq!(
        hosts[0]["load_balancing_weight"], 10,
        "the service-wide override"
    );
    assert!(node.stop(), "SIGTERM ends the node with status 0");
}
