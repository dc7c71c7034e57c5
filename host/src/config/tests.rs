use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::auth::{Auth, DecisionAccess, Role};

/// A configuration file in its own temporary directory.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consentry.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn with_file(path: &Path) -> ServeArgs {
    ServeArgs { config: Some(path.to_owned()), ..ServeArgs::default() }
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../consentry.example.toml")
}

/// The example with its commented-out settings (`#key = value`, `#[table]`)
/// put back, so that every setting it documents is checked.
fn example_uncommented() -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(example()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(key, _)| !key.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .collect();
    file(&lines.join("\n"))
}

#[test]
fn nothing_given_is_the_defaults() {
    let config = load_from(&ServeArgs::default(), Vec::new()).unwrap();
    assert_eq!(config, ServeConfig::default());
    assert_eq!(config.listen.bind, "127.0.0.1:8180".parse::<SocketAddr>().unwrap());
    assert_eq!(config.store, "consentry-data");
    assert_eq!(config.audit.queue, 10_000);
}

#[test]
fn a_file_sets_every_section() {
    let (_dir, path) = file(
        r#"
policies = "p"
store = "postgres://u@h/db"
plugins = "plugins.toml"
watch = true
max_batch = 7
max_body = 2048
public_url = "https://pdp.example"
[listen]
bind = "0.0.0.0:9000"
admin_bind = "127.0.0.1:9001"
[tls]
cert = "c.pem"
key = "k.pem"
[audit]
target = "off"
backpressure = "drop-and-count"
queue = 5
rotate_bytes = 4096
[auth]
decisions = "token"
[[auth.tokens]]
name = "gw"
sha256 = "59c7a734de52c9e9476d2783eada99f43b83ba83d6ad65ed226ea42c5576d573"
roles = ["decision"]
"#,
    );
    let config = load_from(&with_file(&path), Vec::new()).unwrap();
    assert_eq!(config.policies, Some(PathBuf::from("p")));
    assert_eq!(config.store, "postgres://u@h/db");
    assert_eq!(config.plugins, Some(PathBuf::from("plugins.toml")));
    assert!(config.watch);
    assert_eq!((config.max_batch, config.max_body), (7, 2048));
    assert_eq!(config.public_url.as_deref(), Some("https://pdp.example"));
    assert_eq!(config.listen.bind, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(config.listen.admin_bind, Some("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(config.tls, Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
    assert_eq!(config.audit.target.as_deref(), Some("off"));
    assert_eq!(config.audit.backpressure, Backpressure::DropAndCount);
    assert_eq!((config.audit.queue, config.audit.rotate_bytes), (5, 4096));
    assert_eq!(config.auth.decisions, Some(DecisionAccess::Token));
    assert_eq!(config.auth.tokens.len(), 1);
    assert_eq!(config.auth.tokens[0].roles, vec![Role::Decision]);
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let (_dir, path) = file("[audit]\nqueue = 3\n");
    let config = load_from(&with_file(&path), Vec::new()).unwrap();
    assert_eq!(config.audit.queue, 3);
    assert_eq!(config.audit.rotate_bytes, AuditConfig::default().rotate_bytes);
    assert_eq!(config.listen, ListenConfig::default());
}

#[test]
fn the_environment_beats_the_file_and_a_flag_beats_both() {
    let (_dir, path) = file("max_batch = 5\n[audit]\ntarget = \"from-file\"\nqueue = 1\n");
    let file_only = load_from(&with_file(&path), Vec::new()).unwrap();
    assert_eq!((file_only.max_batch, file_only.audit.queue), (5, 1));

    let vars = env(&[("CONSENTRY_MAX_BATCH", "6"), ("CONSENTRY_AUDIT__QUEUE", "2")]);
    let from_env = load_from(&with_file(&path), vars.clone()).unwrap();
    assert_eq!((from_env.max_batch, from_env.audit.queue), (6, 2));
    // The rest of the section still comes from the file.
    assert_eq!(from_env.audit.target.as_deref(), Some("from-file"));

    let flags = ServeArgs { max_batch: Some(7), audit_queue: Some(9), ..with_file(&path) };
    let from_flags = load_from(&flags, vars).unwrap();
    assert_eq!((from_flags.max_batch, from_flags.audit.queue), (7, 9));
    assert_eq!(from_flags.audit.target.as_deref(), Some("from-file"));
}

#[test]
fn the_flat_names_the_flags_always_read_still_work() {
    let vars = env(&[
        ("CONSENTRY_BIND", "127.0.0.1:0"),
        ("CONSENTRY_AUDIT", "off"),
        ("CONSENTRY_AUDIT_QUEUE", "4"),
        ("CONSENTRY_AUDIT_BACKPRESSURE", "drop-and-count"),
        ("CONSENTRY_POLICIES", "2026"),
        ("CONSENTRY_WATCH", "true"),
    ]);
    let config = load_from(&ServeArgs::default(), vars).unwrap();
    assert_eq!(config.listen.bind.port(), 0);
    assert_eq!(config.audit.target.as_deref(), Some("off"));
    assert_eq!(config.audit.queue, 4);
    assert_eq!(config.audit.backpressure, Backpressure::DropAndCount);
    // A number-like value stays text where the setting is a path.
    assert_eq!(config.policies, Some(PathBuf::from("2026")));
    assert!(config.watch);
}

#[test]
fn variables_that_are_not_settings_are_left_alone() {
    let vars = env(&[
        ("CONSENTRY_ADMIN_TOKEN", "dev"),
        ("CONSENTRY_CONFIG", "/nonexistent.toml"),
        ("CONSENTRY_TEST_POSTGRES_URL", "postgres://x"),
        ("CONSENTRY_STORE", ""),
        ("PATH", "/bin"),
    ]);
    assert_eq!(load_from(&ServeArgs::default(), vars).unwrap(), ServeConfig::default());
}

#[test]
fn an_unknown_variable_is_refused_naming_it() {
    let error = load_from(&ServeArgs::default(), env(&[("CONSENTRY_AUDIT__QUEU", "1")])).unwrap_err();
    assert_eq!(error, ConfigError::UnknownVariable { var: "CONSENTRY_AUDIT__QUEU".to_owned() });
    assert!(error.to_string().contains("`CONSENTRY_AUDIT__QUEU`"), "{error}");
}

#[test]
fn two_variables_for_one_key_are_refused() {
    let vars = env(&[("CONSENTRY_AUDIT", "a"), ("CONSENTRY_AUDIT__TARGET", "b")]);
    let error = load_from(&ServeArgs::default(), vars).unwrap_err().to_string();
    assert!(error.contains("`CONSENTRY_AUDIT`") && error.contains("`CONSENTRY_AUDIT__TARGET`"), "{error}");
    assert!(error.contains("`audit.target`"), "{error}");
}

#[test]
fn an_unknown_key_in_the_file_is_refused_naming_it_and_the_file() {
    for (text, key) in [
        ("polices = \"p\"\n", "polices"),
        ("[listen]\nbnd = \"127.0.0.1:1\"\n", "listen.bnd"),
        ("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n", "tls.ca"),
        ("[audit]\nqueu = 1\n", "audit.queu"),
        ("[auth]\ndecision = \"open\"\n", "auth.decision"),
        ("[[auth.tokens]]\nname = \"a\"\nsha = \"b\"\nroles = []\n", "auth.tokens[0].sha"),
        ("[server]\nport = 1\n", "server"),
    ] {
        let (_dir, path) = file(text);
        let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
        let ConfigError::UnknownKey { key: found, .. } = &error else { panic!("{text}: {error:?}") };
        assert_eq!(found, key, "{text}");
        let message = error.to_string();
        assert!(message.contains(&format!("`{}`", path.display())), "{message}");
    }
}

#[test]
fn a_bad_value_is_refused_naming_the_key_and_its_source() {
    let (_dir, path) = file("max_body = \"big\"\n[listen]\nbind = \"nowhere\"\n");
    let message = load_from(&with_file(&path), Vec::new()).unwrap_err().to_string();
    assert!(message.contains("`max_body`") || message.contains("`listen.bind`"), "{message}");
    assert!(message.contains(&format!("in `{}`", path.display())), "{message}");

    for (text, key) in [
        ("[listen]\nbind = \"nowhere\"\n", "listen.bind"),
        ("[audit]\nbackpressure = \"maybe\"\n", "audit.backpressure"),
        ("[auth]\ndecisions = \"sometimes\"\n", "auth.decisions"),
        ("[tls]\ncert = \"c.pem\"\n", "tls.key"),
        ("watch = \"perhaps\"\n", "watch"),
    ] {
        let (_dir, path) = file(text);
        let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
        let ConfigError::Invalid { key: found, origin, .. } = &error else { panic!("{text}: {error:?}") };
        assert_eq!(found, key, "{text}");
        assert_eq!(origin, &format!("in `{}`", path.display()), "{text}");
    }

    let error = load_from(&ServeArgs::default(), env(&[("CONSENTRY_AUDIT__QUEUE", "lots")])).unwrap_err();
    let ConfigError::Invalid { key, origin, .. } = &error else { panic!("{error:?}") };
    assert_eq!((key.as_str(), origin.as_str()), ("audit.queue", "from `CONSENTRY_AUDIT__QUEUE`"));
    let error = load_from(&ServeArgs::default(), env(&[("CONSENTRY_BIND", "here")])).unwrap_err();
    assert!(error.to_string().starts_with("invalid `listen.bind` from `CONSENTRY_BIND`"), "{error}");
}

#[test]
fn a_bad_token_entry_is_named_by_its_index() {
    let (_dir, path) = file("[[auth.tokens]]\nname = \"a\"\nsha256 = \"00\"\nroles = [\"decision\"]\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    let ConfigError::Invalid { key, origin, .. } = &error else { panic!("{error:?}") };
    assert_eq!(key, "auth.tokens[0].sha256");
    assert_eq!(origin, &format!("in `{}`", path.display()));

    let (_dir, path) = file("[[auth.tokens]]\nname = \"a\"\nsha256 = \"00\"\nroles = [\"root\"]\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    let ConfigError::Invalid { key, .. } = &error else { panic!("{error:?}") };
    assert_eq!(key, "auth.tokens[0].roles[0]", "{error}");
    assert!(error.to_string().contains("unknown value `root`"), "{error}");
}

#[test]
fn a_missing_or_broken_file_is_named() {
    let missing = Path::new("/nonexistent/consentry.toml");
    let error = load_from(&with_file(missing), Vec::new()).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("`/nonexistent/consentry.toml`"), "{error}");

    let (_dir, path) = file("[listen\nbind = 1\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("`{}`", path.display())), "{error}");
}

#[test]
fn the_admin_listener_needs_an_address_of_its_own() {
    let (_dir, path) = file("[listen]\nbind = \"127.0.0.1:9000\"\nadmin_bind = \"127.0.0.1:9000\"\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    let ConfigError::Invalid { key, .. } = &error else { panic!("{error:?}") };
    assert_eq!(key, "listen.admin_bind");
    let args = ServeArgs { admin_bind: Some("127.0.0.1:9002".parse().unwrap()), ..with_file(&path) };
    assert_eq!(load_from(&args, Vec::new()).unwrap().listen.admin_bind.unwrap().port(), 9002);
}

#[test]
fn the_grpc_listener_is_off_by_default_and_needs_an_address_of_its_own() {
    assert_eq!(load_from(&ServeArgs::default(), Vec::new()).unwrap().listen.grpc_bind, None);
    let (_dir, path) = file("[listen]\nbind = \"127.0.0.1:9000\"\ngrpc_bind = \"127.0.0.1:9000\"\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    let ConfigError::Invalid { key, .. } = &error else { panic!("{error:?}") };
    assert_eq!(key, "listen.grpc_bind");
    let args = ServeArgs { grpc_bind: Some("127.0.0.1:9003".parse().unwrap()), ..with_file(&path) };
    assert_eq!(load_from(&args, Vec::new()).unwrap().listen.grpc_bind.unwrap().port(), 9003);
    let from_env = load_from(&with_file(&path), env(&[("CONSENTRY_GRPC_BIND", "127.0.0.1:9004")])).unwrap();
    assert_eq!(from_env.listen.grpc_bind.unwrap().port(), 9004);
}

#[test]
fn open_decisions_over_grpc_on_a_non_loopback_address_must_be_chosen() {
    let args = ServeArgs { grpc_bind: Some("0.0.0.0:8183".parse().unwrap()), ..ServeArgs::default() };
    let error = load_from(&args, Vec::new()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ConfigError::OpenDecisions { key: "listen.grpc_bind", .. }), "{error:?}");
    assert!(message.contains("`listen.grpc_bind` from `--grpc-bind`"), "{message}");
    let chosen = ServeArgs { decisions: Some(DecisionAccess::Token), ..args };
    assert!(load_from(&chosen, Vec::new()).is_ok());
}

#[test]
fn the_example_file_sets_every_setting_and_its_tokens_are_valid() {
    let shipped = load_from(&with_file(&example()), Vec::new()).unwrap();
    // What a fresh checkout lacks is commented out; the rest is set.
    assert!(shipped.tls.is_none() && shipped.plugins.is_none() && shipped.telemetry.otlp_endpoint.is_none());
    assert!(shipped.listen.admin_bind.is_some() && shipped.policy_tests.is_some());
    let (_dir, uncommented) = example_uncommented();
    let config = load_from(&with_file(&uncommented), Vec::new()).unwrap();
    let text = std::fs::read_to_string(&uncommented).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    for setting in SETTINGS {
        let mut value = Some(&toml::Value::Table(table.clone()));
        for part in setting.key.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        assert!(value.is_some(), "the example does not show `{}`", setting.key);
    }
    assert!(config.tls.is_some() && config.plugins.is_some() && config.telemetry.otlp_endpoint.is_some());
    let auth = Auth::new(&config.auth, None).unwrap();
    assert!(auth.is_configured());
}

#[test]
fn every_setting_can_come_from_both_of_its_variables() {
    let (_dir, example) = example_uncommented();
    let text = std::fs::read_to_string(&example).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let from_file = load_from(&with_file(&example), Vec::new()).unwrap();
    let mut by_key = Vec::new();
    let mut by_flag = Vec::new();
    for setting in SETTINGS {
        let mut value = Some(&toml::Value::Table(table.clone()));
        for part in setting.key.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        let text = match value.unwrap() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        by_key.push((setting.key_var(), text.clone()));
        by_flag.push((setting.flag_var().unwrap_or_else(|| setting.key_var()), text));
    }
    for vars in [by_key, by_flag] {
        let mut config = load_from(&ServeArgs::default(), vars.clone()).unwrap();
        config.auth.tokens.clone_from(&from_file.auth.tokens);
        assert_eq!(config, from_file, "{vars:?}");
    }
}

/// Whether `consentry serve --config FILE FLAGS…` watches, FILE holding `text`.
fn watches(text: &str, flags: &[&str]) -> bool {
    use clap::Parser;
    let (_dir, path) = file(text);
    let argv = [&["consentry", "serve", "--config", path.to_str().unwrap()], flags].concat();
    let crate::cli::Command::Serve(args) = crate::cli::Cli::try_parse_from(&argv).unwrap().command else {
        panic!("`{argv:?}` is not serve");
    };
    load_from(&args, Vec::new()).unwrap().watch
}

#[test]
fn watch_false_on_the_command_line_turns_off_watch_from_the_file() {
    assert!(watches("watch = true\n", &[]));
    assert!(!watches("watch = true\n", &["--watch=false"]));
    assert!(watches("", &["--watch"]));
    assert!(!watches("", &[]));
}

#[test]
fn open_decisions_on_a_non_loopback_address_must_be_chosen() {
    for bind in ["0.0.0.0:8180", "10.1.2.3:8180", "[::]:8180"] {
        let args = ServeArgs { bind: Some(bind.parse().unwrap()), ..ServeArgs::default() };
        let error = load_from(&args, Vec::new()).unwrap_err();
        assert!(matches!(error, ConfigError::OpenDecisions { .. }), "{bind}: {error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("`{bind}`")) && message.contains("from `--bind`"), "{message}");
        assert!(message.contains("--decisions open") && message.contains("--decisions token"), "{message}");
        for decisions in [DecisionAccess::Open, DecisionAccess::Token] {
            let chosen = ServeArgs {
                bind: Some(bind.parse().unwrap()),
                decisions: Some(decisions),
                ..ServeArgs::default()
            };
            assert_eq!(load_from(&chosen, Vec::new()).unwrap().auth.decisions, Some(decisions), "{bind}");
        }
        let from_env = load_from(&args, env(&[("CONSENTRY_DECISIONS", "open")])).unwrap();
        assert_eq!(from_env.auth.decisions, Some(DecisionAccess::Open));
        let (_dir, path) = file(&format!("[listen]\nbind = \"{bind}\"\n[auth]\ndecisions = \"open\"\n"));
        assert_eq!(
            load_from(&with_file(&path), Vec::new()).unwrap().auth.decisions,
            Some(DecisionAccess::Open)
        );
        let (_dir, path) = file(&format!("[listen]\nbind = \"{bind}\"\n"));
        let message = load_from(&with_file(&path), Vec::new()).unwrap_err().to_string();
        assert!(message.contains(&format!("in `{}`", path.display())), "{message}");
    }
    // Loopback needs no choice, and unset still means open there.
    for bind in ["127.0.0.1:8180", "[::1]:8180", "127.0.0.1:0"] {
        let args = ServeArgs { bind: Some(bind.parse().unwrap()), ..ServeArgs::default() };
        let config = load_from(&args, Vec::new()).unwrap();
        assert_eq!(config.auth.decisions, None);
        assert!(!Auth::new(&config.auth, None).unwrap().decisions_need_token(), "{bind}");
    }
}

#[test]
fn telemetry_comes_from_the_file_the_environment_and_the_flags() {
    use crate::telemetry::LogFormat;
    let (_dir, path) =
        file("[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n");
    let config = load_from(&with_file(&path), Vec::new()).unwrap();
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
    let from_env = load_from(&ServeArgs::default(), env(&[("CONSENTRY_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(from_env.telemetry.log_format, LogFormat::Json);
    let args = ServeArgs { log_format: Some(LogFormat::Text), ..with_file(&path) };
    assert_eq!(load_from(&args, Vec::new()).unwrap().telemetry.log_format, LogFormat::Text);
    assert_eq!(ServeConfig::default().telemetry.otlp_endpoint, None);
}

#[test]
fn an_otlp_endpoint_must_be_an_http_url() {
    for bad in ["127.0.0.1:4318", "ftp://collector/v1/traces", "not a url"] {
        let error = load_from(&ServeArgs::default(), env(&[("CONSENTRY_OTLP_ENDPOINT", bad)])).unwrap_err();
        let ConfigError::Invalid { key, origin, .. } = &error else { panic!("{bad}: {error:?}") };
        assert_eq!(key, "telemetry.otlp_endpoint", "{bad}");
        assert!(origin.contains("CONSENTRY_OTLP_ENDPOINT"), "{origin}");
    }
    let error = load_from(&ServeArgs::default(), env(&[("CONSENTRY_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(error.to_string().contains("telemetry.log_format"), "{error}");
}

#[test]
fn identity_settings_come_from_flags_and_variables_and_are_checked() {
    let args = ServeArgs {
        oidc_issuer: Some("https://idp.example".to_owned()),
        oidc_audience: vec!["consentry".to_owned(), "https://fhir.example/r4".to_owned()],
        oidc_jwks_file: Some(PathBuf::from("jwks.json")),
        trust_principal_header: Some(true),
        ..ServeArgs::default()
    };
    let config = load_from(&args, Vec::new()).unwrap();
    assert_eq!(config.identity.audience, ["consentry", "https://fhir.example/r4"]);
    assert!(config.identity.trust_principal_header);
    assert!(config.identity.oidc().unwrap().is_some());

    let vars = env(&[
        ("CONSENTRY_OIDC_ISSUER", "https://idp.example"),
        ("CONSENTRY_IDENTITY__AUDIENCE", "consentry"),
        ("CONSENTRY_OIDC_JWKS_URL", "http://idp.example/certs"),
    ]);
    let error = load_from(&ServeArgs::default(), vars).unwrap_err();
    let ConfigError::Invalid { key, origin, .. } = &error else { panic!("{error:?}") };
    assert_eq!((key.as_str(), origin.as_str()), ("identity.jwks_url", "from `CONSENTRY_OIDC_JWKS_URL`"));

    let (_dir, path) = file("[identity.role_mapping]\nadmins = [\"policy-admin\"]\n");
    let error = load_from(&with_file(&path), Vec::new()).unwrap_err();
    let ConfigError::Invalid { key, .. } = &error else { panic!("{error:?}") };
    assert_eq!(key, "identity.role_mapping", "a mapping without an issuer does nothing");
}
