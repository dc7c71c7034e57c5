//! OIDC, SMART on FHIR and IHE IUA tokens through the real binary (issue
//! 16): real RSA, P-256 and Ed25519 keys made here, the JWKS in a file or
//! on a real HTTP server, and tokens on the admin routes, in decisions and
//! in `ext_authz`. The server's log and decision log are searched for the
//! tokens afterwards: none may appear.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consentry_test_plugins::FHIR_REST_MAPPER;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::support::{binary, clean, copy_policies};

#[path = "../../host/src/identity/test_jwks.rs"]
mod test_jwks;
#[path = "../../host/src/identity/test_keys.rs"]
pub(crate) mod test_keys;
use test_keys::{AUDIENCE, ISSUER, TestKey, claims, now};

/// The key set document of `keys`, as the JWKS file or endpoint serves it.
fn jwks(keys: &[&TestKey]) -> String {
    test_keys::jwks(keys).to_string()
}

/// A server whose log (stderr, at `debug`) goes to a file the test reads.
struct Logged {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    audit: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Logged {
    fn start(config: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        copy_policies(&policies);
        let config_path = dir.path().join("consentry.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("server.log");
        let audit = tempfile::tempdir().unwrap();
        let mut command = clean(binary());
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--policies"])
            .arg(&policies)
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--audit")
            .arg(audit.path())
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .env("RUST_LOG", "debug,cranelift_codegen=warn,cranelift_frontend=warn,regalloc2=warn,wasmtime=warn,wasmtime_cranelift=warn,wasmtime_environ=warn,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("consentry listening on ") {
                        break url.to_owned();
                    }
                }
                _ => {
                    panic!("the server did not start: {}", std::fs::read_to_string(&log).unwrap_or_default())
                }
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url, log, audit, _dir: dir }
    }

    /// Sends a request; returns the status, the body and the raw body text.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => {
                agent.run(request.header("content-type", "application/json").body(body.to_string()).unwrap())
            }
            None => agent.run(request.body(()).unwrap()),
        }
        .unwrap();
        let status = response.status().as_u16();
        let mut text = String::new();
        for (name, value) in response.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or_default()));
        }
        let body_text = response.into_body().read_to_string().unwrap();
        text.push_str(&body_text);
        (status, serde_json::from_str(&body_text).unwrap_or(Value::Null), text)
    }

    fn bearer(&self, method: &str, path: &str, token: &str) -> (u16, Value, String) {
        self.send(method, path, None, &[("authorization", &format!("Bearer {token}"))])
    }

    /// Everything the server wrote: its log and its decision log.
    fn written(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap();
        for entry in walk(self.audit.path()) {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
        }
        all
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn identity_config(source: &str) -> String {
    format!(
        r#"[auth]
decisions = "open"

[identity]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}", "https://fhir.example/r4"]
{source}
clock_skew = "5s"
role_claim = "realm_access.roles"
patient_principal = "Patient/{{sub}}"

[identity.role_mapping]
"hospital-auditor" = ["auditor"]
"#
    )
}

