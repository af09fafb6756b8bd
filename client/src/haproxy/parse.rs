//! Readers of HAProxy's `show` answers: `show servers state <backend>`, `show stat
//! <backend> 4 -1` and `show info`.
//!
//! Columns are found by the names in each answer's header line, never by position, so a
//! HAProxy that adds columns still parses. Pure: text in, rows out. What the numbers mean
//! for the sync (up, down, drained) is decided here once, from HAProxy's own constants
//! (`include/haproxy/server-t.h`, `check-t.h`), and nowhere else.

use std::collections::HashMap;

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ParseError(String);

/// A server's administrative state, from `srv_admin_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admin {
    /// Takes traffic (if healthy).
    Ready,
    /// Forced or inherited drain: keeps its sessions, takes no new ones.
    Drain,
    /// Any maintenance (forced, inherited, from the config, from resolution): no traffic.
    Maint,
}

/// A server's health as HAProxy's checks see it, from `srv_op_state` and `srv_check_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Checks run and the server is up (running, starting or stopping).
    Up,
    /// Checks run and the server is down (or forced down until its first checks pass).
    Down,
    /// Checks are not enabled: HAProxy considers the server up unconditionally.
    Unchecked,
}

/// One row of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerStateRow {
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) port: u16,
    /// The user weight (`set server ... weight`), 0-256.
    pub(crate) weight: u16,
    pub(crate) admin: Admin,
    pub(crate) health: Health,
    /// Whether health checks are enabled (`enable health` was run, or `check` in config).
    pub(crate) checks_enabled: bool,
}

/// `srv_admin_state` bits (server-t.h): FMAINT 0x01, IMAINT 0x02, CMAINT 0x04, FDRAIN
/// 0x08, IDRAIN 0x10, RMAINT 0x20, HMAINT 0x40.
const ADMF_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
const ADMF_DRAIN: u32 = 0x08 | 0x10;
/// `srv_op_state` 0 is SRV_ST_STOPPED; 1 starting, 2 running, 3 stopping.
const OP_STOPPED: u32 = 0;
/// `srv_check_state` bit CHK_ST_ENABLED (check-t.h).
const CHK_ST_ENABLED: u32 = 0x04;

/// Reads `show servers state <backend>`: a format version line (`1`), a `#` header, one
/// row per server. HAProxy's error sentences (`Can't find backend.`) are errors.
pub(crate) fn servers_state(answer: &str) -> Result<Vec<ServerStateRow>, ParseError> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().unwrap_or_default().trim();
    if version != "1" {
        return Err(ParseError(format!(
            "expected format version 1, got {:?}",
            first_words(version)
        )));
    }
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .ok_or_else(|| ParseError("no header line".into()))?;
    let columns = Columns::new(header.split_whitespace());
    let name = columns.index("srv_name")?;
    let addr = columns.index("srv_addr")?;
    let port = columns.index("srv_port")?;
    let op = columns.index("srv_op_state")?;
    let admin = columns.index("srv_admin_state")?;
    let weight = columns.index("srv_uweight")?;
    let check = columns.index("srv_check_state")?;
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| {
                fields
                    .get(i)
                    .copied()
                    .ok_or_else(|| ParseError(format!("short row {line:?}")))
            };
            let number = |i: usize| -> Result<u32, ParseError> {
                field(i)?
                    .parse()
                    .map_err(|_| ParseError(format!("not a number in column {i} of {line:?}")))
            };
            let admin_bits = number(admin)?;
            let checks_enabled = number(check)? & CHK_ST_ENABLED != 0;
            Ok(ServerStateRow {
                name: field(name)?.to_owned(),
                addr: field(addr)?.to_owned(),
                port: u16::try_from(number(port)?)
                    .map_err(|_| ParseError(format!("port out of range in {line:?}")))?,
                weight: u16::try_from(number(weight)?)
                    .map_err(|_| ParseError(format!("weight out of range in {line:?}")))?,
                admin: if admin_bits & ADMF_MAINT != 0 {
                    Admin::Maint
                } else if admin_bits & ADMF_DRAIN != 0 {
                    Admin::Drain
                } else {
                    Admin::Ready
                },
                health: if !checks_enabled {
                    Health::Unchecked
                } else if number(op)? == OP_STOPPED {
                    Health::Down
                } else {
                    Health::Up
                },
                checks_enabled,
            })
        })
        .collect()
}

/// The parts of one `show stat` server row the sync uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatRow {
    pub(crate) name: String,
    /// Current sessions.
    pub(crate) sessions: u64,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, `UP 1/2`...
    pub(crate) status: String,
    /// The last check's result: `L7OK`, `L4CON`, `INI`..., empty without checks.
    pub(crate) check_status: String,
}

/// Reads `show stat <backend> 4 -1` (CSV with a `# pxname,svname,...` header). Only
/// server rows are kept.
pub(crate) fn stat(answer: &str) -> Result<Vec<StatRow>, ParseError> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| ParseError(format!("no CSV header but {:?}", first_words(answer))))?;
    let columns = Columns::new(header.split(','));
    let name = columns.index("svname")?;
    let sessions = columns.index("scur")?;
    let status = columns.index("status")?;
    let check_status = columns.index("check_status")?;
    let kind = columns.index("type")?;
    let mut rows = Vec::new();
    for line in lines {
        let fields = split_csv(line);
        let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or_default();
        // type 2 is a server; the backend's own row (BACKEND) is type 1.
        if field(kind) != "2" {
            continue;
        }
        rows.push(StatRow {
            name: field(name).to_owned(),
            sessions: field(sessions).parse().unwrap_or(0),
            status: field(status).to_owned(),
            check_status: field(check_status).to_owned(),
        });
    }
    Ok(rows)
}

