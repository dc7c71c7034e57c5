//! Plans through the pipeline: `POST /v1/plan` and `consentry plan`.
//!
//! A plan must see what a decision about one of the patient's records
//! would see: the policies in force, the patient's consent partition as the
//! pipeline loads it, and the entities from the bounded cache, loaded on
//! demand. Anything that cannot be loaded gives a plan that admits nothing,
//! as a decision would fail closed. `enrich` plugins change each decision
//! on its own, so while any plugin takes part in decisions a plan cannot
//! stand for them, and admits nothing.

use std::str::FromStr;
use std::sync::Arc;

use consentry_engine::cedar_policy::{EntityTypeName, EntityUid};
use consentry_engine::{DecisionRequest, Plan, PlanKind, PlanRequest, RequestError, parse_uid};
use serde::Deserialize;
use serde_json::Value;

use crate::identity::{BearerToken, FactsError, TokenIdentity, acting_principal};
use crate::pipeline::Pipeline;

/// How often a plan is tried with the entities the last try found missing
/// loaded, as for decisions.
const LOAD_ATTEMPTS: usize = 4;

/// The body of `/v1/plan` and the file `consentry plan` reads:
/// `{principal, action, resource_type, patient?, context?}`, uids as Cedar
/// text or `{type, id}`. A `token` (the caller's OIDC or SMART access
/// token) may stand for the principal, as in `/v1/is_authorized`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// The actor; may be left out when a `token` stands for it.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::wire::entity_uid, required = false)]
    principal: Option<Value>,
    /// The action, such as `Action::"read"`.
    #[schema(schema_with = crate::http::openapi::wire::entity_uid)]
    action: Value,
    /// The type of the records, such as `Observation`.
    resource_type: String,
    /// The patient whose records are planned for.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::wire::entity_uid, required = false)]
    patient: Option<Value>,
    /// The request's context.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// The caller's OIDC or SMART on FHIR access token, standing for the
    /// principal; its purpose of use, scopes and launch patient go into the context.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
}

impl PlanBody {
    /// The access token, taken out of the body to be verified.
    pub fn take_token(&mut self) -> Option<BearerToken> {
        self.token.take()
    }

    /// Parses the uids and assembles the engine's request, evaluated now by
    /// the server's clock. With `identity`, the verified token taken out of
    /// the body, the principal and the context's token facts are the
    /// token's (see [`acting_principal`]); a token still in the body was
    /// not verified and is refused.
    pub fn into_request(self, identity: Option<&TokenIdentity>) -> Result<PlanRequest, RequestError> {
        if self.token.is_some() {
            return Err(FactsError::Unverified.into());
        }
        let resource_type = EntityTypeName::from_str(&self.resource_type).map_err(|_| {
            RequestError::malformed(
                "resource_type",
                format!("`{}` is not an entity type name", self.resource_type),
            )
        })?;
        let given =
            self.principal.filter(|p| !p.is_null()).map(|p| parse_uid(&p, "principal")).transpose()?;
        let mut context = self.context.filter(|c| !c.is_null());
        let principal = acting_principal(identity, given, "principal", &mut context)?;
        Ok(PlanRequest {
            principal,
            action: parse_uid(&self.action, "action")?,
            resource_type,
            patient: match self.patient.filter(|p| !p.is_null()) {
                Some(patient) => Some(parse_uid(&patient, "patient")?),
                // A SMART app launched for a patient plans over that patient's records.
                None => identity.and_then(TokenIdentity::launch_patient_uid),
            },
            context,
            now: Some(crate::clock::now()),
        })
    }
}

/// Parses a plan request file for `consentry plan`, naming the bad field on error.
pub fn parse(bytes: &[u8]) -> Result<PlanRequest, RequestError> {
    crate::request_body::from_json::<PlanBody>(bytes)?.into_request(None)
}

/// One try at a plan: made, or to be tried again once these entities are loaded.
enum Attempt {
    Made(Plan),
    Load(Vec<EntityUid>),
}

impl Pipeline {
    /// Plans a request with the policies, consents and entities in force.
    pub async fn plan(&self, request: &PlanRequest) -> Result<Plan, RequestError> {
        use tracing::Instrument;
        let planned = self.plan_traced(request).instrument(crate::pipeline::decision_span(1)).await;
        if let Ok(plan) = &planned {
            crate::metrics::decision(match plan.kind {
                PlanKind::Always => "always",
                PlanKind::Never => "never",
                PlanKind::Conditional => "conditional",
            });
        }
        planned
    }

    async fn plan_traced(&self, request: &PlanRequest) -> Result<Plan, RequestError> {
        if self.plugins.current().decides() {
            return Ok(Plan::undetermined(
                "plugins take part in decisions (`enrich` or `obligations`), which a plan cannot stand for: \
                 decide each record",
            ));
        }
        // The uids a decision about one of the patient's records would name, but the record.
        let mut named = DecisionRequest::new(
            request.principal.clone(),
            request.action.clone(),
            request.patient.clone().unwrap_or_else(|| request.principal.clone()),
        );
        named.context = request.context.clone();
        let mut wanted = named.named_uids();
        for attempt in 1..=LOAD_ATTEMPTS {
            if let Err(error) = self.directory.load_entities(wanted).await {
                return Ok(Plan::fail_closed(format!("the entity directory could not be read: {error}")));
            }
            match self.plan_loaded(request).await? {
                Attempt::Made(plan) => return Ok(plan),
                Attempt::Load(missing) if attempt == LOAD_ATTEMPTS => return Ok(Plan::not_loaded(missing)),
                Attempt::Load(missing) => wanted = missing,
            }
        }
        Ok(Plan::fail_closed("the plan's entities could not be loaded"))
    }

    /// Plans with the entities loaded so far and the patient's partition.
    async fn plan_loaded(&self, request: &PlanRequest) -> Result<Attempt, RequestError> {
        if let Some(reason) = self.directory.out_of_touch() {
            return Ok(Attempt::Made(Plan::fail_closed(reason)));
        }
        let bundle = self.bundle();
        let patient = request.patient.as_ref().map(|uid| uid.id().unescaped().to_owned());
        let partitions = self.consents.partitions(&bundle, patient.clone()).await;
        let partition = match patient.as_ref().map(|p| partitions.get(p)) {
            None => None,
            Some(Some(Ok(partition))) => Some(partition),
            Some(Some(Err(reason))) => return Ok(Attempt::Made(Plan::fail_closed(reason.to_string()))),
            Some(None) => {
                return Ok(Attempt::Made(Plan::fail_closed("the patient's consents were not loaded")));
            }
        };
        let snapshot = self.read();
        if !Arc::ptr_eq(&snapshot.bundle, &bundle) {
            // The bundle was swapped while the consents loaded: plan again under the new one.
            return Ok(Attempt::Load(Vec::new()));
        }
        let plan = consentry_engine::plan(
            &snapshot.bundle,
            partition.map(AsRef::as_ref),
            &snapshot.store,
            request,
            &self.decisions,
        )?;
        Ok(if plan.unloaded.is_empty() { Attempt::Made(plan) } else { Attempt::Load(plan.unloaded) })
    }
}
