//! Schemas for the engine's types that reach the wire, described here so
//! the decision core does not depend on a documentation crate. Each mirror
//! names the engine type it stands for; they are never built, only
//! described, and a change to the engine's serde shape must be made here
//! too (the examples test catches request bodies that drift).

#![expect(dead_code, reason = "schema-only mirrors: described in the OpenAPI document, never built")]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

/// An entity uid, as Cedar text (`User::"alice"`) or as `{type, id}`
/// (also wrapped in `{"__entity": {type, id}}`, Cedar's JSON form).
pub fn entity_uid() -> Schema {
    let parts = || {
        ObjectBuilder::new()
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("the entity type, e.g. `Patient` or `App::User`")),
            )
            .property("id", ObjectBuilder::new().schema_type(Type::String).description(Some("the entity id")))
            .required("type")
            .required("id")
    };
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Cedar text, e.g. `Practitioner::\"dr-weber\"`")),
        )
        .item(parts().property("__entity", ObjectBuilder::new().schema_type(SchemaType::AnyValue)))
        .item(ObjectBuilder::new().property("__entity", parts()).required("__entity"))
        .description(Some(
            "an entity uid: Cedar text like `User::\"alice\"`, `{\"type\", \"id\"}`, or `{\"__entity\": {\"type\", \"id\"}}`",
        ))
        .into()
}

/// A JSON object of any members: contexts, properties, Cedar entities.
pub fn any_object() -> Schema {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

/// Stands for `consentry_engine::Outcome`.
#[derive(Serialize, ToSchema)]
#[schema(as = Outcome)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSchema {
    /// A permit policy was satisfied and no forbid was.
    Allow,
    /// A forbid policy was satisfied.
    Forbidden,
    /// No permit policy was satisfied.
    NotPermitted,
    /// Evaluation could not complete; denied so that a fault never grants access.
    FailedClosed,
}

/// Stands for `consentry_engine::ObligationKind`.
#[derive(Serialize, ToSchema)]
#[schema(as = ObligationKind)]
#[serde(rename_all = "snake_case")]
pub enum ObligationKindSchema {
    /// From `@obligation`: the caller must carry it out, or not act on the decision.
    Obligation,
    /// From `@advice`: the caller should carry it out.
    Advice,
}

/// An instruction attached to a decision by one of its determining
/// policies (`consentry_engine::Obligation`).
#[derive(ToSchema)]
#[schema(as = Obligation)]
pub struct ObligationSchema {
    /// The instruction, for example `notify-patient`.
    id: String,
    /// Obligation or advice.
    kind: ObligationKindSchema,
    /// The determining policy that attached it.
    policy: String,
    /// Its parameters, from the policy's annotation named after the obligation.
    #[schema(nullable = false)]
    values: Option<Vec<String>>,
    /// For the `filter` obligation of a patient-level search: the records
    /// the search may return, as `/v1/plan`'s `filter`.
    #[schema(value_type = Option<Object>, nullable = false)]
    filter: Option<Value>,
}

/// A determining policy and its `@reason` (`consentry_engine::Reason`).
#[derive(ToSchema)]
#[schema(as = Reason)]
pub struct ReasonSchema {
    /// The policy id.
    policy: String,
    /// The policy's `@reason` annotation, if it has one.
    #[schema(nullable = false)]
    reason: Option<String>,
}

/// An error met while deciding (`consentry_engine::DecisionError`).
#[derive(ToSchema)]
#[schema(as = DecisionError)]
pub struct DecisionErrorSchema {
    /// The policy being evaluated; absent for a fault outside any policy.
    #[schema(nullable = false)]
    policy: Option<String>,
    /// What went wrong.
    message: String,
}

/// A problem found in policies, a schema or entities (`consentry_engine::Problem`).
#[derive(ToSchema)]
#[schema(as = Problem)]
pub struct ProblemSchema {
    /// The policy the problem belongs to, when there is one.
    #[schema(nullable = false)]
    policy_id: Option<String>,
    /// Human-readable, lowercase message.
    message: String,
    /// Extra advice from Cedar, when it has some.
    #[schema(nullable = false)]
    help: Option<String>,
    /// Byte offset into the policy source, when known.
    #[schema(nullable = false)]
    offset: Option<u64>,
}

/// Stands for `consentry_engine::PlanKind`.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanKind)]
#[serde(rename_all = "snake_case")]
pub enum PlanKindSchema {
    /// Every record of the patient is allowed.
    Always,
    /// No record of the patient is allowed.
    Never,
    /// Some are: those the filter admits.
    Conditional,
}

/// Which of a patient's records an actor may act on (`consentry_engine::Plan`).
#[derive(ToSchema)]
#[schema(as = Plan)]
pub struct PlanSchema {
    /// Always, never, or conditional.
    kind: PlanKindSchema,
    /// The records allowed, as a filter over record attributes.
    #[schema(value_type = Object)]
    filter: Value,
    /// The filter as FHIR search parameters, as far as FHIR search can say it.
    #[schema(value_type = Object)]
    fhir: Value,
    /// The policies that still depend on the record, with their conditions.
    #[schema(value_type = Vec<Object>)]
    residuals: Vec<Value>,
    /// The parts of residuals that no filter condition expresses; the filter
    /// then leaves out every record they might concern.
    untranslated: Vec<String>,
    /// Faults and notes, such as consents that cannot be evaluated.
    errors: Vec<String>,
}

/// A template link (`consentry_engine::TemplateLink`).
#[derive(Deserialize, ToSchema)]
#[schema(as = TemplateLink)]
pub struct TemplateLinkSchema {
    /// Id of the template to link.
    template: String,
    /// Id of the new linked policy.
    id: String,
    /// Slot values, keyed `?principal` / `?resource`; each value is an entity uid.
    #[schema(value_type = Object)]
    values: Value,
}

/// `PATCH /v1/entities`: upserts and deletions, all or nothing
/// (`consentry_engine::EntityPatch`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EntityPatch)]
pub struct EntityPatchSchema {
    /// Entities in Cedar's entity JSON format, inserted or replaced whole.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    upsert: Vec<Value>,
    /// Uids to remove; removing a uid that is not stored is not an error.
    #[serde(default)]
    #[schema(schema_with = uid_list)]
    delete: Vec<Value>,
}

/// A JSON array of entity uids.
pub struct EntityUids;

impl utoipa::PartialSchema for EntityUids {
    fn schema() -> RefOr<Schema> {
        RefOr::T(uid_list())
    }
}

impl ToSchema for EntityUids {
    fn name() -> std::borrow::Cow<'static, str> {
        "EntityUids".into()
    }
}

fn uid_list() -> Schema {
    utoipa::openapi::schema::ArrayBuilder::new().items(RefOr::T(entity_uid())).into()
}
