//! Issue 16: what operators see. Metrics by API, route, cache, store
//! operation and reload; traces sent over OTLP/HTTP to a real receiver,
//! joined to the caller's `traceparent`; logs as JSON or text without
//! colour codes; and the example configuration starting as shipped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

use crate::support::{Server, binary, clean, copy_policies, decide, repo_root, weber_reads};

/// The metric lines of `/metrics` whose name is `name`.
fn lines_of(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .map(str::to_owned)
        .collect()
}

/// The value of the first line of `name` holding every one of `labels`.
fn value_with(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    lines_of(text, name)
        .iter()
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn metrics_text(server: &Server) -> String {
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    text.as_str().unwrap().to_owned()
}

#[test]
fn metrics_count_decisions_routes_caches_and_store_operations_with_help_and_no_ids() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    decide(&server, &weber_reads("obs-metrics-1"));
    decide(&server, &weber_reads("obs-metrics-1"));
    let request = weber_reads("obs-metrics-2");
    let (status, _) = server.post("/v1/is_authorized/batch", &json!({"requests": [request, request]}));
    assert_eq!(status, 200);
    let evaluation = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-metrics-3"},
        "context": {"purpose": "TREAT"}
    });
    assert_eq!(server.post("/access/v1/evaluation", &evaluation).0, 200);
    // A patient planning over their own records: every one is allowed.
    let plan = json!({"principal": "Patient::\"p-100\"", "action": "Action::\"read\"", "resource_type": "Record",
                      "patient": {"type": "Patient", "id": "p-100"}, "context": {"purpose": "PATRQT"}});
    assert_eq!(server.post("/v1/plan", &plan).0, 200);
    let secret_id = "p-obs-secret-4711";
    let path = format!("/v1/patients/{secret_id}/consents");
    assert_eq!(server.send("GET", &path, None, Some(crate::support::ADMIN_TOKEN)).0, 200);
    assert_eq!(server.get("/no/such/route/p-obs-secret-4712").0, 404);

    let text = metrics_text(&server);
    let decisions = consentry::metrics::DECISIONS;
    assert_eq!(value_with(&text, decisions, &[r#"api="is_authorized""#]), Some(2.0), "{text}");
    assert_eq!(value_with(&text, decisions, &[r#"api="batch""#]), Some(2.0), "{text}");
    assert_eq!(value_with(&text, decisions, &[r#"api="evaluation""#]), Some(1.0), "{text}");
    assert_eq!(value_with(&text, decisions, &[r#"api="plan""#, r#"outcome="always""#]), Some(1.0), "{text}");
    assert!(lines_of(&text, decisions).iter().all(|l| l.contains("outcome=")), "{text}");
    let duration = format!("{}_count", consentry::metrics::DECISION_DURATION);
    assert_eq!(
        value_with(&text, &duration, &[r#"api="batch""#]),
        Some(1.0),
        "a batch is answered once: {text}"
    );

    let http = consentry::metrics::HTTP_REQUESTS;
    let consents_route = [r#"route="/v1/patients/{id}/consents""#, r#"status="200""#, r#"method="GET""#];
    assert_eq!(value_with(&text, http, &consents_route), Some(1.0), "{text}");
    assert_eq!(value_with(&text, http, &[r#"route="unmatched""#, r#"status="404""#]), Some(1.0), "{text}");
    assert!(!text.contains("p-obs-secret"), "an id in a label: {text}");

    // The same record twice: its entities were loaded once, then found.
    let hits = consentry::metrics::CACHE_HITS;
    let misses = consentry::metrics::CACHE_MISSES;
    assert!(value_with(&text, misses, &[r#"cache="entities""#]).is_some_and(|v| v >= 1.0), "{text}");
    assert!(value_with(&text, hits, &[r#"cache="entities""#]).is_some_and(|v| v >= 1.0), "{text}");
    let store = format!("{}_count", consentry::metrics::STORE_DURATION);
    let read = [r#"operation="entities_read""#, r#"result="ok""#];
    assert!(value_with(&text, &store, &read).is_some_and(|v| v >= 1.0), "{text}");

    // Every metric exposed has HELP text, and the operators' documentation lists it.
    let listed = std::fs::read_to_string(repo_root().join("docs/operators/observability.md")).unwrap();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for `{name}`");
        assert!(
            listed.contains(&format!("`{name}`")),
            "docs/operators/observability.md does not list `{name}`"
        );
    }
    for metric in consentry::metrics::CATALOG {
        assert!(
            listed.contains(&format!("`{}`", metric.name)),
            "docs/operators/observability.md does not list `{}`",
            metric.name
        );
    }
}

#[test]
fn a_refused_reload_of_the_policy_directory_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let server = Server::start(dir.path(), &["--watch", "--watch-settle", "100ms"]);
    std::fs::write(dir.path().join("broken.cedar"), "permit(principal,").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let labels = [r#"kind="policies""#, r#"outcome="refused""#];
    while value_with(&metrics_text(&server), consentry::metrics::RELOADS, &labels).is_none() {
        assert!(Instant::now() < deadline, "no refused reload counted: {}", metrics_text(&server));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An OTLP/HTTP receiver on a free port: the spans of every export it is sent.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    #[allow(clippy::disallowed_methods)] // a test server, not part of the API
    fn start() -> Self {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::StatusCode;

        async fn export(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> StatusCode {
            let Ok(request) = ExportTraceServiceRequest::decode(body) else { return StatusCode::BAD_REQUEST };
            let mut spans = spans.lock().unwrap();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            StatusCode::OK
        }

        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(Arc::clone(&spans));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, spans, _runtime: runtime }
    }

    /// The spans received of trace `trace_id`, by name, once `names` all arrived.
    fn wait_for(&self, trace_id: &str, names: &[&str]) -> HashMap<String, Vec<Span>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut by_name: HashMap<String, Vec<Span>> = HashMap::new();
            for span in self.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id) {
                by_name.entry(span.name.clone()).or_default().push(span.clone());
            }
            if names.iter().all(|name| by_name.contains_key(*name)) {
                return by_name;
            }
            let seen: Vec<&String> = by_name.keys().collect();
            assert!(Instant::now() < deadline, "spans {names:?} of {trace_id} did not arrive; got {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn traces_reach_an_otlp_receiver_under_the_callers_trace_with_child_spans() {
    let receiver = Receiver::start();
    let store = tempfile::tempdir().unwrap();
    let location = store.path().to_str().unwrap().to_owned();
    crate::support::import_policies(&repo_root().join("policies"), &location);
    let audit = store.path().join("audit");
    let plugins = crate::plugins::bundled_plugins_with_generous_limits(store.path());
    let mut command = clean(binary());
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--store", &location, "--otlp-endpoint", &receiver.endpoint])
        .arg("--policies")
        .arg(repo_root().join("policies"))
        .arg("--audit")
        .arg(&audit)
        .arg("--plugins")
        .arg(&plugins)
        // The SDK's own setting: send every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let server = Server::start_command(command);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, answer) = server.send_with_headers(
        "/v1/is_authorized",
        &weber_reads("obs-trace-1"),
        &[("traceparent", &format!("00-{trace_id}-{caller_span}-01"))],
    );
    assert_eq!(status, 200, "{answer}");

    let request_name = "POST /v1/is_authorized";
    let spans = receiver.wait_for(trace_id, &[request_name, "decision", "store", "plugin", "audit"]);
    let request = &spans[request_name][0];
    assert_eq!(hex(&request.parent_span_id), caller_span, "the request span is the caller's child");
    let decision = &spans["decision"][0];
    assert_eq!(decision.parent_span_id, request.span_id, "the decision is the request's child");
    for child in ["store", "plugin", "audit"] {
        for span in &spans[child] {
            assert_eq!(span.parent_span_id, decision.span_id, "a `{child}` span is the decision's child");
        }
    }
    let attributes: Vec<String> =
        request.attributes.iter().map(|a| format!("{}={:?}", a.key, a.value)).collect();
    assert!(
        attributes.iter().any(|a| a.starts_with("http.route=") && a.contains("/v1/is_authorized")),
        "{attributes:?}"
    );
    assert!(!format!("{spans:?}").contains("TREAT"), "a request body's value reached a span");

    // Without a traceparent, the request starts a trace of its own.
    assert_eq!(server.post("/v1/is_authorized", &weber_reads("obs-trace-2")).0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let others = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == request_name && hex(&s.trace_id) != trace_id)
            .count();
        if others > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no span of a request without a traceparent");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `consentry serve` with stderr, where logs go, written to a file (so not
/// a terminal); returns the process, its URL and the file.
fn serve_logging(flags: &[&str], env: &[(&str, &str)]) -> (Child, String, Logged) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut command: Command = clean(binary());
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--store", store.path().to_str().unwrap()])
        .arg("--policies")
        .arg(repo_root().join("policies"))
        .args(flags)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the server did not start");
        if let Some(url) = line.strip_prefix("consentry listening on ") {
            break url.to_owned();
        }
    };
    (child, url, Logged { log, _store: store })
}

/// Where a server's logs went, and its store.
struct Logged {
    log: tempfile::NamedTempFile,
    _store: tempfile::TempDir,
}

fn post(url: &str, path: &str, body: &Value) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    agent.post(&format!("{url}{path}")).send_json(body).unwrap().status().as_u16()
}

/// Stops `child` and returns what it logged.
fn stop(mut child: Child, logged: &Logged) -> String {
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(logged.log.path()).unwrap()
}

#[test]
fn json_logs_are_one_object_per_line_with_identifiers_and_no_body() {
    let env = [("RUST_LOG", "info,consentry=debug")];
    let (child, url, log) = serve_logging(&["--log-format", "json"], &env);
    let secret = "obs-body-text-never-logged";
    // A justification is the free text a request carries.
    let mut request = crate::support::ali_breaks_the_glass("obs-log-1");
    request["context"]["justification"] = Value::String(secret.to_owned());
    assert_eq!(post(&url, "/v1/is_authorized", &request), 200);
    let text = stop(child, &log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing was logged");
    let mut answered = false;
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
        answered |= event["message"] == "answered" && event["http.route"] == "/v1/is_authorized";
    }
    assert!(answered, "no `answered` event naming the route: {text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
    assert!(!text.contains(secret), "a request body reached the log: {text}");
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let (child, url, log) = serve_logging(&[], &[("RUST_LOG", "info,consentry=debug")]);
    assert_eq!(post(&url, "/v1/is_authorized", &weber_reads("obs-log-2")), 200);
    let text = stop(child, &log);
    assert!(text.contains("answered") && text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
    // `CONSENTRY_LOG_FORMAT` sets it too.
    let (child, url, log) = serve_logging(&[], &[("CONSENTRY_LOG_FORMAT", "json")]);
    assert_eq!(post(&url, "/v1/is_authorized", &weber_reads("obs-log-3")), 200);
    let text = stop(child, &log);
    assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{text}");
}

#[test]
fn the_example_configuration_starts_from_the_repository_root_and_decides() {
    let root = repo_root();
    let example = root.join("consentry.example.toml");
    assert!(Path::new(&example).is_file());
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let audit = scratch.path().join("audit");
    let mut command = clean(binary());
    // Only where the file points at this machine's shared places (its ports,
    // the store and log it would make in the checkout) is it overridden.
    command
        .current_dir(&root)
        .args(["serve", "--config", "consentry.example.toml"])
        .args(["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .arg("--store")
        .arg(&store)
        .arg("--audit")
        .arg(&audit);
    let server = Server::start_command(command);
    let (status, answer) = server.post("/v1/is_authorized", &weber_reads("obs-example-1"));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["decision"] == "Allow" || answer["decision"] == "Deny", "{answer}");
    assert_ne!(answer["outcome"], "failed_closed", "a fault, not a decision: {answer}");
    assert!(store.is_dir() && audit.is_dir(), "the store and log are the flags'");
}

#[test]
fn decisions_before_the_first_scrape_are_counted_without_a_decision_log() {
    let server = Server::start(&repo_root().join("policies"), &["--audit", "off"]);
    decide(&server, &weber_reads("obs-first-1"));
    let text = metrics_text(&server);
    assert_eq!(
        value_with(&text, consentry::metrics::DECISIONS, &[r#"api="is_authorized""#]),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(&format!("# HELP {} ", consentry::metrics::DECISIONS)), "{text}");
}
