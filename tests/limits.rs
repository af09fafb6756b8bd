//! The HTTP layer's bounds against a real process over raw sockets: clients that stall on
//! either side are cut, every limit we set answers in JSON before hyper's own, a declared
//! over-limit body is refused at once, and invented methods cannot grow the metrics.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http, wait_until, Node};

/// An answer read off a socket: status, head and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json_error(&self) -> String {
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"))
            .to_owned()
    }
}

/// Parses everything the server sent before closing.
fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Sends `request` as is on a new connection and reads until the server closes it.
fn send_raw(addr: &str, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before it has read all of a request over a limit.
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        // A reset after the answer (the server closes with unread bytes) still leaves it read.
        assert!(!raw.is_empty(), "no answer: {e}");
    }
    parse(&raw)
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Connection: close\r\n\r\n")
        .into_bytes()
}

#[test]
fn our_head_limits_answer_in_json_before_hyper_does() {
    let node = Node::start(&[]);
    let addr = node.addr();
    let path = |len: usize| format!("/v1/registration/{}", "a".repeat(len - 17));
    // The URI: at the limit a plain (hot-path) read of a too-long name, past it 414.
    let r = send_raw(addr, &get(&path(8192), ""));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = send_raw(addr, &get(&path(8193), ""));
    assert_eq!(r.status, 414);
    assert!(r.json_error().contains("8192 bytes"), "{}", r.body);
    let r = send_raw(
        addr,
        &get(&format!("/v1/services?q={}", "a".repeat(9000)), ""),
    );
    assert_eq!(r.status, 414);
    r.json_error();
    // Header lines: 64 in all pass (Host and Connection are two of them), 65 are 431.
    let lines = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    assert_eq!(send_raw(addr, &get("/healthz", &lines(62))).status, 200);
    let r = send_raw(addr, &get("/healthz", &lines(63)));
    assert_eq!(r.status, 431);
    assert!(r.json_error().contains("65 header lines"), "{}", r.body);
    // Head bytes: 16 KiB pass, one more is 431.
    let minimal = get("/healthz", "x-big: \r\n").len() - "\r\n".len();
    let big = |n: usize| format!("x-big: {}\r\n", "b".repeat(n));
    let fits = 16 * 1024 - minimal;
    assert_eq!(send_raw(addr, &get("/healthz", &big(fits))).status, 200);
    let r = send_raw(addr, &get("/healthz", &big(fits + 1)));
    assert_eq!(r.status, 431);
    assert!(r.json_error().contains("16385 bytes"), "{}", r.body);
    // The documented exceptions, answered by hyper with an empty body: a head past hyper's
    // 64 KiB, more than hyper's 100 header lines, and a request line that is not HTTP.
    let r = send_raw(addr, &get("/healthz", &big(64 * 1024)));
    assert_eq!((r.status, r.body.as_str()), (431, ""));
    let r = send_raw(addr, &get("/healthz", &lines(99)));
    assert_eq!((r.status, r.body.as_str()), (431, ""));
    let r = send_raw(addr, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.body.as_str()), (400, ""));
    // None of it changed anything or stopped the node.
    assert_eq!(
        http("GET", &format!("{}/v1/services", node.url), None, "").0,
        200
    );
}

#[test]
fn a_content_length_far_over_max_body_is_413_at_once_on_every_write_route() {
    let node = Node::start(&["--max-body", "1KiB"]);
    for (path, content_type, expect) in [
        // The hot path (a plain heartbeat), then two routed writes.
        (
            "/v1/registration/web",
            "application/x-www-form-urlencoded",
            "",
        ),
        (
            "/v1/loadbalancing/web",
            "application/x-www-form-urlencoded",
            "",
        ),
        ("/v3/discovery:endpoints", "application/json", ""),
        // A client that waits for 100 Continue gets the 413 instead.
        (
            "/v1/registration/web",
            "application/json",
            "Expect: 100-continue\r\n",
        ),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{expect}\
             Content-Length: 10000000\r\n\r\nip=10.0.0.1"
        );
        let started = Instant::now();
        let r = send_raw(node.addr(), head.as_bytes());
        // The read timeout is 10 s: well under it means nothing waited for the body.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 413, "{path}: {}", r.body);
        assert!(r.json_error().contains("1024"), "{}", r.body);
    }
    let list = http(
        "GET",
        &format!("{}/v1/registration/web", node.url),
        None,
        "",
    );
    assert!(list.1.contains(r#""hosts":[]"#), "{}", list.1);
}

/// Registers `n` hosts of `service` with large tags, so that its host list is big.
fn register_many(addr: &str, service: &str, n: usize) {
    let tags: String = (0..30)
        .map(|i| format!(r#""tag{i}":"{}""#, "v".repeat(40)))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..n {
        let body = format!(
            r#"{{"ip":"10.1.{}.{}","port":80,"revision":"r","tags":{{{tags}}}}}"#,
            i / 250,
            i % 250 + 1
        );
        let request = format!(
            "POST /v1/registration/{service} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(send_raw(addr, request.as_bytes()).status, 200);
    }
}

/// Pipelines reads of the big list on a new connection and never reads an answer, until
/// the socket takes no more: the server's send buffer and ours are full, its write is
/// pending and it has stopped reading.
fn stall(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let batch = "GET /v1/registration/big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    loop {
        match s.write(batch.as_bytes()) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return s;
            }
            Err(e) => panic!("the server closed a stalled connection too early: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server kept reading"
        );
    }
}

#[test]
fn clients_that_never_read_are_cut_and_healthz_answers_within_the_write_timeout() {
    let write_timeout = Duration::from_secs(2);
    let node = Node::start(&["--max-connections", "2", "--write-timeout", "2s"]);
    register_many(node.addr(), "big", 200);
    // Both slots held by clients whose answers are stuck in full buffers.
    let _stalled: Vec<TcpStream> = (0..2).map(|_| stall(node.addr())).collect();
    let started = Instant::now();
    let r = send_raw(node.addr(), &get("/healthz", ""));
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited < write_timeout + Duration::from_secs(2),
        "/healthz took {waited:?} with a write timeout of {write_timeout:?}"
    );
    // The slots were freed by the write timeout, and counted.
    wait_until(
        "both stalled connections cut",
        Duration::from_secs(10),
        || {
            let (_, metrics) = http("GET", &format!("{}/metrics", node.url), None, "");
            metrics.contains("discovery_write_timeouts_total 2")
        },
    );
}

