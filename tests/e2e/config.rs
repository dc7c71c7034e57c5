//! `serve --config`: a server configured by its file alone, the environment
//! and flags over it, refused configurations, `token new`, the separate
//! admin listener and HTTPS.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{Server, binary, clean, decide, repo_root, run_to_exit, weber_reads};

/// The token the configured `privacy-office` entry holds.
const OFFICE_TOKEN: &str = "cst_e2e-privacy-office";

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary deployment: its directory, and a configuration naming the
/// bundled policies, a store and a decision log inside it, a free port and
/// the `privacy-office` token, followed by `extra`.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Deployment {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("consentry.toml");
        let text = format!(
            r#"policies = {policies}
store = {store}
max_batch = 1

[listen]
bind = "127.0.0.1:0"

[audit]
target = {audit}

[[auth.tokens]]
name = "privacy-office"
sha256 = "{digest}"
roles = ["policy-admin", "auditor"]
{extra}"#,
            policies = toml_string(&repo_root().join("policies")),
            store = toml_string(&dir.path().join("store")),
            audit = toml_string(&dir.path().join("audit")),
            digest = sha256_hex(OFFICE_TOKEN),
        );
        std::fs::write(&config, text).unwrap();
        Self { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn start(&self, flags: &[&str], env: &[(&str, &str)], admin: bool) -> Server {
        let mut args = vec!["serve", "--config", self.config()];
        args.extend_from_slice(flags);
        Server::start_args(&args, env, admin)
    }
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_str().unwrap().to_owned()).to_string()
}

/// A batch of two requests: over the configured `max_batch = 1`.
fn batch_of_two(server: &Server) -> u16 {
    let request = weber_reads("obs-1");
    server.post("/v1/is_authorized/batch", &json!({"requests": [request, request]})).0
}

