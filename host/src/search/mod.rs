//! AuthZEN searches over the directory: candidates listed in uid order,
//! decided by the engine's search, one page at a time.
//!
//! The candidates of a subject or resource search are the stored entities
//! of the searched type (or, for `resource.properties.patient`, the
//! records filed under that patient), plus those of the type the request
//! sends; those of an action search are the schema's actions that apply to
//! the principal's and resource's types. They are listed from the store in
//! uid order (byte-wise) a chunk at a time and decided until the page holds
//! `limit` results and one more is known to exist, so that `next_token` is
//! empty exactly when nothing follows. A page's token is the last uid it
//! returned, so the pages of one query never overlap and, while the data
//! stands still, leave nothing out.
//!
//! The HTTP endpoints, `consentry search` and the access overview all page
//! through here; they differ only in where candidates are listed from.

pub mod body;
pub mod overview;
mod token;

use body::SearchBody;

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use consentry_engine::cedar_policy::{EntityId, EntityTypeName, EntityUid};
use consentry_engine::{
    EntityStore, Found, Obligation, PolicyBundle, Reason, RequestError, SearchRequest, Searched,
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::identity::TokenIdentity;
use crate::pipeline::{Pipeline, SearchError, SearchRecord, Unavailable};
use crate::store::DurableStore;

/// Candidates decided together at first; later chunks grow to [`MAX_CHUNK`].
const FIRST_CHUNK: usize = 1024;

/// The most candidates listed and decided at once.
const MAX_CHUNK: usize = 4096;

/// A search, ready to run.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// What is searched, and the rest of the request.
    pub search: SearchRequest,
    /// Where its candidates come from.
    pub source: Source,
    /// Results per page.
    pub limit: usize,
    /// The uid (Cedar text) the page starts after, from `page.token`.
    pub after: Option<String>,
    /// The hash of the query that page tokens carry.
    pub binding: String,
}

/// The candidates of a search, besides those the request sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Every stored entity of this type.
    OfType(String),
    /// The stored entities of type `kind` with `parent` (type, id) among their parents.
    Below {
        /// The parent's type and id.
        parent: (String, String),
        /// The candidates' type.
        kind: String,
    },
    /// These, whatever the store holds.
    Listed(Vec<EntityUid>),
}

/// Where stored candidates are listed from.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// The durable store's directory, paged by SQL: the server.
    Store(&'a DurableStore),
    /// The entities a pipeline holds in memory, which are the whole
    /// directory: `consentry search` over a policy directory.
    Memory,
}

/// One page of results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    /// `next_token` (empty when nothing follows) and `count` (§8.3.2).
    pub page: PageAnswer,
    /// The decision id the search is recorded under, and per result the
    /// policies or consents that allowed it and its obligations.
    pub context: PageContext,
    /// The results, as AuthZEN entities (`{type, id}`, or `{name}` for actions).
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// `page` of an answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageAnswer {
    /// The token of the next page; empty when this is the last.
    pub next_token: String,
    /// Results on this page.
    pub count: usize,
}

/// `context` of an answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageContext {
    /// The id of the search's record in the decision log.
    pub decision_id: Uuid,
    /// For each result, in the same order: why it is allowed.
    pub decisions: Vec<ResultDecision>,
}

/// Why one result is allowed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultDecision {
    /// The determining policies: pack rules, or consent rules with their version.
    #[schema(value_type = Vec<crate::http::openapi::wire::ReasonSchema>)]
    pub policies: Vec<Reason>,
    /// What the caller must do when it acts on the result.
    #[schema(value_type = Vec<crate::http::openapi::wire::ObligationSchema>)]
    pub obligations: Vec<Obligation>,
}

impl SearchQuery {
    /// Runs one page: lists and decides candidates after the token until
    /// the page is full and one more result is known, or the candidates
    /// run out; then records the search once in the decision log.
    pub async fn run(&self, pipeline: &Pipeline, listing: Listing<'_>) -> Result<SearchPage, SearchError> {
        use tracing::Instrument;
        self.run_page(pipeline, listing).instrument(crate::pipeline::decision_span(1)).await
    }

    async fn run_page(&self, pipeline: &Pipeline, listing: Listing<'_>) -> Result<SearchPage, SearchError> {
        let found = self.find(pipeline, listing).await?;
        let more = found.len() > self.limit;
        let found: Vec<Found> = found.into_iter().take(self.limit).collect();
        let next_token = match found.last() {
            Some(last) if more => token::seal(&self.binding, &last.uid.to_string()),
            _ => String::new(),
        };
        let patients = self.patients(pipeline, &found);
        let decision_id = pipeline
            .record_search(SearchRecord {
                query: &self.search,
                searched: self.searched_text(),
                found: &found,
                patients,
            })
            .await?;
        let results = found.iter().map(|f| self.result(&f.uid)).collect();
        let decisions = found
            .into_iter()
            .map(|f| ResultDecision {
                policies: f.decision.reasons.clone(),
                obligations: f.decision.obligations.clone(),
            })
            .collect::<Vec<_>>();
        Ok(SearchPage {
            page: PageAnswer { next_token, count: decisions.len() },
            context: PageContext { decision_id, decisions },
            results,
        })
    }