/// Reads one answer with a `Content-Length` body off a kept-alive connection.
fn read_one(s: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let len: usize = head
        .split("content-length: ")
        .nth(1)
        .and_then(|v| v.split("\r\n").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse(&raw)
}

/// Whether the server closes `s` within `within` (reads nothing more, then EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

#[test]
fn idle_and_slow_clients_are_cut_after_the_read_timeout() {
    let read_timeout = Duration::from_secs(1);
    let margin = Duration::from_secs(2);
    let node = Node::start(&["--max-connections", "1", "--read-timeout", "1s"]);
    // An idle kept-alive connection holds the only slot until the read timeout.
    let mut idle = TcpStream::connect(node.addr()).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut idle).status, 200);
    let started = Instant::now();
    let r = send_raw(node.addr(), &get("/healthz", ""));
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < read_timeout + margin,
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
    // A head that never ends: cut without an answer.
    let mut slow_head = TcpStream::connect(node.addr()).unwrap();
    slow_head.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow_head, read_timeout + margin));
    assert!(started.elapsed() < read_timeout + margin);
    // A body that never ends: 408 in JSON, then the connection is closed.
    let mut slow_body = TcpStream::connect(node.addr()).unwrap();
    slow_body
        .write_all(
            b"POST /v1/registration/web HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nip=10",
        )
        .unwrap();
    let started = Instant::now();
    slow_body
        .set_read_timeout(Some(read_timeout + margin))
        .unwrap();
    let r = read_one(&mut slow_body);
    assert!(started.elapsed() < read_timeout + margin);
    assert_eq!(r.status, 408);
    assert!(
        r.json_error().contains("did not arrive in time"),
        "{}",
        r.body
    );
    assert!(closed_within(&mut slow_body, margin));
}

#[test]
fn invented_methods_are_counted_as_other_not_one_series_each() {
    let node = Node::start(&[]);
    for i in 0..20 {
        let r = send_raw(
            node.addr(),
            format!("FOO{i} /v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 405);
        r.json_error();
    }
    let (_, metrics) = http("GET", &format!("{}/metrics", node.url), None, "");
    assert!(!metrics.contains("FOO"), "{metrics}");
    assert!(
        metrics.contains(
            r#"discovery_http_requests_total{route="/v1/services",method="OTHER",status="405"} 20"#
        ),
        "{metrics}"
    );
}

#[test]
fn refusals_by_a_limit_are_each_counted_but_logged_at_most_once_per_interval() {
    let (node, logs) = Node::start_logged(&["--max-body", "1KiB"]);
    let over = "POST /v1/registration/web HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\n";
    for _ in 0..50 {
        assert_eq!(send_raw(node.addr(), over.as_bytes()).status, 413);
    }
    let counted = r#"discovery_http_requests_total{route="/v1/registration/{service}",method="POST",status="413"} 50"#;
    let (_, metrics) = http("GET", &format!("{}/metrics", node.url), None, "");
    assert!(metrics.contains(counted), "{metrics}");
    wait_until("the first refusal logged", Duration::from_secs(10), || {
        logs.contains("refused by a limit")
    });
    let lines = logs.text().matches("refused by a limit").count();
    assert_eq!(lines, 1, "{}", logs.text());
}
