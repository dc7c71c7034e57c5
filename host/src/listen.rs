//! The listeners: one for everything, or a public and an admin one, over
//! HTTP or HTTPS; and Envoy's gRPC external authorization on one of its
//! own when `listen.grpc_bind` is set.
//!
//! A separate admin listener lets a deployment expose the decision APIs to
//! its services while the routes that change policies or read the audit
//! trail stay on an address only operators reach. HTTPS is rustls with the
//! ring provider, chosen explicitly rather than through a process-wide
//! default, so nothing depends on which crypto backend another crate enabled.
//! How each connection is served, and limited, is [`crate::connections`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenConfig, TlsFiles};
use crate::connections::{self, Connections, Deadlines};
use crate::http;
use crate::state::AppState;

/// Files kept for everything but connections (the consent store, the
/// decision log, plugins, the watcher) out of an open-file limit of 1024;
/// an eighth of larger limits.
const FILES_KEPT: u64 = 128;

/// A certificate or key the server cannot use.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no certificate.
    #[error("cannot use the TLS certificate `{path}`: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The key file cannot be read or holds no private key.
    #[error("cannot use the TLS key `{path}`: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// rustls refuses the pair, e.g. because the key is not the certificate's.
    #[error("cannot use the TLS certificate `{cert}` with the key `{key}`: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        message: String,
    },
}

/// Reads the PEM files of `[tls]` into a server configuration offering
/// HTTP/2 and HTTP/1.1.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_error = |message: String| TlsError::Cert { path: files.cert.clone(), message };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no PEM certificate in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: files.key.clone(), message: e.to_string() })?;
    let pair_error = |e: rustls::Error| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message: e.to_string(),
    };
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(pair_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(pair_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds the listeners, prints their addresses (the first stdout line is
/// `consentry listening on http(s)://ADDR`, then `consentry admin listening
/// on …` if there is an admin listener, then `consentry grpc listening on …`
/// if there is a gRPC one), and serves until `shutdown` completes, then
/// lets open requests finish.
pub async fn serve(
    listen: &ListenConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<AppState>,
    max_body: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public = bind(listen.bind).await?;
    let admin = match listen.admin_bind {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let grpc = match listen.grpc_bind {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    println!("consentry listening on {scheme}://{}", address(&public)?);
    if let Some(admin) = &admin {
        println!("consentry admin listening on {scheme}://{}", address(admin)?);
    }
    if let Some(grpc) = &grpc {
        println!("consentry grpc listening on {scheme}://{}", address(grpc)?);
    }
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let connections = Connections::new(connection_limit(listen.max_connections));
    let deadlines = Deadlines::from(listen);
    let tls = tls.map(TlsAcceptor::from);
    // The gRPC listener shares the HTTP listeners' TLS, deadlines and cap.
    let grpc = grpc.map(|listener| {
        let app = crate::grpc::router(Arc::clone(&state), max_body);
        connections::serve(listener, app, tls.clone(), Arc::clone(&connections), deadlines, stopped.clone())
    });
    let grpc = async move {
        if let Some(served) = grpc {
            served.await;
        }
    };
    let http = async move {
        match admin {
            None => {
                let app = http::router(state, max_body);
                connections::serve(public, app, tls, connections, deadlines, stopped).await;
            }
            Some(admin) => {
                let routers = http::routers(state, max_body);
                tokio::join!(
                    connections::serve(
                        public,
                        routers.public,
                        tls.clone(),
                        Arc::clone(&connections),
                        deadlines,
                        stopped.clone()
                    ),
                    connections::serve(admin, routers.admin, tls, connections, deadlines, stopped),
                );
            }
        }
    };
    tokio::join!(http, grpc);
    Ok(())
}

/// `configured`, lowered so that connections can never take the files the
/// process needs for everything else: with 1,024 files, a flood of idle
/// connections must not stop the consent store or the decision log from
/// opening theirs.
fn connection_limit(configured: usize) -> usize {
    let Some(files) = open_file_limit() else { return configured };
    let usable = files.saturating_sub(FILES_KEPT.max(files / 8));
    let limit = configured.min(usize::try_from(usable).unwrap_or(usize::MAX)).max(1);
    if limit < configured {
        tracing::info!(
            files,
            configured,
            limit,
            "at most {limit} connections: the open-file limit is {files} (`listen.max_connections` is {configured})"
        );
    }
    limit
}

/// The process's soft limit on open files, where there is one.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Why the server could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// An address could not be bound: taken, or not this host's.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The port a listener was given (for port 0) could not be read back.
    #[error("cannot read the bound address: {0}")]
    Address(std::io::Error),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|source| ListenError::Bind { addr, source })
}

fn address(listener: &TcpListener) -> Result<SocketAddr, ListenError> {
    listener.local_addr().map_err(ListenError::Address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_is_named() {
        let files = TlsFiles { cert: PathBuf::from("/nonexistent/cert.pem"), key: PathBuf::from("key.pem") };
        let error = load_tls(&files).unwrap_err().to_string();
        assert!(error.contains("certificate `/nonexistent/cert.pem`"), "{error}");
    }

    #[test]
    fn a_key_file_without_a_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let error = load_tls(&TlsFiles { cert, key: key.clone() }).unwrap_err().to_string();
        assert!(error.contains(&format!("key `{}`", key.display())), "{error}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        assert!(matches!(load_tls(&TlsFiles { cert, key }), Err(TlsError::Pair { .. })));
        std::fs::write(dir.path().join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
        let files = TlsFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        assert!(load_tls(&files).is_ok());
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "nothing here\n").unwrap();
        let files = TlsFiles { cert: cert.clone(), key: dir.path().join("key.pem") };
        let error = load_tls(&files).unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
