//! HTTP requests and the Cedar requests a `map-request` hook makes of them.

use serde_json::{Map, Value};

use crate::EntityUid;
use crate::bindings::wit;

/// An HTTP request seen by a proxy, for example Envoy's `ext_authz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, starting with `/`, without the query; as sent, so still
    /// percent-encoded.
    pub path: String,
    /// The query string without the leading `?`; empty when there is none.
    pub query: String,
    /// The headers, names in lower case. `authorization` is present only
    /// when the plugin was granted `authorization-header`.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// The value of the first header called `name` (compared without regard
    /// to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The query parameters in order, names and values percent-decoded
    /// (`+` is a space). A parameter without `=` has an empty value.
    pub fn query_params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect()
    }

    /// The percent-decoded value of the first query parameter called `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params().into_iter().find(|(param, _)| param == name).map(|(_, value)| value)
    }
}

impl From<wit::HttpRequest> for HttpRequest {
    fn from(request: wit::HttpRequest) -> Self {
        Self { method: request.method, path: request.path, query: request.query, headers: request.headers }
    }
}

/// Decodes `%XX` escapes and `+` of a URL query. Malformed escapes are kept
/// as they are; bytes that do not decode to UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&b| (b as char).to_digit(16));
                let low = bytes.get(i + 2).and_then(|&b| (b as char).to_digit(16));
                if let (Some(high), Some(low)) = (high, low) {
                    decoded.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                decoded.push(b'%');
            }
            _ => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A Cedar request made by a `map-request` hook. The host treats it as
/// untrusted input and validates it like any caller's request.
///
/// ```
/// use consentry_plugin_sdk::{CedarRequest, EntityUid};
///
/// let request = CedarRequest::new(
///     EntityUid::new("Practitioner", "dr-weber"),
///     EntityUid::new("Action", "read"),
///     EntityUid::new("Record", "obs-1"),
/// )
/// .with_context("purpose", "TREAT");
/// assert_eq!(request.context["purpose"], "TREAT");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CedarRequest {
    /// Who is asking.
    pub principal: EntityUid,
    /// What they want to do, such as `Action::"read"`.
    pub action: EntityUid,
    /// What they want to do it to.
    pub resource: EntityUid,
    /// The Cedar context; it must not contain `now`, which the server sets.
    pub context: Map<String, Value>,
    /// Request entities, in Cedar's entity JSON format.
    pub entities: Vec<Value>,
}

impl CedarRequest {
    /// A request with an empty context and no entities.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Self { principal, action, resource, context: Map::new(), entities: Vec::new() }
    }

    /// Adds the context attribute `key`.
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Adds an entity, in Cedar's entity JSON format.
    #[must_use]
    pub fn with_entity(mut self, entity: Value) -> Self {
        self.entities.push(entity);
        self
    }

    /// Converts to the host's form, serialising the JSON.
    pub(crate) fn into_wit(self) -> wit::CedarRequest {
        wit::CedarRequest {
            principal: self.principal.into(),
            action: self.action.into(),
            resource: self.resource.into(),
            context: crate::json::to_string(&Value::Object(self.context)),
            entities: crate::json::to_string(&Value::Array(self.entities)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(query: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: "/fhir/Observation".into(),
            query: query.into(),
            headers: vec![("x-principal".into(), "Practitioner/dr-weber".into())],
        }
    }

    #[test]
    fn reads_headers() {
        assert_eq!(http("").header("X-Principal"), Some("Practitioner/dr-weber"));
        assert_eq!(http("").header("x-purpose-of-use"), None);
    }

    #[test]
    fn decodes_queries() {
        let request = http("subject=Patient%2F123&code=a+b&flag&_count=10&bad=%zz%4");
        assert_eq!(request.query_param("subject").as_deref(), Some("Patient/123"));
        assert_eq!(request.query_param("code").as_deref(), Some("a b"));
        assert_eq!(request.query_param("flag").as_deref(), Some(""));
        assert_eq!(request.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(http("").query_params(), vec![]);
        assert_eq!(percent_decode("caf%C3%A9%FF"), "café\u{FFFD}");
    }

    #[test]
    fn serialises_cedar_requests() {
        let uid = EntityUid::new("Patient", "p");
        let request =
            CedarRequest::new(uid.clone(), uid.clone(), uid).with_context("purpose", "TREAT").into_wit();
        assert_eq!(request.context, r#"{"purpose":"TREAT"}"#);
        assert_eq!(request.entities, "[]");
    }
}
