//! Writing a record's canonical form by hand, member by member.
//!
//! The chain hash is computed over exact bytes, so they must not depend on
//! how a serializer happens to order or escape things in some release: the
//! members and their escaping are spelled out here, once for each kind of
//! record (see the [chain documentation](super) for the format). Tests check
//! that `serde_json` produces the same bytes, so a line also reads back with
//! ordinary JSON tools.

use super::{ChainedChange, ChainedRecord};

/// The canonical form of a decision record up to and including `prev`,
/// without the closing brace.
pub(super) fn decision_prefix(record: &ChainedRecord) -> String {
    let entry = &record.entry;
    let mut out = Members::open(record.seq);
    out.string("decision_id", &entry.decision_id.hyphenated().to_string());
    out.string("at", &entry.at);
    out.string("principal", &entry.principal);
    out.string("action", &entry.action);
    out.string("resource", &entry.resource);
    out.strings("patients", &entry.patients);
    out.optional("purpose", entry.purpose.as_deref());
    out.string("decision", &entry.decision);
    out.string("outcome", &entry.outcome);
    out.strings("reasons", &entry.reasons);
    out.strings("obligations", &entry.obligations);
    out.strings("plugins", &entry.plugins);
    out.string("policy_hash", &entry.policy_hash);
    out.string("prev", &record.prev);
    out.0
}

/// The canonical form of a change record up to and including `prev`,
/// without the closing brace. `"type":"change"` follows `seq`: decision
/// records have no `type`, so logs written before change records existed
/// read and verify as they always did.
pub(super) fn change_prefix(record: &ChainedChange) -> String {
    let change = &record.change;
    let mut out = Members::open(record.seq);
    out.string("type", "change");
    out.string("change_id", &change.change_id.hyphenated().to_string());
    out.string("at", &change.at);
    out.string("actor", &change.actor);
    out.string("kind", &change.kind);
    out.string("subject", &change.subject);
    out.string("content_hash", &change.content_hash);
    out.strings("counts", &change.counts);
    out.optional("reason", change.reason.as_deref());
    out.string("prev", &record.prev);
    out.0
}

/// Appends `,"hash":"…"}` to a prefix, making the whole line.
pub(super) fn close_with_hash(mut prefix: String, hash: &str) -> String {
    prefix.push(',');
    push_key(&mut prefix, "hash");
    push_string(&mut prefix, hash);
    prefix.push('}');
    prefix
}

/// An object being written: `{"seq":N` and then `,"key":value` per member.
struct Members(String);

impl Members {
    fn open(seq: u64) -> Self {
        let mut out = String::with_capacity(512);
        out.push('{');
        push_key(&mut out, "seq");
        out.push_str(&seq.to_string());
        Self(out)
    }

    fn string(&mut self, key: &str, value: &str) {
        self.0.push(',');
        push_key(&mut self.0, key);
        push_string(&mut self.0, value);
    }

    fn optional(&mut self, key: &str, value: Option<&str>) {
        self.0.push(',');
        push_key(&mut self.0, key);
        match value {
            Some(value) => push_string(&mut self.0, value),
            None => self.0.push_str("null"),
        }
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        self.0.push(',');
        push_key(&mut self.0, key);
        self.0.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_string(&mut self.0, value);
        }
        self.0.push(']');
    }
}

/// `"key":`; keys are plain ASCII and need no escaping.
fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// A JSON string, escaped exactly as `serde_json` escapes it. Runs of
/// characters that need no escape (nearly all of them) are copied whole.
pub(in crate::audit) fn push_string(out: &mut String, value: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (at, c) in value.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{08}' => "\\b",
            '\u{0c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c < ' ' => "",
            _ => continue,
        };
        out.push_str(value.get(plain_from..at).unwrap_or_default());
        if escaped.is_empty() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push_str(escaped);
        }
        plain_from = at + c.len_utf8();
    }
    out.push_str(value.get(plain_from..).unwrap_or_default());
    out.push('"');
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| char::from_digit(u32::from(nibble), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(digit(byte >> 4));
        out.push(digit(byte & 0x0f));
    }
    out
}
