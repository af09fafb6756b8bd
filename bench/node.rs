//! How the benchmarks start a `discovery` node.

use std::process::{Child, Command, Stdio};

/// `DISCOVERY_BIN`, else the `discovery` binary of the build this example belongs to.
fn binary() -> String {
    std::env::var("DISCOVERY_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
        dir.join("discovery").to_string_lossy().into_owned()
    })
}

/// `discovery serve` on a free port of 127.0.0.1 with extra flags, logging errors only; its
/// stdout (the `listening on` lines) is piped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("DISCOVERY_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start discovery (build it with cargo build --release --bins)")
}