    /// Up to `limit + 1` results after the token, in uid order.
    async fn find(&self, pipeline: &Pipeline, listing: Listing<'_>) -> Result<Vec<Found>, SearchError> {
        let sent = self.sent_candidates();
        let mut after = self.after.clone();
        let mut found = Vec::new();
        let mut chunk = FIRST_CHUNK.max(self.limit.saturating_add(1)).min(MAX_CHUNK);
        loop {
            let (candidates, exhausted) =
                self.list(pipeline, listing, &sent, after.as_deref(), chunk).await?;
            let Some(last) = candidates.last() else { return Ok(found) };
            after = Some(last.to_string());
            let outcome = pipeline.search_candidates(&self.search, &candidates).await?;
            found.extend(outcome.found);
            if found.len() > self.limit || exhausted {
                return Ok(found);
            }
            chunk = (chunk * 2).min(MAX_CHUNK);
        }
    }

    /// The next `chunk` candidates after `after`, stored and sent merged in
    /// uid order, and whether they are the last.
    async fn list(
        &self,
        pipeline: &Pipeline,
        listing: Listing<'_>,
        sent: &BTreeSet<String>,
        after: Option<&str>,
        chunk: usize,
    ) -> Result<(Vec<EntityUid>, bool), SearchError> {
        let start = after.unwrap_or("");
        let limit = u32::try_from(chunk).unwrap_or(u32::MAX);
        let stored: Vec<String> = match (&self.source, listing) {
            (Source::Listed(uids), _) => {
                let mut listed: Vec<String> = uids.iter().map(ToString::to_string).collect();
                listed.sort();
                listed.into_iter().filter(|uid| uid.as_str() > start).take(chunk).collect()
            }
            (Source::OfType(kind), Listing::Store(store)) => {
                store.entity_uids(kind, start, limit).await.map_err(unreadable)?
            }
            (Source::Below { parent, kind }, Listing::Store(store)) => {
                store.child_uids((&parent.0, &parent.1), kind, start, limit).await.map_err(unreadable)?
            }
            (source, Listing::Memory) => {
                let snapshot = pipeline.read();
                in_memory(&snapshot.store, source, start, chunk)
            }
        };
        let exhausted = stored.len() < chunk;
        // Sent candidates up to the last stored one, or all that are left
        // when the stored ones ran out.
        let bound = stored.last().filter(|_| !exhausted).cloned();
        let mut merged: BTreeSet<String> = stored.into_iter().collect();
        merged.extend(
            sent.iter()
                .filter(|uid| {
                    uid.as_str() > start && bound.as_ref().is_none_or(|bound| uid.as_str() <= bound.as_str())
                })
                .cloned(),
        );
        let mut types = HashMap::new();
        let candidates = merged
            .into_iter()
            .map(|uid| {
                stored_uid(&uid, &mut types).map_err(|error| {
                    tracing::error!(%uid, %error, "a stored uid does not parse");
                    SearchError::from(Unavailable::StoredUid { uid })
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((candidates, exhausted))
    }

    /// The entities the request sends whose type is the searched one (for
    /// a patient's records, those filed under the patient).
    fn sent_candidates(&self) -> BTreeSet<String> {
        use consentry_engine::parse_uid;
        let (kind, parent) = match &self.source {
            Source::OfType(kind) => (kind, None),
            Source::Below { parent, kind } => (kind, Some(parent)),
            Source::Listed(_) => return BTreeSet::new(),
        };
        let filed = |entity: &Value| {
            parent.is_none_or(|(parent_type, parent_id)| {
                let parents = entity.get("parents").and_then(Value::as_array).into_iter().flatten();
                parents
                    .filter_map(|p| parse_uid(p, "parents").ok())
                    .any(|p| p.type_name().to_string() == *parent_type && p.id().unescaped() == parent_id)
            })
        };
        self.search
            .request
            .entities
            .iter()
            .filter_map(|entity| {
                let uid = parse_uid(entity.get("uid")?, "uid").ok()?;
                (uid.type_name().to_string() == *kind && filed(entity)).then(|| uid.to_string())
            })
            .collect()
    }

    /// The patients the page concerns: the fixed resource's, or those of
    /// the results and the patient a resource search is limited to.
    fn patients(&self, pipeline: &Pipeline, found: &[Found]) -> Vec<String> {
        let snapshot = pipeline.read();
        let mut patients: BTreeSet<String> = match self.search.searched {
            Searched::Resource => {
                found.iter().flat_map(|f| self.search.patients(&snapshot.store, &f.uid)).collect()
            }
            Searched::Subject | Searched::Action => {
                self.search.patients(&snapshot.store, &self.search.request.resource).into_iter().collect()
            }
        };
        if let Source::Below { parent, .. } = &self.source
            && parent.0 == consentry_engine::PATIENT_TYPE
        {
            patients.insert(parent.1.clone());
        }
        patients.into_iter().collect()
    }

    /// How the decision log names the searched part: `Type::*`.
    fn searched_text(&self) -> String {
        let request = &self.search.request;
        let uid = match self.search.searched {
            Searched::Subject => &request.principal,
            Searched::Resource => &request.resource,
            Searched::Action => &request.action,
        };
        format!("{}::*", uid.type_name())
    }

    /// A result as AuthZEN shows it.
    fn result(&self, uid: &EntityUid) -> Value {
        match self.search.searched {
            Searched::Action if uid.type_name().to_string() == "Action" => {
                json!({"name": uid.id().unescaped()})
            }
            Searched::Action => json!({"name": uid.to_string()}),
            Searched::Subject | Searched::Resource => {
                json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()})
            }
        }
    }
}

/// The query a search body asks under `bundle`, as the verified token's
/// `identity` if it carried one (see [`SearchBody::into_query`]): an action search's
/// candidates are the schema's actions that apply to its types, and a
/// searched type the schema does not declare is refused (422) rather than
/// answered with nothing.
pub fn query_for(
    bundle: &PolicyBundle,
    body: SearchBody,
    identity: Option<&TokenIdentity>,
) -> Result<SearchQuery, RequestError> {
    let schema = bundle.schema();
    let query = body.into_query(identity, |principal, resource| {
        schema.map(|_| bundle.actions_for(principal.type_name(), resource.type_name()))
    })?;
    let (field, kind) = match &query.source {
        Source::OfType(kind) | Source::Below { kind, .. } if query.search.searched == Searched::Subject => {
            ("subject.type", kind)
        }
        Source::OfType(kind) | Source::Below { kind, .. } => ("resource.type", kind),
        Source::Listed(_) => return Ok(query),
    };
    if let Some(schema) = schema
        && !schema.entity_types().any(|declared| declared.to_string() == *kind)
    {
        return Err(RequestError::schema(
            field,
            format!("entity type `{kind}` is not declared in the schema"),
        ));
    }
    Ok(query)
}

/// A uid as the store keeps it (`Type::"id"`, as Cedar prints it). Cedar's
/// parser takes microseconds per uid, more than deciding it, so the common
/// form, an id without escapes, is split here; the type is parsed once per
/// listing, and anything else goes to Cedar's parser.
fn stored_uid(text: &str, types: &mut HashMap<String, EntityTypeName>) -> Result<EntityUid, String> {
    let plain = text.strip_suffix('"').and_then(|rest| rest.split_once("::\""));
    match plain {
        Some((kind, id)) if !id.contains(['\\', '"']) => {
            let kind = match types.get(kind) {
                Some(kind) => kind.clone(),
                None => {
                    let parsed = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
                    types.insert(kind.to_owned(), parsed.clone());
                    parsed
                }
            };
            Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
        }
        _ => EntityUid::from_str(text).map_err(|e| e.to_string()),
    }
}

/// Candidates from a store held whole in memory, as the store would list them.
fn in_memory(store: &EntityStore, source: &Source, start: &str, chunk: usize) -> Vec<String> {
    let mut uids: Vec<String> = store
        .uids()
        .filter(|uid| match source {
            Source::OfType(kind) => uid.type_name().to_string() == *kind,
            Source::Below { parent, kind } => {
                uid.type_name().to_string() == *kind
                    && store.get(uid).is_some_and(|stored| {
                        stored
                            .parents()
                            .iter()
                            .any(|p| p.type_name().to_string() == parent.0 && p.id().unescaped() == parent.1)
                    })
            }
            Source::Listed(_) => false,
        })
        .map(ToString::to_string)
        .filter(|uid| uid.as_str() > start)
        .collect();
    uids.sort();
    uids.truncate(chunk);
    uids
}

fn unreadable(error: crate::store::StoreError) -> SearchError {
    Unavailable::Listing(error).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_uids_read_as_cedar_reads_them() {
        let mut types = HashMap::new();
        for text in [
            r#"Record::"obs-1""#,
            r#"App::Record::"x y""#,
            r#"Record::"with \"quotes\" and \\ backslash""#,
            r#"Record::"tab\tand é""#,
            r#"Record::"""#,
        ] {
            let cedar = EntityUid::from_str(text).unwrap();
            assert_eq!(stored_uid(text, &mut types).unwrap(), cedar, "{text}");
            assert_eq!(stored_uid(&cedar.to_string(), &mut types).unwrap(), cedar, "{text}");
        }
        assert!(stored_uid("not a uid", &mut types).is_err());
    }
}
