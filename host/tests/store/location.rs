//! Parsing a store location.

use std::path::PathBuf;

use consentry::store::{StoreError, StoreLocation};

#[test]
fn postgres_urls_name_a_postgres_store() {
    for url in ["postgres://consentry:s3cret@db.example:5432/consents", "postgresql://db.example/consents"] {
        assert_eq!(url.parse::<StoreLocation>().unwrap(), StoreLocation::Postgres { url: url.to_owned() });
    }
}

#[test]
fn sqlite_urls_and_plain_paths_name_a_data_directory() {
    let cases = [
        ("sqlite:///var/lib/consentry", "/var/lib/consentry"),
        ("sqlite://data", "data"),
        ("/var/lib/consentry", "/var/lib/consentry"),
        ("./data dir", "./data dir"),
    ];
    for (text, dir) in cases {
        assert_eq!(text.parse::<StoreLocation>().unwrap(), StoreLocation::Sqlite { dir: PathBuf::from(dir) });
    }
}

#[test]
fn other_locations_are_refused_without_echoing_secrets() {
    let error = "mysql://root:s3cret@db/consents".parse::<StoreLocation>().unwrap_err();
    assert!(matches!(error, StoreError::Location(_)));
    assert_eq!(
        error.to_string(),
        "invalid store location: unsupported scheme `mysql` \
         (use `postgres://…`, `sqlite://DIR` or a directory)"
    );
    for empty in ["", "sqlite://"] {
        let error = empty.parse::<StoreLocation>().unwrap_err();
        assert_eq!(error.to_string(), "invalid store location: the SQLite data directory is empty");
    }
    let error = "postgres://consentry:s3cret@db.example:port/consents".parse::<StoreLocation>().unwrap_err();
    assert!(matches!(error, StoreError::Location(_)));
    assert!(!error.to_string().contains("s3cret"), "{error}");
}
