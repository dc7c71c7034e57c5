use super::*;

fn token(name: &str, secret: &str, roles: &[Role], principal: Option<&str>) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        sha256: digest_hex(secret),
        roles: roles.to_vec(),
        principal: principal.map(str::to_owned),
    }
}

fn config(tokens: Vec<TokenConfig>) -> AuthConfig {
    AuthConfig { decisions: Some(DecisionAccess::Open), tokens }
}

#[tokio::test]
async fn no_configured_token_refuses_everyone() {
    let auth = Auth::with_admin_token(None);
    assert_eq!(auth.authenticate(Some("Bearer anything")).await, Err(AuthFailure::NotConfigured));
    assert_eq!(
        Auth::with_admin_token(Some("")).authenticate(Some("Bearer ")).await,
        Err(AuthFailure::NotConfigured)
    );
}

#[tokio::test]
async fn the_admin_token_holds_every_operator_role() {
    let auth = Auth::with_admin_token(Some("s3cret"));
    let caller = auth.authenticate(Some("Bearer s3cret")).await.unwrap();
    assert_eq!(caller.roles, Role::OPERATOR.to_vec());
    assert!(!caller.has(Role::Patient));
    assert_eq!(auth.authenticate(Some("Bearer s3cre")).await, Err(AuthFailure::Invalid));
    assert_eq!(auth.authenticate(Some("s3cret")).await, Err(AuthFailure::Missing));
    assert_eq!(auth.authenticate(Some("Bearer   ")).await, Err(AuthFailure::Missing));
    assert_eq!(auth.authenticate(None).await, Err(AuthFailure::Missing));
}

#[tokio::test]
async fn a_token_passes_only_for_its_roles() {
    let auth = Auth::new(&config(vec![token("ehr", "t-ehr", &[Role::Decision], None)]), None).unwrap();
    assert_eq!(auth.authorize(Some("Bearer t-ehr"), &[Role::Decision]).await.unwrap().name, "ehr");
    assert_eq!(
        auth.authorize(Some("Bearer t-ehr"), &[Role::PolicyAdmin, Role::Auditor]).await,
        Err(AuthFailure::Forbidden { needs: vec![Role::PolicyAdmin, Role::Auditor] })
    );
}

#[tokio::test]
async fn a_patient_token_carries_its_principal() {
    let auth =
        Auth::new(&config(vec![token("portal", "t-p", &[Role::Patient], Some(r#"Patient::"p-100""#))]), None)
            .unwrap();
    let caller = auth.authenticate(Some("Bearer t-p")).await.unwrap();
    assert_eq!(caller.principal.unwrap().to_string(), r#"Patient::"p-100""#);
}

#[test]
fn bad_token_entries_are_refused_naming_the_field() {
    let cases = [
        (token("a", "x", &[Role::Patient], None), "auth.tokens[0].principal"),
        (token("a", "x", &[Role::Auditor], Some(r#"Patient::"p-1""#)), "auth.tokens[0].principal"),
        (token("a", "x", &[Role::Patient], Some(r#"Practitioner::"dr""#)), "auth.tokens[0].principal"),
        (token("a", "x", &[], None), "auth.tokens[0].roles"),
        (token(" ", "x", &[Role::Auditor], None), "auth.tokens[0].name"),
        (
            TokenConfig { sha256: "ABC".to_owned(), ..token("a", "x", &[Role::Auditor], None) },
            "auth.tokens[0].sha256",
        ),
    ];
    for (entry, field) in cases {
        let error = Auth::new(&config(vec![entry]), None).unwrap_err();
        assert_eq!(error.field, field, "{error}");
    }
    let twice =
        config(vec![token("a", "x", &[Role::Auditor], None), token("a", "y", &[Role::Auditor], None)]);
    assert_eq!(Auth::new(&twice, None).unwrap_err().field, "auth.tokens[1].name");
    let same = config(vec![token("a", "x", &[Role::Auditor], None), token("b", "x", &[Role::Auditor], None)]);
    assert_eq!(Auth::new(&same, None).unwrap_err().field, "auth.tokens[1].sha256");
    let clash = config(vec![token("a", "x", &[Role::Auditor], None)]);
    assert_eq!(Auth::new(&clash, Some("x")).unwrap_err().field, ADMIN_TOKEN_ENV);
}

#[test]
fn a_new_token_matches_its_digest() {
    let (token, digest) = new_token().unwrap();
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(digest, digest_hex(&token));
    assert_ne!(new_token().unwrap().0, token);
}

#[tokio::test]
async fn the_auth_section_reads_from_toml() {
    let text = format!(
        "decisions = \"token\"\n[[tokens]]\nname = \"auditor\"\nsha256 = \"{}\"\nroles = [\"auditor\", \"consent-writer\"]\n",
        digest_hex("t")
    );
    let parsed: AuthConfig = toml::from_str(&text).unwrap();
    let auth = Auth::new(&parsed, None).unwrap();
    assert!(auth.decisions_need_token());
    assert_eq!(
        auth.authenticate(Some("Bearer t")).await.unwrap().roles,
        vec![Role::ConsentWriter, Role::Auditor]
    );
    assert!(toml::from_str::<AuthConfig>("decisions = \"maybe\"").is_err());
    assert!(toml::from_str::<AuthConfig>("token = []").is_err());
}
