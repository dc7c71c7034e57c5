//! The access overview: who may read a patient's records now, and why
//! (GDPR Art. 15, the ePA's access overview).
//!
//! It is a set of subject searches, each exact (see [`super`]): reading
//! the `Patient` entity itself, which every consent and pack rule about the
//! patient's records covers (`resource in Patient::"…"`) and which carries
//! none of the labels that exclude single records, once per purpose of use
//! in [`PURPOSES`], over every stored principal of every type the schema
//! lets `read` a patient. A principal allowed for some purpose is listed
//! with the purposes and the consent versions or pack rules that allow it.
//! Break-glass is asked separately, with purpose `BTG` and a justification,
//! as an emergency would ask it; whoever is allowed then is listed under
//! `break_glass`, with those conditions, whether or not they also have
//! ordinary access. Purposes
//! not in the list (billing, public health) are not asked: a consent that
//! names only such a purpose does not show here.
//!
//! The whole overview is recorded once in the decision log, as the search
//! it is (the principal `*`, every policy that allowed someone).

use std::collections::BTreeMap;

use consentry_engine::cedar_policy::{EntityTypeName, EntityUid};
use consentry_engine::{
    DecisionRequest, Found, Reason, RequestError, SearchRequest, Searched, uid_from_parts,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Listing, SearchQuery, Source};
use crate::pipeline::{Pipeline, SearchError, SearchRecord};

/// The ordinary purposes of use the overview asks about: treatment,
/// emergency treatment, research, the patient's own request and a
/// representative's.
pub const PURPOSES: [&str; 5] = ["TREAT", "ETREAT", "HRESCH", "PATRQT", "PWATRNY"];

/// The break-glass context the overview asks with: an emergency must give
/// purpose `BTG` and a justification.
const BREAK_GLASS_PURPOSE: &str = "BTG";

/// Who may read a patient's records.
#[derive(Debug, Serialize)]
pub struct AccessOverview {
    /// The patient.
    pub patient: String,
    /// The decision log record of this overview.
    pub decision_id: uuid::Uuid,
    /// The purposes asked about, in order.
    pub purposes: Vec<&'static str>,
    /// Who may read for an ordinary purpose, in uid order.
    pub access: Vec<Grant>,
    /// Who may read by breaking the glass, and on what conditions.
    pub break_glass: Vec<BreakGlass>,
}

/// One principal's access, by purpose.
#[derive(Debug, Serialize)]
pub struct Grant {
    /// The principal, as an AuthZEN entity.
    pub principal: Value,
    /// Per purpose, what allows it.
    pub purposes: Vec<PurposeGrant>,
}

/// What allows a principal for one purpose.
#[derive(Debug, Serialize)]
pub struct PurposeGrant {
    /// The purpose of use.
    pub purpose: &'static str,
    /// The consent versions and pack rules that allow it.
    pub basis: Vec<Basis>,
}