#[test]
fn a_server_configured_by_its_file_alone_decides_and_accepts_its_token() {
    let deployment = Deployment::new("");
    let server = deployment.start(&[], &[], false);
    assert!(server.url.starts_with("http://127.0.0.1:"), "{}", server.url);
    assert_eq!(decide(&server, &weber_reads("obs-1")).0, "Deny");
    assert!(deployment.path("store").is_dir(), "the store is the file's");
    assert!(deployment.path("audit").is_dir(), "the decision log is the file's");
    assert_eq!(batch_of_two(&server), 413, "max_batch is the file's");

    let (status, body) = server.send("GET", "/v1/policies", None, Some(OFFICE_TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body["policies"].is_array(), "{body}");
    assert_eq!(server.send("GET", "/v1/policies", None, None).0, 401);
    assert_eq!(server.send("GET", "/v1/policies", None, Some("e2e-admin-token")).0, 401);
    // The token holds no consent-writer role.
    let (status, _) = server.send(
        "PUT",
        "/v1/consents/c-1",
        Some(("application/json", "{}".to_owned())),
        Some(OFFICE_TOKEN),
    );
    assert_eq!(status, 403);
}

#[test]
fn the_environment_overrides_the_file_and_a_flag_overrides_both() {
    let deployment = Deployment::new("");
    let server = deployment.start(&[], &[("CONSENTRY_MAX_BATCH", "2")], false);
    assert_eq!(batch_of_two(&server), 200);
    drop(server);

    let server = deployment.start(&["--max-batch", "1"], &[("CONSENTRY_MAX_BATCH", "2")], false);
    assert_eq!(batch_of_two(&server), 413);
    drop(server);

    let elsewhere = deployment.path("audit-from-env");
    let server = deployment.start(&[], &[("CONSENTRY_AUDIT", elsewhere.to_str().unwrap())], false);
    assert_eq!(decide(&server, &weber_reads("obs-1")).0, "Deny");
    assert!(elsewhere.is_dir(), "CONSENTRY_AUDIT beats `audit.target`");
}

#[test]
fn an_unknown_key_or_variable_exits_3_naming_it() {
    let deployment = Deployment::new("[listen.tls]\ncert = \"c.pem\"\n");
    let (code, stderr) = run_to_exit(&["serve", "--config", deployment.config()], &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("unknown key `listen.tls`"), "{stderr}");
    assert!(stderr.contains(deployment.config()), "{stderr}");

    let deployment = Deployment::new("");
    let (code, stderr) = run_to_exit(
        &["serve", "--config", deployment.config()],
        &[("CONSENTRY_LISTEN__ADMIN_BND", "127.0.0.1:0")],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("`CONSENTRY_LISTEN__ADMIN_BND`"), "{stderr}");

    let (code, stderr) =
        run_to_exit(&["serve", "--config", deployment.config()], &[("CONSENTRY_AUDIT__QUEUE", "lots")]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("invalid `audit.queue` from `CONSENTRY_AUDIT__QUEUE`"), "{stderr}");

    let bad_token = "[[auth.tokens]]\nname = \"x\"\nsha256 = \"not-hex\"\nroles = [\"auditor\"]\n";
    let deployment = Deployment::new(bad_token);
    let (code, stderr) = run_to_exit(&["serve", "--config", deployment.config()], &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("`auth.tokens[1].sha256`"), "{stderr}");
}

#[test]
fn token_new_output_pasted_into_the_configuration_works() {
    let out = clean(binary())
        .args(["token", "new", "--name", "consent-service", "--role", "consent-writer", "--role", "auditor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (token, block) = stdout.split_once("\n\n").unwrap();
    assert!(token.starts_with("cst_") && !token.contains('\n'), "{stdout}");
    assert!(!block.contains(token), "the entry holds only the digest: {block}");
    assert!(block.starts_with("[[auth.tokens]]\n"), "{block}");

    let deployment = Deployment::new(block);
    let server = deployment.start(&[], &[], false);
    let (status, body) = server.send("GET", "/v1/patients/p-100/consents", None, Some(token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.send("GET", "/v1/policies", None, Some(token)).0, 403);

    let (code, stderr) = run_to_exit(&["token", "new", "--name", "portal", "--role", "patient"], &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("`auth.tokens[0].principal`"), "{stderr}");
}

#[test]
fn admin_bind_serves_the_admin_routes_on_their_own_listener() {
    let deployment = Deployment::new("");
    let server = deployment.start(&["--admin-bind", "127.0.0.1:0"], &[], true);
    let admin = server.admin_url.clone().unwrap();
    assert_ne!(admin, server.url);

    assert_eq!(server.send("GET", "/v1/policies", None, Some(OFFICE_TOKEN)).0, 404);
    assert_eq!(decide(&server, &weber_reads("obs-1")).0, "Deny");
    assert_eq!(server.get("/healthz").0, 200);

    let (status, body) = server.send_to(&admin, "GET", "/v1/policies", None, Some(OFFICE_TOKEN));
    assert_eq!(status, 200, "{body}");
    let request = Some(("application/json", weber_reads("obs-1").to_string()));
    assert_eq!(server.send_to(&admin, "POST", "/v1/is_authorized", request, None).0, 404);
    assert_eq!(server.send_to(&admin, "GET", "/healthz", None, None).0, 404);
}

#[test]
fn tls_serves_https_on_both_listeners_with_the_configured_certificate() {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let deployment = Deployment::new("");
    let (cert, key) = (deployment.path("cert.pem"), deployment.path("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let flags = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--admin-bind",
        "127.0.0.1:0",
    ];
    let mut server = deployment.start(&flags, &[], true);
    server.tls_root = Some(generated.cert.der().to_vec());
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let admin = server.admin_url.clone().unwrap();
    assert!(admin.starts_with("https://127.0.0.1:"), "{admin}");

    assert_eq!(decide(&server, &weber_reads("obs-1")).0, "Deny");
    let (status, body) = server.send_to(&admin, "GET", "/v1/policies", None, Some(OFFICE_TOKEN));
    assert_eq!(status, 200, "{body}");
    // Without --public-url, the metadata names the scheme it was asked over.
    let (status, metadata) = server.get("/.well-known/authzen-configuration");
    assert_eq!((status, &metadata["policy_decision_point"]), (200, &server.url.clone().into()), "{metadata}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let address = server.url.trim_start_matches("https://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn an_unusable_certificate_exits_3_naming_the_file() {
    let deployment = Deployment::new("");
    let cert = deployment.path("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let config = format!("[tls]\ncert = {}\nkey = {}\n", toml_string(&cert), toml_string(&cert));
    let text = std::fs::read_to_string(&deployment.config)
        .unwrap()
        .replace("[listen]", &format!("{config}[listen]"));
    std::fs::write(&deployment.config, text).unwrap();
    let (code, stderr) = run_to_exit(&["serve", "--config", deployment.config()], &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(&format!("`{}`", cert.display())), "{stderr}");
}
