//! Page tokens: where the next page starts, bound to the query they came from.
//!
//! A token is a cursor on uid order, the last result a page held, and a
//! hash of everything in the request but the token: the spec asks that the
//! rest of a request stay identical from page to page (§8.3), and a token
//! from another query would silently skip or repeat results, so it is
//! refused with 400 naming `page.token`. A token grants nothing: whatever
//! it says, every result of the next page is decided again.

use consentry_engine::RequestError;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex digits of the query's hash a token carries.
const BOUND: usize = 16;

/// The hash of a query (its body without the token) that tokens carry.
pub fn binding(query: &Value) -> String {
    let mut text = String::new();
    canonical(query, &mut text);
    hex(&Sha256::digest(text.as_bytes())).chars().take(BOUND).collect()
}

/// The token of the page after `last` (a uid in Cedar text).
pub fn seal(binding: &str, last: &str) -> String {
    format!("{binding}.{}", hex(last.as_bytes()))
}

/// The uid a token continues after, if it was made for this query.
pub fn open(token: &str, binding: &str) -> Result<String, RequestError> {
    let refused = |why: &str| RequestError::malformed("page.token", why.to_owned());
    let (bound, cursor) = token.split_once('.').ok_or_else(|| refused("not a token this server gave"))?;
    if bound != binding {
        return Err(refused(
            "the token belongs to another query: every part of the request but the token must stay as it was",
        ));
    }
    let bytes = unhex(cursor).ok_or_else(|| refused("not a token this server gave"))?;
    String::from_utf8(bytes).map_err(|_| refused("not a token this server gave"))
}

/// JSON with object keys in byte order, so that the same query hashes the
/// same however its keys were ordered.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(key) {
                    canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_opens_only_for_its_own_query() {
        let query = binding(&json!({"a": 1, "b": [true, {"y": 2, "x": 1}]}));
        let same = binding(&json!({"b": [true, {"x": 1, "y": 2}], "a": 1}));
        assert_eq!(query, same, "key order does not matter");
        let token = seal(&query, r#"Record::"obs-1""#);
        assert_eq!(open(&token, &query).unwrap(), r#"Record::"obs-1""#);
        let other = binding(&json!({"a": 2}));
        let refused = open(&token, &other).unwrap_err();
        assert_eq!(refused.field, "page.token");
        for forged in ["", "abc", "x.zz", &format!("{query}.f"), &format!("{query}.ff")] {
            assert_eq!(open(forged, &query).unwrap_err().field, "page.token", "{forged}");
        }
    }
}
