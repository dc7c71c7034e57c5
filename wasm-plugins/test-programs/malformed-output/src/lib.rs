//! Test program: an `enrich` hook that returns output the host must reject,
//! chosen by config `mode`:
//!
//! - `not-json`: the context is `not json`;
//! - `context-not-object`: the context is `[1,2]`;
//! - `bad-entity`: an entity of type `Spaceship`, which the schema lacks;
//! - `sets-now`: the context sets `now`;
//! - `replaces-attribute`: the context sets `purpose`, which the request
//!   already has.
//!
//! It uses wit-bindgen directly rather than the SDK, since the SDK only
//! produces well-formed JSON.

wit_bindgen::generate!({
    world: "enricher",
    path: "../../sdk/wit",
});

use consentry::plugin::config;
use consentry::plugin::types::{DecisionRequest, Enrichment};
use exports::consentry::plugin::enrich::Guest;

struct Malformed;

impl Guest for Malformed {
    fn enrich(_request: DecisionRequest) -> Result<Enrichment, String> {
        let mode = config::get("mode").unwrap_or_default();
        let (context, entities) = match mode.as_str() {
            "not-json" => ("not json", "[]"),
            "context-not-object" => ("[1,2]", "[]"),
            "bad-entity" => {
                ("{}", r#"[{"uid": {"type": "Spaceship", "id": "enterprise"}, "attrs": {}, "parents": []}]"#)
            }
            "sets-now" => (r#"{"now": {"__extn": {"fn": "datetime", "arg": "1999-12-31T23:59:59Z"}}}"#, "[]"),
            "replaces-attribute" => (r#"{"purpose": "HRESCH"}"#, "[]"),
            _ => {
                return Err(format!(
                    "config `mode` must be one of not-json, context-not-object, bad-entity, sets-now, replaces-attribute; got `{mode}`"
                ));
            }
        };
        Ok(Enrichment { context: context.to_owned(), entities: entities.to_owned() })
    }
}

export!(Malformed);
