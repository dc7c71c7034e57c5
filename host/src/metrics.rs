//! Prometheus metrics, served at `GET /metrics`.
//!
//! One process-wide recorder, installed the first time anything asks for
//! it, so that metrics registered before the server starts (plugins load
//! first) are not lost to the no-op recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if no other is installed, and returns its handle;
/// `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).as_ref()
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
