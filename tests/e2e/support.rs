//! Starting the binary and talking HTTP to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The `consentry` binary cargo built for this test run.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_consentry"))
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https` with TLS).
    pub url: String,
    /// The admin listener's URL, when it has one.
    pub admin_url: Option<String>,
    /// The gRPC listener's URL, when it was given `--grpc-bind`.
    pub grpc_url: Option<String>,
    /// The certificate (DER) to trust for an `https` server.
    pub tls_root: Option<Vec<u8>>,
    /// The consent store the server made for itself, if it was given none.
    _store: Option<tempfile::TempDir>,
    /// The decision log directory, unless the test chose one with `--audit`.
    pub audit: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `consentry serve --policies DIR` on a free port with an admin
    /// token, over a fresh store in a temporary directory into which the
    /// directory was imported first, so that the server's own load of it
    /// changes nothing and its decision log starts with its decisions.
    pub fn start(policies: &Path, extra: &[&str]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let location = store.path().to_str().unwrap().to_owned();
        import_policies(policies, &location);
        let mut server = Self::start_with(policies, &location, ADMIN_TOKEN, extra);
        server._store = Some(store);
        server
    }

    /// Starts `consentry serve --policies DIR --store STORE` on a free port,
    /// with `token` as the admin token. The store outlives the server.
    pub fn start_with(policies: &Path, store: &str, token: &str, extra: &[&str]) -> Self {
        Self::start_serving(Some(policies), store, token, extra)
    }

    /// Starts `consentry serve --store STORE` without a policy directory:
    /// the store holds the policies, and the API manages them.
    pub fn start_managed(store: &str, extra: &[&str]) -> Self {
        Self::start_serving(None, store, ADMIN_TOKEN, extra)
    }

    /// [`Server::start_managed`] over a fresh temporary store into which the
    /// bundled pack was imported (`consentry policies import`).
    pub fn start_managed_pack(extra: &[&str]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let location = store.path().to_str().unwrap().to_owned();
        import_policies(&repo_root().join("policies"), &location);
        let mut server = Self::start_managed(&location, extra);
        server._store = Some(store);
        server
    }

    fn start_serving(policies: Option<&Path>, store: &str, token: &str, extra: &[&str]) -> Self {
        let audit = (!extra.contains(&"--audit")).then(|| tempfile::tempdir().unwrap());
        let audit_args: Vec<&Path> = audit.iter().map(tempfile::TempDir::path).collect();
        let mut command = binary();
        command.args(["serve", "--bind", "127.0.0.1:0"]);
        if let Some(policies) = policies {
            command.arg("--policies").arg(policies);
        }
        command
            .arg("--store")
            .arg(store)
            .args(audit_args.iter().flat_map(|dir| [Path::new("--audit"), dir]))
            .args(extra)
            .env("CONSENTRY_ADMIN_TOKEN", token);
        let mut server = Self::launch(command, false);
        server.audit = audit;
        server
    }

    /// Starts `consentry ARGS` with only `env` among the `CONSENTRY_`
    /// variables (no admin token unless given), and waits for its address
    /// and, with `admin`, its admin listener's.
    pub fn start_args(args: &[&str], env: &[(&str, &str)], admin: bool) -> Self {
        let mut command = clean(binary());
        command.args(args).envs(env.iter().copied());
        Self::launch(command, admin)
    }

    /// Starts `command`, a `consentry serve` however it is wrapped (under
    /// `prlimit`, say), and waits for its address.
    pub fn start_command(command: Command) -> Self {
        Self::launch(command, false)
    }

    fn launch(mut command: Command, admin: bool) -> Self {
        let grpc = command.get_args().any(|arg| arg == "--grpc-bind");
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start consentry");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut wait_for = |prefix: &str| loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(prefix) {
                        return url.to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("consentry did not report `{prefix}…`; status: {:?}", child.try_wait());
                }
            }
        };
        let url = wait_for("consentry listening on ");
        let admin_url = admin.then(|| wait_for("consentry admin listening on "));
        let grpc_url = grpc.then(|| wait_for("consentry grpc listening on "));
        Self { child, url, admin_url, grpc_url, tls_root: None, _store: None, audit: None }
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, no flush,
    /// and waits for it to be gone.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "the server was killed by SIGKILL: {status:?}");
        }
        #[cfg(not(unix))]
        let _ = status;
    }

    /// Asks the process to stop with SIGTERM, as an orchestrator does, and
    /// waits for it to exit; returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "the server did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// POSTs JSON; returns status and JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, Some(("application/json", body.to_string())), None)
    }

    /// GETs a path; returns status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None, None)
    }

    /// The value of the Prometheus counter or gauge `name` in `/metrics`
    /// (0 before it is first set).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, metrics) = self.get("/metrics");
        assert_eq!(status, 200);
        let text = metrics.as_str().unwrap().to_owned();
        let value = text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' '));
        value.map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// POSTs JSON with extra headers; returns status and JSON body.
    pub fn send_with_headers(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut request = agent.post(&format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send_json(body).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap_or(Value::Null))
    }

    /// Any request, with an optional typed body and bearer token.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        token: Option<&str>,
    ) -> (u16, Value) {
        self.send_to(&self.url, method, path, body, token)
    }

    /// [`Server::send`] to the listener at `base`, e.g. [`Server::admin_url`].
    pub fn send_to(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some(der) = &self.tls_root {
            let root = ureq::tls::Certificate::from_der(der).to_owned();
            let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![root]));
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let agent: ureq::Agent = config.build().into();
        let url = format!("{base}{path}");
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some((content_type, body)) => {
                agent.run(request.header("content-type", content_type).body(body).unwrap())
            }
            None => agent.run(request.body(()).unwrap()),
        }
        .unwrap();
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
}

impl Server {
    /// Announces a JSON body of `length` bytes but sends only its first
    /// kilobyte, then reads the answer. A server that refuses an oversized
    /// body answers before the body arrives; sending the whole body would
    /// race against the server closing the connection.
    pub fn post_announcing_length(&self, path: &str, length: usize) -> (u16, Value) {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&vec![b' '; 1024.min(length)]).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let json = body
            .lines()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        (status, json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` without the `CONSENTRY_` variables of the test's environment,
