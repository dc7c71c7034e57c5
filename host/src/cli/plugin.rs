//! `plugin check`: what an integrator's component offers and needs, before
//! a server is asked to load it.

use super::args::PluginCheckArgs;
use super::error::{CliError, Outcome};
use crate::plugins::bindings::INTERFACE;
use crate::plugins::runtime::Runtime;
use crate::plugins::sandbox::import_treatment;

/// `consentry plugin check`.
pub fn check(args: &PluginCheckArgs) -> Result<Outcome, CliError> {
    let shown = args.component.display();
    let bytes = std::fs::read(&args.component)
        .map_err(|e| CliError::invalid(format!("cannot read `{shown}`: {e}")))?;
    let description = Runtime::new()
        .map_err(CliError::failed)?
        .describe(&bytes)
        .map_err(|e| CliError::invalid(format!("`{shown}`: {e}")))?;
    println!("interface: {INTERFACE}");
    println!("hooks:");
    for hook in &description.hooks {
        println!("  {}", hook.name());
    }
    println!("imports:");
    for import in &description.imports {
        println!("  {import}: {}", import_treatment(import));
    }
    if description.hooks.is_empty() {
        return Err(CliError::invalid(format!(
            "`{shown}` exports none of the hooks of {INTERFACE} (exports: {}), so it does not implement a Consentry \
             plugin world: implement a hook with the SDK (`consentry-plugin-sdk`), name it in `export_plugin!`, \
             and build with `cargo build --release --target wasm32-wasip2`",
            description.exports.join(", ")
        )));
    }
    Ok(Outcome::Done)
}