/// A determining policy: a consent rule with its consent and version, or a pack rule.
#[derive(Debug, Serialize)]
pub struct Basis {
    /// The policy id.
    pub policy: String,
    /// Its `@reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a consent rule, the consent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
    /// For a consent rule, the consent's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A principal who may read by breaking the glass.
#[derive(Debug, Serialize)]
pub struct BreakGlass {
    /// The principal, as an AuthZEN entity.
    pub principal: Value,
    /// The conditions: the purpose and the justification an emergency must give.
    pub conditions: Value,
    /// The rules that allow it.
    pub basis: Vec<Basis>,
    /// What an emergency access obliges (`notify-patient`, `audit-priority`).
    pub obligations: Vec<String>,
}

/// Computes the overview of `patient`'s access at the server's clock.
pub async fn access_overview(
    pipeline: &Pipeline,
    listing: Listing<'_>,
    patient: &str,
) -> Result<AccessOverview, SearchError> {
    let resource = uid_from_parts(consentry_engine::PATIENT_TYPE, patient, "id")?;
    let read = uid_from_parts("Action", "read", "action")?;
    let bundle = pipeline.bundle();
    let schema = bundle.schema().ok_or_else(|| {
        RequestError::schema("id", "the access overview needs a schema to know who can read a patient")
    })?;
    let readable =
        schema.resources_for_action(&read).into_iter().flatten().any(|k| k == resource.type_name());
    if !readable {
        return Err(RequestError::schema("id", "the schema has no `read` action on a `Patient`").into());
    }
    let mut kinds: Vec<EntityTypeName> =
        schema.principals_for_action(&read).into_iter().flatten().cloned().collect();
    kinds.sort_by_cached_key(ToString::to_string);
    let mut everyone: Vec<Found> = Vec::new();
    let mut granted: BTreeMap<String, Grant> = BTreeMap::new();
    for purpose in PURPOSES {
        let context = json!({"purpose": purpose});
        for found in subjects(pipeline, listing, &kinds, &resource, &read, context, patient).await? {
            let grant = granted
                .entry(found.uid.to_string())
                .or_insert_with(|| Grant { principal: entity(&found.uid), purposes: Vec::new() });
            grant.purposes.push(PurposeGrant { purpose, basis: basis(&found.decision.reasons) });
            everyone.push(found);
        }
    }
    let emergency = json!({"purpose": BREAK_GLASS_PURPOSE, "justification": "access overview"});
    let mut break_glass = Vec::new();
    for found in subjects(pipeline, listing, &kinds, &resource, &read, emergency, patient).await? {
        break_glass.push(BreakGlass {
            principal: entity(&found.uid),
            conditions: json!({"purpose": BREAK_GLASS_PURPOSE, "justification": "required"}),
            basis: basis(&found.decision.reasons),
            obligations: found.decision.obligations.iter().map(|o| o.id.clone()).collect(),
        });
        everyone.push(found);
    }
    let recorded =
        SearchRequest::new(Searched::Subject, DecisionRequest::new(resource.clone(), read, resource));
    let decision_id = pipeline
        .record_search(SearchRecord {
            query: &recorded,
            searched: "*".to_owned(),
            found: &everyone,
            patients: vec![patient.to_owned()],
        })
        .await?;
    Ok(AccessOverview {
        patient: patient.to_owned(),
        decision_id,
        purposes: PURPOSES.to_vec(),
        access: granted.into_values().collect(),
        break_glass,
    })
}

/// Every principal of `kinds` allowed to `read` the patient with `context`.
async fn subjects(
    pipeline: &Pipeline,
    listing: Listing<'_>,
    kinds: &[EntityTypeName],
    resource: &EntityUid,
    read: &EntityUid,
    context: Value,
    patient: &str,
) -> Result<Vec<Found>, SearchError> {
    let mut all = Vec::new();
    for kind in kinds {
        let principal = uid_from_parts(&kind.to_string(), "", "principal")?;
        let mut request = DecisionRequest::new(principal, read.clone(), resource.clone());
        request.context = Some(context.clone());
        request.now = Some(crate::clock::now());
        // The patient is the only patient who may ask for themselves.
        let source = if kind.to_string() == consentry_engine::PATIENT_TYPE {
            Source::Listed(vec![resource.clone()])
        } else {
            Source::OfType(kind.to_string())
        };
        let query = SearchQuery {
            search: SearchRequest::new(Searched::Subject, request),
            source,
            limit: usize::MAX - 1,
            after: None,
            binding: format!("access-overview/{patient}"),
        };
        all.extend(query.find(pipeline, listing).await?);
    }
    Ok(all)
}

/// The determining policies, with the consent and version of consent rules
/// (`consent/<id>/v<version>/…`).
fn basis(reasons: &[Reason]) -> Vec<Basis> {
    reasons
        .iter()
        .map(|reason| {
            let mut parts = reason.policy.split('/');
            let (consent, version) = match (parts.next(), parts.next(), parts.next()) {
                (Some("consent"), Some(id), Some(version)) => {
                    (Some(id.to_owned()), version.strip_prefix('v').and_then(|v| v.parse().ok()))
                }
                _ => (None, None),
            };
            Basis { policy: reason.policy.clone(), reason: reason.reason.clone(), consent, version }
        })
        .collect()
}

fn entity(uid: &EntityUid) -> Value {
    json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()})
}