/// but the test suite's own (`CONSENTRY_TEST_…`).
pub fn clean(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("CONSENTRY_") && !text.starts_with("CONSENTRY_TEST_") {
            command.env_remove(&name);
        }
    }
    command
}

/// Runs `consentry ARGS` (see [`Server::start_args`]) that must exit
/// without listening; returns its exit code and stderr. A server that
/// starts instead is killed and the test fails.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = clean(binary())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start consentry");
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if line.starts_with("consentry listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("consentry {args:?} started serving: {line}");
        }
    }
    let status = child.wait().unwrap();
    (status.code(), errors.join().unwrap())
}

/// `consentry audit verify LOG`, with `--anchor` for each of `anchors`;
/// returns its exit code and its stdout followed by its stderr.
pub fn audit_verify(log: impl AsRef<std::ffi::OsStr>, anchors: &[&str]) -> (Option<i32>, String) {
    let mut command = binary();
    command.args(["audit", "verify"]).arg(log);
    for anchor in anchors {
        command.args(["--anchor", anchor]);
    }
    let output = command.output().unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// `PUT /v1/consents/{id}` with the admin token; returns status and JSON body.
pub fn put_consent(server: &Server, id: &str, body: &Value) -> (u16, Value) {
    server.send(
        "PUT",
        &format!("/v1/consents/{id}"),
        Some(("application/json", body.to_string())),
        Some(ADMIN_TOKEN),
    )
}

/// `PATCH /v1/entities` with `patch`, under the admin token.
pub fn patch_entities(server: &Server, patch: &Value) -> (u16, Value) {
    server.send("PATCH", "/v1/entities", Some(("application/json", patch.to_string())), Some(ADMIN_TOKEN))
}

/// dr-ali leaves the break-glass group, as the admin API's example patch
/// (`examples/entities-patch-ali-leaves-break-glass.json`) does, keeping his organization.
pub fn ali_leaves_break_glass() -> Value {
    serde_json::json!({"upsert": [{"uid": {"type": "Practitioner", "id": "dr-ali"},
        "attrs": {"role": "physician", "organization": {"type": "Organization", "id": "st-mary"}},
        "parents": [{"type": "Organization", "id": "st-mary"}]}]})
}

/// The quick start's consent (`c-100`, FHIR R4; `examples/consent-c-100.json`): patient p-100 lets St. Mary's
/// access her records for treatment from 2026 to 2030, except PSY-labelled ones.
pub const README_CONSENT: &str = r#"{"resourceType": "Consent", "id": "c-100", "status": "active", "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}, "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "patient": {"reference": "Patient/p-100"}, "dateTime": "2026-01-15", "provision": {"type": "permit", "period": {"start": "2026-01-01"}, "actor": [{"reference": {"reference": "Organization/st-mary"}}], "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}], "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}], "provision": [{"type": "deny", "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]}}"#;

/// [`README_CONSENT`] as JSON, with `status` replaced.
pub fn readme_consent(status: &str) -> Value {
    let mut consent: Value = serde_json::from_str(README_CONSENT).unwrap();
    consent["status"] = Value::String(status.to_owned());
    consent
}

/// Dr. Weber (St. Mary's) reads `resource` for treatment.
pub fn weber_reads(resource: &str) -> Value {
    cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        &format!("Record::\"{resource}\""),
        serde_json::json!({"purpose": "TREAT"}),
    )
}