/// The parts of `show info` that identify one HAProxy process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessInfo {
    /// The process id: a reload starts a new process, which loses every runtime change.
    pub(crate) pid: u32,
    /// Seconds since this process started.
    pub(crate) uptime_sec: u64,
}

/// Reads `show info` (`Name: value` lines).
pub(crate) fn info(answer: &str) -> Result<ProcessInfo, ParseError> {
    let values: HashMap<&str, &str> = answer
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let number = |key: &str| {
        values
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ParseError(format!("no {key} in {:?}", first_words(answer))))
    };
    Ok(ProcessInfo {
        pid: u32::try_from(number("Pid")?).map_err(|_| ParseError("pid out of range".into()))?,
        uptime_sec: number("Uptime_sec")?,
    })
}

/// Column positions by name.
struct Columns(HashMap<String, usize>);

impl Columns {
    fn new<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        Columns(
            names
                .enumerate()
                .map(|(i, n)| (n.trim().to_owned(), i))
                .collect(),
        )
    }

    fn index(&self, name: &str) -> Result<usize, ParseError> {
        self.0
            .get(name)
            .copied()
            .ok_or_else(|| ParseError(format!("no column {name}")))
    }
}

/// Splits one CSV line; HAProxy quotes a field (with `""` for a quote) when it holds a
/// comma, which free-text columns such as `last_chk` can.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The start of an unexpected answer, for an error message.
fn first_words(text: &str) -> String {
    text.trim().chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from HAProxy 2.6.12: a config server in maintenance, a dynamic server up,
    /// one on IPv6, one down, one drained, one added without `enable health`.
    const SERVERS_STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be 1 keep 127.0.0.1 0 5 1 1 2 1 0 0 8 0 0 0 - 1 - 0 0 - - 0
3 be 2 d-a 127.0.0.1 2 0 5 5 1 15 3 2 6 0 0 0 - 18581 - 0 0 - - 0
3 be 3 d-6 ::1 2 0 5 5 1 15 3 2 6 0 0 0 - 18582 - 0 0 - - 0
3 be 4 d-x 127.0.0.1 0 0 5 5 1 8 2 0 6 0 0 0 - 18589 - 0 0 - - 0
3 be 5 d-d 127.0.0.1 2 8 9 5 1 15 3 2 6 0 0 0 - 18583 - 0 0 - - 0
3 be 6 d-n 127.0.0.1 0 1 3 3 1 0 0 0 2 0 0 0 - 18584 - 0 0 - - 0

";

    #[test]
    fn servers_state_rows_say_admin_state_health_and_weight() {
        let rows = servers_state(SERVERS_STATE).unwrap();
        let by_name = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        let keep = by_name("keep");
        assert_eq!((keep.admin, keep.health), (Admin::Maint, Health::Unchecked));
        let up = by_name("d-a");
        assert_eq!(
            (up.addr.as_str(), up.port, up.weight, up.admin, up.health),
            ("127.0.0.1", 18581, 5, Admin::Ready, Health::Up)
        );
        assert_eq!(by_name("d-6").addr, "::1");
        assert_eq!(by_name("d-x").health, Health::Down);
        let drained = by_name("d-d");
        assert_eq!((drained.admin, drained.weight), (Admin::Drain, 9));
        let unchecked = by_name("d-n");
        assert_eq!(
            (unchecked.admin, unchecked.health, unchecked.checks_enabled),
            (Admin::Maint, Health::Unchecked, false)
        );
    }

    #[test]
    fn an_empty_backend_has_no_rows_and_an_unknown_one_is_an_error() {
        let empty = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_check_state srv_port\n\n";
        assert_eq!(servers_state(empty).unwrap(), vec![]);
        let err = servers_state("Can't find backend.\n\n").unwrap_err();
        assert!(err.to_string().contains("Can't find backend."), "{err}");
    }

    #[test]
    fn stat_rows_keep_servers_only_and_survive_quoted_commas() {
        let answer = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,last_chk\n\
be,d-a,0,0,3,5,,10,0,0,,0,,0,0,0,0,UP,5,1,0,0,0,12,0,,1,3,2,,10,,2,0,,1,L7OK,\"a, b\"\n\
be,BACKEND,0,0,3,5,,10,0,0,0,0,,0,0,0,0,UP,5,1,0,,0,12,0,,1,3,0,,10,,1,0,,1,,\n";
        let rows = stat(answer).unwrap();
        assert_eq!(
            rows,
            vec![StatRow {
                name: "d-a".into(),
                sessions: 3,
                status: "UP".into(),
                check_status: "L7OK".into(),
            }]
        );
        assert!(stat("No such proxy.\n").is_err());
    }

    #[test]
    fn info_gives_pid_and_uptime() {
        let answer = "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 10932\nUptime: 0d 0h00m01s\nUptime_sec: 1\n";
        assert_eq!(
            info(answer).unwrap(),
            ProcessInfo {
                pid: 10932,
                uptime_sec: 1
            }
        );
        assert!(info("Unknown command.\n").is_err());
    }
}
