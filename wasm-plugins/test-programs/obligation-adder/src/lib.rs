//! Test program: an `obligations` hook. When the decision is allow, it adds
//! one obligation: its id is config `id` (default `log-access`), its values
//! config `values`, comma-separated (default none). Otherwise it adds none.

use consentry_plugin_sdk::{Decision, Obligation, Obligations, Request, config, config_or, export_plugin};

struct Adder;

impl Obligations for Adder {
    fn obligations(_request: Request, decision: Decision) -> Result<Vec<Obligation>, String> {
        if !decision.is_allow() {
            return Ok(Vec::new());
        }
        let values = config("values").unwrap_or_default();
        let values = values.split(',').map(str::trim).filter(|value| !value.is_empty());
        Ok(vec![Obligation::new(config_or("id", "log-access"), values)])
    }
}

export_plugin!(Adder: obligations);