/// Dr. Ali (break-glass group) breaks the glass on `resource`.
pub fn ali_breaks_the_glass(resource: &str) -> Value {
    cedar_request(
        "Practitioner::\"dr-ali\"",
        "Action::\"read\"",
        &format!("Record::\"{resource}\""),
        serde_json::json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    )
}

/// `(decision, outcome)` of a decision the server must answer with 200.
pub fn decide(server: &Server, request: &Value) -> (String, String) {
    let (status, answer) = server.post("/v1/is_authorized", request);
    assert_eq!(status, 200, "{answer}");
    (answer["decision"].as_str().unwrap().to_owned(), answer["outcome"].as_str().unwrap().to_owned())
}

/// Asks `server` until `request` is decided `decision`, failing after
/// `timeout`. Only a decision that never comes fails; a slow one does not.
pub fn poll_until(server: &Server, request: &Value, decision: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (status, answer) = server.post("/v1/is_authorized", request);
        assert_eq!(status, 200, "{answer}");
        if answer["decision"] == decision {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "still not {decision} after {timeout:?}: {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A decision request in the cedar-agent format.
pub fn cedar_request(principal: &str, action: &str, resource: &str, context: Value) -> Value {
    serde_json::json!({"principal": principal, "action": action, "resource": resource, "context": context})
}

/// Copies the bundled policy directory (its files, not its tests) into `into`.
pub fn copy_policies(into: &Path) {
    for entry in std::fs::read_dir(repo_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, into.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Polls `/readyz` with its details (the admin token's view) until `done`
/// holds; fails naming `what` after `within`.
pub fn wait_for_readyz(
    server: &Server,
    what: &str,
    within: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (_, ready) = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
        if done(&ready) {
            return ready;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; /readyz: {ready}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `consentry policies import DIR --store STORE`, which must succeed: the
/// directory becomes the store's newest policy version.
pub fn import_policies(dir: &Path, store: &str) {
    let output = binary().args(["policies", "import"]).arg(dir).args(["--store", store]).output().unwrap();
    assert!(
        output.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The entries of `patient`'s access log that `wanted` picks, once there
/// are `count` of them (the log is written in the background); fails after 30 s.
pub fn wait_for_log(
    server: &Server,
    patient: &str,
    count: usize,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/v1/patients/{patient}/access-log");
        let (status, log) = server.send("GET", &path, None, Some(ADMIN_TOKEN));
        assert_eq!(status, 200, "{log}");
        let entries: Vec<Value> =
            log["entries"].as_array().unwrap().iter().filter(|e| wanted(e)).cloned().collect();
        if entries.len() >= count {
            return entries;
        }
        assert!(std::time::Instant::now() < deadline, "{count} entries never came: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