fn plugins_toml(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("plugins.toml");
    let toml = consentry_test_plugins::with_generous_limits(&format!(
        "[[plugins]]\nname = \"fhir\"\npath = \"{FHIR_REST_MAPPER}\"\nhooks = [\"map-request\"]\n\
         [plugins.config]\nsearched_type_context = \"resource_type\"\n"
    ));
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn oidc_tokens_open_routes_and_speak_for_decisions() {
    let keys = [TestKey::rsa("rsa-1"), TestKey::p256("ec-1"), TestKey::ed25519("ed-1")];
    let files = tempfile::tempdir().unwrap();
    let jwks_path = files.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&keys.iter().collect::<Vec<_>>())).unwrap();
    let plugins = plugins_toml(files.path());
    let config = identity_config(&format!("jwks_file = {:?}", jwks_path.to_str().unwrap()));
    let server = Logged::start(&config, &["--plugins", plugins.to_str().unwrap()]);
    let mut tokens = Vec::new();

    // Each algorithm opens an admin route for a token with the mapped role.
    let auditor = claims(json!({"realm_access": {"roles": ["hospital-auditor"]}}));
    for key in &keys {
        let token = key.sign(&auditor);
        let (status, body, _) = server.bearer("GET", "/v1/audit/head", &token);
        assert_eq!(status, 200, "{:?}: {body}", key.algorithm);
        tokens.push(token);
    }

    // A valid token without the role is 403, naming the role.
    let token = keys[0].sign(&claims(json!({"realm_access": {"roles": ["decision"]}})));
    let (status, body, text) = server.bearer("GET", "/v1/audit/head", &token);
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("`auditor`"), "{body}");
    assert!(!text.contains(&token));
    tokens.push(token);

    // Invalid tokens are 401, each naming why and never echoing the token.
    let rsa = &keys[0];
    let confusion = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".to_owned());
        let secret = serde_json::to_vec(&rsa.jwk).unwrap();
        encode(&header, &auditor, &EncodingKey::from_secret(&secret).unwrap()).unwrap()
    };
    let none = {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", part(&json!({"alg": "none", "kid": "rsa-1"})), part(&auditor))
    };
    let impostor = TestKey::p256("ec-1");
    let refused = [
        (
            rsa.sign(&claims(json!({"iss": "https://evil.example", "realm_access": {"roles": ["auditor"]}}))),
            "issuer",
        ),
        (
            rsa.sign(&claims(json!({"aud": "another-service", "realm_access": {"roles": ["auditor"]}}))),
            "audience",
        ),
        (rsa.sign(&claims(json!({"exp": now() - 60, "realm_access": {"roles": ["auditor"]}}))), "expired"),
        (
            rsa.sign(&claims(json!({"nbf": now() + 600, "realm_access": {"roles": ["auditor"]}}))),
            "not valid yet",
        ),
        (impostor.sign(&auditor), "signature"),
        (rsa.sign_as("retired-key", &auditor), "`kid`"),
        (none, "`alg`"),
        (confusion, "`alg`"),
    ];
    for (token, why) in refused {
        let (status, body, text) = server.bearer("GET", "/v1/audit/head", &token);
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().unwrap().contains(why), "{why}: {body}");
        assert!(!text.contains(&token), "{why}: the answer repeats the token");
        tokens.push(token);
    }

    // A SMART patient app's token (v2 scopes) decides for its patient, with
    // the IUA purpose from the token overriding the caller's.
    let patient_app = keys[1].sign(&claims(json!({
        "fhirUser": "Patient/p-100",
        "patient": "p-100",
        "scope": "openid fhirUser launch/patient patient/Observation.rs",
        "extensions": {"ihe_iua": {"purpose_of_use": {"system": "urn:oid:2.16.840.1.113883.5.8", "code": "PATRQT"}}},
    })));
    let ask = |resource: &str, extra: Value| {
        let mut body = json!({"action": "Action::\"read\"", "resource": resource, "token": patient_app, "context": {"purpose": "TREAT"}});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        server.send("POST", "/v1/is_authorized", Some(&body), &[])
    };
    let (status, body, text) = ask("Record::\"obs-1\"", json!({}));
    assert_eq!((status, body["decision"].as_str()), (200, Some("Allow")), "{body}");
    assert_eq!(body["diagnostics"]["reason"], json!(["own-records"]));
    assert!(!text.contains(&patient_app));
    let (status, body, _) = ask("Record::\"cond-1\"", json!({}));
    assert_eq!((status, body["decision"].as_str()), (200, Some("Deny")), "{body}");
    assert_eq!(body["diagnostics"]["reason"], json!(["smart-scope"]), "the scope does not cover Condition");
    let (status, body, _) = ask("Record::\"obs-1\"", json!({"principal": "Patient::\"p-100\""}));
    assert_eq!(status, 200, "the same principal may be sent: {body}");
    let (status, body, text) = ask("Record::\"obs-1\"", json!({"principal": "Practitioner::\"dr-ali\""}));
    assert_eq!((status, body["field"].as_str()), (400, Some("principal")), "{body}");
    assert!(!text.contains(&patient_app));

    // SMART v1 scopes, and `sub` through the template when there is no fhirUser.
    let v1 = keys[2].sign(&claims(
        json!({"sub": "p-100", "scope": "patient/Observation.read", "purpose_of_use": "PATRQT"}),
    ));
    let request = json!({"action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "token": v1});
    let (status, body, _) = server.send("POST", "/v1/is_authorized", Some(&request), &[]);
    assert_eq!((status, body["decision"].as_str()), (200, Some("Allow")), "{body}");
    let search = json!({"action": "Action::\"update\"", "resource": "Record::\"obs-1\"", "token": v1});
    let (_, body, _) = server.send("POST", "/v1/is_authorized", Some(&search), &[]);
    assert_eq!(body["diagnostics"]["reason"], json!(["smart-scope"]), "v1 read grants no update: {body}");
    tokens.push(v1);

    // A plan and a search are the token's principal's, limited by its scopes.
    let plan = json!({"token": patient_app, "action": "Action::\"read\"", "resource_type": "Record", "patient": "Patient::\"p-100\""});
    let (status, body, text) = server.send("POST", "/v1/plan", Some(&plan), &[]);
    assert_eq!(
        (status, &body["fhir"]["queries"][0]["params"]),
        (200, &json!(["_type=Observation"])),
        "{body}"
    );
    assert!(!text.contains(&patient_app));
    let search = json!({"token": patient_app, "action": {"name": "read"}, "resource": {"type": "Record", "properties": {"patient": "p-100"}}});
    let (status, body, _) = server.send("POST", "/access/v1/search/resource", Some(&search), &[]);
    assert_eq!(
        (status, &body["results"]),
        (200, &json!([{"type": "Record", "id": "gen-1"}, {"type": "Record", "id": "obs-1"}])),
        "{body}"
    );

    // AuthZEN takes the subject from the token.
    let evaluation = json!({"token": patient_app, "action": {"name": "read"}, "resource": {"type": "Record", "id": "obs-1"}});
    let (status, body, _) = server.send("POST", "/access/v1/evaluation", Some(&evaluation), &[]);
    assert_eq!((status, body["decision"].as_bool()), (200, Some(true)), "{body}");
    let expired = rsa.sign(&claims(json!({"exp": now() - 60, "fhirUser": "Patient/p-100"})));
    let bad =
        json!({"token": expired, "action": {"name": "read"}, "resource": {"type": "Record", "id": "obs-1"}});
    let (status, body, text) = server.send("POST", "/access/v1/evaluation", Some(&bad), &[]);
    assert_eq!((status, body["field"].as_str()), (401, Some("token")), "{body}");
    assert!(!text.contains(&expired));
    tokens.push(expired);

    // ext_authz: the proxied request's own token speaks for it; without one,
    // `x-principal` is not trusted (not opted in), so nothing is mapped.
    let with_token = [("authorization", format!("Bearer {patient_app}"))];
    let with_token: Vec<(&str, &str)> = with_token.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, text) = server.send("GET", "/ext_authz/fhir/Observation/obs-1", None, &with_token);
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(&patient_app));
    let (status, _, _) = server.send("GET", "/ext_authz/fhir/Condition/cond-1", None, &with_token);
    assert_eq!(status, 403, "the token's scopes do not cover Condition");
    let (status, _, text) =
        server.send("GET", "/ext_authz/fhir/Patient/p-100/Observation", None, &with_token);
    assert_eq!(status, 200, "a search of the granted type: {text}");
    let (status, _, _) = server.send("GET", "/ext_authz/fhir/Patient/p-100/Condition", None, &with_token);
    assert_eq!(status, 403, "a search of a type the scopes do not grant");
    let claimed = [("x-principal", "Patient/p-100"), ("x-purpose-of-use", "PATRQT")];
    let (status, _, text) = server.send("GET", "/ext_authz/fhir/Observation/obs-1", None, &claimed);
    assert_eq!(status, 403, "x-principal was trusted: {text}");
    assert!(text.contains("failed_closed"), "{text}");
    let (status, body, _) = server.bearer("GET", "/ext_authz/fhir/Observation/obs-1", &tokens[9]);
    assert_eq!(status, 401, "an invalid proxied token: {body}");
    tokens.push(patient_app);

    // Let the decision log catch up, then search everything written.
    std::thread::sleep(Duration::from_millis(500));
    let written = server.written();
    assert!(written.contains("ext_authz"), "the log is not at debug level");
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!written.contains(token.as_str()), "a token was written");
        if !signature.is_empty() {
            assert!(!written.contains(signature), "a token's signature was written");
        }
    }
}

