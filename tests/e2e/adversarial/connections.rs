//! Connections that never finish sending (finding 11): with the usual 1,024
//! open files, about 1,080 idle connections used to make every decision
//! time out until they closed.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Server, ali_breaks_the_glass, repo_root};

/// More connections than the process has files.
const IDLE_CONNECTIONS: usize = 1100;

/// `consentry serve` with `files` open files at most (under `prlimit`) and
/// the connection deadlines `deadlines` (flags).
fn server_with(files: u32, deadlines: &[&str], dirs: &(tempfile::TempDir, tempfile::TempDir)) -> Server {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={files}:{files}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_consentry"))
        .args(["serve", "--bind", "127.0.0.1:0", "--policies"])
        .arg(repo_root().join("policies"))
        .arg("--store")
        .arg(dirs.0.path())
        .arg("--audit")
        .arg(dirs.1.path())
        .args(deadlines)
        .env("CONSENTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    Server::start_command(command)
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
}

/// What the `i`th idle connection sends: nothing, half a request head, or
/// a whole head announcing a body of which it sends a little.
fn open_idle(address: &str, i: usize) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    let sent = match i % 3 {
        0 => String::new(),
        1 => format!("POST /v1/is_authorized HTTP/1.1\r\nHost: {address}\r\n"),
        _ => format!(
            "POST /v1/is_authorized HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"principal\":"
        ),
    };
    stream.write_all(sent.as_bytes()).unwrap();
    stream
}

/// Reads until the server closes `stream`, or fails after a generous
/// minute; returns what the server sent.
fn read_until_closed(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("an idle connection was never closed: {error}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The test itself holds [`IDLE_CONNECTIONS`] sockets, more than the usual
/// soft limit of 1,024 files: it raises its own limit as far as it may.
fn allow_the_test_its_sockets() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || limit.maximum.is_none() {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).unwrap();
    }
    let needed = IDLE_CONNECTIONS as u64 + 64;
    let current = getrlimit(Resource::Nofile).current;
    assert!(
        current.is_none_or(|files| files >= needed),
        "the test needs {needed} open files, the hard limit allows {current:?}"
    );
}

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

#[test]
fn finding_11_decisions_are_answered_while_1100_idle_connections_are_open_and_the_process_has_1024_files() {
    let dirs = dirs();
    // Deadlines far longer than the test: the connections stay open.
    let long = ["--header-timeout", "5m", "--body-timeout", "5m", "--idle-timeout", "5m"];
    allow_the_test_its_sockets();
    let server = server_with(1024, &long, &dirs);
    let address = address(&server);
    let _idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS).map(|i| open_idle(&address, i)).collect();

    for _ in 0..20 {
        let (status, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
        assert_eq!((status, &answer["decision"]), (200, &"Allow".into()), "{answer}");
    }
    // There were more connections than files to spare: the ones idle the
    // longest made room.
    assert!(server.metric("consentry_connections_closed_total{reason=\"evicted\"}") > 0.0);
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_their_deadlines() {
    let dirs = dirs();
    let short = ["--header-timeout", "2s", "--body-timeout", "2s", "--idle-timeout", "3s"];
    let server = server_with(1024, &short, &dirs);
    let address = address(&server);
    let idle: Vec<TcpStream> = (0..30).map(|i| open_idle(&address, i)).collect();
    // A body that never arrives is answered 408 first.
    for (i, stream) in idle.into_iter().enumerate() {
        let answer = read_until_closed(stream);
        if i % 3 == 2 {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("listen.body_timeout"), "{answer}");
        } else {
            assert!(answer.is_empty(), "{answer}");
        }
    }
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
}
