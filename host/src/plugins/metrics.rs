//! Per-plugin, per-hook metrics: calls, errors, timeouts and duration.
//!
//! The handles are registered when a plugin loads, so a call only bumps
//! atomics and allocates nothing for labels.

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use super::config::Hook;
use super::fault::PluginFault;

/// The metrics of one hook of one plugin.
#[derive(Debug, Clone)]
pub struct HookMetrics {
    calls: Counter,
    errors: Counter,
    timeouts: Counter,
    duration: Histogram,
}

impl HookMetrics {
    /// Registers the metrics of `hook` of `plugin`.
    pub fn new(plugin: &str, hook: Hook) -> Self {
        crate::metrics::handle();
        let labels = [("plugin", plugin.to_owned()), ("hook", hook.name().to_owned())];
        Self {
            calls: counter!("consentry_plugin_calls_total", &labels),
            errors: counter!("consentry_plugin_errors_total", &labels),
            timeouts: counter!("consentry_plugin_timeouts_total", &labels),
            duration: histogram!("consentry_plugin_call_duration_seconds", &labels),
        }
    }

    /// Records one call and, if it failed, its fault.
    pub fn record(&self, elapsed: Duration, fault: Option<&PluginFault>) {
        self.calls.increment(1);
        self.duration.record(elapsed.as_secs_f64());
        if let Some(fault) = fault {
            self.record_fault(fault);
        }
    }

    /// Records a fault, including one found in the output after the call.
    pub fn record_fault(&self, fault: &PluginFault) {
        self.errors.increment(1);
        if matches!(fault, PluginFault::Timeout(_)) {
            self.timeouts.increment(1);
        }
    }
}
