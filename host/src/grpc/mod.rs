//! Envoy's external authorization over gRPC:
//! `envoy.service.auth.v3.Authorization/Check`, served on a listener of its
//! own (`listen.grpc_bind`).
//!
//! Envoy and Istio speak gRPC to an authorization service by preference: one
//! HTTP/2 connection multiplexes every check, and the proxied request's
//! headers arrive as data rather than mixed with the check's own. This
//! module only translates ([`convert`]); the mapping and the decision are
//! [`crate::ext_authz::decide`], the same as for `/ext_authz/*`, so the two
//! transports cannot disagree.
//!
//! The service is a tonic service turned into an [`axum::Router`], so it is
//! served by [`crate::connections`] like the HTTP listeners: the same TLS,
//! deadlines and connection cap. The types are `envoy-types`'s generated
//! code rather than protos compiled here.

mod convert;

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

use crate::auth::Role;
use crate::http::AppError;
use crate::metrics::Api;
use crate::state::AppState;

/// The call metadata the decision token travels in when `auth.decisions`
/// is `token`: the proxied request's own `Authorization` is inside the
/// `CheckRequest`, so the call's is Envoy's, set by `initial_metadata`.
pub const TOKEN_METADATA: &str = "authorization";

/// The gRPC service over shared state, with `max_body` as the largest
/// `CheckRequest` accepted.
pub fn router(state: Arc<AppState>, max_body: usize) -> axum::Router {
    let service = AuthorizationServer::new(Check { state }).max_decoding_message_size(max_body);
    // As on the HTTP listeners, where a 4xx is no server failure, what a
    // client got wrong (an oversized message, an unknown method) is not
    // logged as an error.
    let client_errors =
        [GrpcCode::Cancelled, GrpcCode::InvalidArgument, GrpcCode::OutOfRange, GrpcCode::Unimplemented];
    let classifier =
        client_errors.into_iter().fold(GrpcErrorsAsFailures::new(), GrpcErrorsAsFailures::with_success);
    let trace = TraceLayer::new(SharedClassifier::new(classifier));
    tonic::service::Routes::new(service).prepare().into_axum_router().layer(trace)
}

/// The `Authorization` service.
#[derive(Debug)]
struct Check {
    state: Arc<AppState>,
}

#[tonic::async_trait]
impl Authorization for Check {
    /// Always answers with a `CheckResponse`, never a gRPC error, so that a
    /// refusal denies whatever Envoy's `failure_mode_allow` says: `OK` for
    /// an Allow, `PERMISSION_DENIED` (403) for a Deny, `UNAUTHENTICATED`
    /// (401) or `PERMISSION_DENIED` (403) for a caller without the decision
    /// token, `INVALID_ARGUMENT` (400) for a check that is not about an HTTP
    /// request.
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if self.state.auth.decisions_need_token() {
            let token = request.metadata().get(TOKEN_METADATA).and_then(|v| v.to_str().ok());
            if let Err(failure) = self.state.auth.authorize(token, &[Role::Decision]).await {
                return Ok(tonic::Response::new(convert::refused(&AppError::from(failure))));
            }
        }
        let proxied = match convert::proxied_request(request.get_ref()) {
            Ok(proxied) => proxied,
            Err(invalid) => return Ok(tonic::Response::new(convert::refused(&AppError::from(invalid)))),
        };
        let started = std::time::Instant::now();
        let decided =
            crate::metrics::with_api(Api::GrpcExtAuthz, crate::ext_authz::decide(&self.state, proxied));
        let decided = decided.await;
        crate::metrics::decision_duration(Api::GrpcExtAuthz, started.elapsed());
        let decided = match decided {
            Ok(decided) => decided,
            Err(refused) => return Ok(tonic::Response::new(convert::refused(&AppError::from(refused)))),
        };
        if !decided.decision.is_allowed() {
            tracing::info!(decision_id = %decided.id, outcome = ?decided.decision.outcome, "ext_authz (gRPC) denied");
        }
        Ok(tonic::Response::new(convert::answer(&decided)))
    }
}
