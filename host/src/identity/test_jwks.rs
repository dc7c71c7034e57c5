//! A JWKS endpoint on a real loopback HTTP server, for the identity tests:
//! the library's own and, included by path, the end-to-end tests'.

#![allow(dead_code)] // each includer uses its own part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde_json::Value;

/// A JWKS endpoint on a real loopback HTTP server, counting its fetches.
pub struct JwksServer {
    pub url: String,
    state: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

struct Served {
    document: Mutex<Value>,
    fetches: AtomicUsize,
}

impl JwksServer {
    #[allow(clippy::disallowed_methods)] // a test server, not part of the API
    pub async fn start(document: Value) -> Self {
        let state = Arc::new(Served { document: Mutex::new(document), fetches: AtomicUsize::new(0) });
        let app = axum::Router::new()
            .route(
                "/jwks",
                get(|State(state): State<Arc<Served>>| async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    Json(state.document.lock().unwrap().clone())
                }),
            )
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    pub fn serve(&self, document: Value) {
        *self.state.document.lock().unwrap() = document;
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