/// The identity tests' JWKS endpoint on a runtime of its own, since these
/// tests are synchronous: it serves while the server under test runs.
pub(crate) struct JwksEndpoint {
    pub(crate) server: test_jwks::JwksServer,
    _runtime: tokio::runtime::Runtime,
}

impl JwksEndpoint {
    pub(crate) fn start(document: Value) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = runtime.block_on(test_jwks::JwksServer::start(document));
        Self { server, _runtime: runtime }
    }
}

#[test]
fn keys_come_from_the_jwks_url_and_a_rotated_key_is_fetched() {
    let first = TestKey::p256("2026-11");
    let endpoint = JwksEndpoint::start(test_keys::jwks(&[&first]));
    let config = identity_config(&format!("jwks_url = {:?}", endpoint.server.url));
    let server = Logged::start(&config, &[]);
    let auditor = claims(json!({"realm_access": {"roles": ["auditor"]}}));
    let (status, body, _) = server.bearer("GET", "/v1/audit/head", &first.sign(&auditor));
    assert_eq!(status, 200, "{body}");
    // The IdP rotates its key; the first token naming the new kid fetches it.
    let second = TestKey::ed25519("2026-12");
    endpoint.server.serve(test_keys::jwks(&[&second]));
    let (status, body, _) = server.bearer("GET", "/v1/audit/head", &second.sign(&auditor));
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = server.bearer("GET", "/v1/audit/head", &first.sign(&auditor));
    assert_eq!(status, 401, "the retired key no longer verifies: {body}");
}

#[test]
fn a_bad_identity_section_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("consentry.toml");
    std::fs::write(&config, "[identity]\nissuer = \"https://idp.example\"\naudience = \"consentry\"\njwks_url = \"http://idp.example/certs\"\n").unwrap();
    let (code, stderr) = crate::support::run_to_exit(
        &["serve", "--config", config.to_str().unwrap(), "--store", dir.path().join("s").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("identity.jwks_url"), "{stderr}");
}
