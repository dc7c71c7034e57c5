//! The hooks a plugin implements, and the glue that `export_plugin!` uses to
//! connect them to the host.

use crate::bindings::wit;
use crate::{CedarRequest, Decision, Enrichment, HttpRequest, Obligation, Request};

/// A policy information point: adds context attributes and entities to a
/// decision request before it is evaluated. Exported with
/// `export_plugin!(MyPlugin: enrich)`.
pub trait Enrich {
    /// What to add to `request`; [`Enrichment::new()`] for nothing. An error
    /// denies the request when the plugin fails closed, and is ignored when
    /// it is configured to be skipped.
    fn enrich(request: Request) -> Result<Enrichment, String>;
}

/// Turns an HTTP request into a Cedar request, for `/ext_authz/*`. Exported
/// with `export_plugin!(MyPlugin: map_request)`.
pub trait MapRequest {
    /// The Cedar request for `request`, or `Ok(None)` when it is not one this
    /// mapper understands (the host then asks the next mapper). An error
    /// denies the request.
    fn map_request(request: HttpRequest) -> Result<Option<CedarRequest>, String>;
}

/// Adds obligations to a decision after it is made. Exported with
/// `export_plugin!(MyPlugin: obligations)`.
pub trait Obligations {
    /// The obligations to add to `decision`; an empty list for none.
    fn obligations(request: Request, decision: Decision) -> Result<Vec<Obligation>, String>;
}

/// Keeps a panic from printing: the sandbox has no stderr, and the write
/// would trap as an ungranted import before the panic could abort, so the
/// host would report the write instead of the panic.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// Runs `T::enrich` on the host's request.
pub fn enrich<T: Enrich>(request: wit::DecisionRequest) -> Result<wit::Enrichment, String> {
    quiet_panics();
    T::enrich(Request::from_wit(request)?).map(Enrichment::into_wit)
}

/// Runs `T::map_request` on the host's request.
pub fn map_request<T: MapRequest>(request: wit::HttpRequest) -> Result<Option<wit::CedarRequest>, String> {
    quiet_panics();
    T::map_request(request.into()).map(|mapped| mapped.map(CedarRequest::into_wit))
}

/// Runs `T::obligations` on the host's request and decision.
pub fn obligations<T: Obligations>(
    request: wit::DecisionRequest,
    decision: wit::Decision,
) -> Result<Vec<wit::Obligation>, String> {
    quiet_panics();
    let obligations = T::obligations(Request::from_wit(request)?, decision.into())?;
    Ok(obligations.into_iter().map(Into::into).collect())
}
