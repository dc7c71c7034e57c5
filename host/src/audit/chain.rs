//! Hash chaining, so that editing, deleting or reordering audit records is
//! evident.
//!
//! An audit log that anyone with write access to the disk can quietly edit
//! proves nothing. Each record therefore carries its sequence number, the hash
//! of the record before it and its own hash: changing a record changes its
//! hash, which no longer matches the content (or, if the attacker recomputes
//! it, no longer matches the next record's `prev`); deleting or reordering
//! records breaks the run of sequence numbers. The chain runs across rotated
//! files, so removing a whole file in the middle is caught too.
//!
//! What a bare chain cannot show is truncation of the *end* of the log, or a
//! rewrite of everything from some record on by someone who recomputes every
//! hash after it; that needs the head (`seq` and `hash` of the latest record)
//! to be anchored somewhere the attacker cannot write ([`super::anchor`]).
//!
//! # The hash
//!
//! Every record is stored as one line, its *canonical form*: compact JSON
//! (no whitespace) with the members in this order:
//!
//! ```text
//! {"seq":…,"decision_id":…,"at":…,"principal":…,"action":…,"resource":…,"patients":[…],
//!  "purpose":…,"decision":…,"outcome":…,"reasons":[…],"obligations":[…],"plugins":[…],
//!  "policy_hash":…,"prev":…,"hash":…}
//! ```
//!
//! `seq` is a decimal integer, `decision_id` a lowercase hyphenated UUID,
//! `purpose` a string or `null`, everything else strings or arrays of
//! strings. Strings are escaped exactly as `serde_json` does: `\"`, `\\`,
//! `\b`, `\f`, `\n`, `\r`, `\t`, other characters below U+0020 as `\u00xx`
//! with lowercase hex, and every other character as itself in UTF-8.
//!
//! `hash` is the lowercase hex SHA-256 of the canonical form *without* the
//! `hash` member, that is of the line with its trailing `,"hash":"…"}`
//! replaced by `}`. `prev` is the previous record's `hash`, or [`GENESIS`]
//! (64 zeros) for the record with `seq` 0.
//!
//! The format has no floats and no maps, so parsing a line and writing it out
//! again gives back the same bytes; the [`Verifier`] insists on that, so a
//! line that parses to an intact record but was reformatted, or had a member
//! added, is reported as well.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::anchor::{Anchor, MissingAnchor, Verified};
use super::record::DecisionEntry;

/// The `prev` of the first record: 64 zeros, no record's hash.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the audit log: a decision with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedRecord {
    /// The record's position in the log: 0-based, consecutive across rotated
    /// files.
    pub seq: u64,
    /// The decision.
    #[serde(flatten)]
    pub entry: DecisionEntry,
    /// The lowercase hex SHA-256 `hash` of the previous record; [`GENESIS`]
    /// for `seq` 0.
    pub prev: String,
    /// The lowercase hex SHA-256 of this record's canonical form without the
    /// `hash` member (see the [module documentation](self)).
    pub hash: String,
}

/// Where the next record attaches to the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The `seq` the next record gets.
    pub next_seq: u64,
    /// The `hash` of the latest record: the next record's `prev`.
    pub last_hash: String,
}

impl ChainHead {
    /// The head of an empty log: the next record is `seq` 0 with `prev`
    /// [`GENESIS`].
    pub fn genesis() -> Self {
        Self { next_seq: 0, last_hash: GENESIS.to_owned() }
    }

    /// Moves the head past `record`.
    fn advance(&mut self, record: &ChainedRecord) {
        // 2^64 records cannot be reached; wrapping only keeps this panic-free.
        self.next_seq = record.seq.wrapping_add(1);
        self.last_hash.clone_from(&record.hash);
    }
}

/// Attaches `entry` to the chain at `head`, computing its hash, and moves
/// `head` past it. Returns the record and its canonical line, built once
/// for both the hash and the line.
pub fn chain(entry: DecisionEntry, head: &mut ChainHead) -> (ChainedRecord, String) {
    let mut record =
        ChainedRecord { seq: head.next_seq, entry, prev: head.last_hash.clone(), hash: String::new() };
    let mut line = canonical_prefix(&record);
    line.push('}');
    record.hash = hex(&Sha256::digest(line.as_bytes()));
    line.pop();
    line.push(',');
    push_key(&mut line, "hash");
    push_string(&mut line, &record.hash);
    line.push('}');
    head.advance(&record);
    (record, line)
}

/// The hash `record` should carry, recomputed from its `seq`, `entry` and
/// `prev` (its `hash` field is ignored).
pub fn record_hash(record: &ChainedRecord) -> String {
    let mut unhashed = canonical_prefix(record);
    unhashed.push('}');
    hex(&Sha256::digest(unhashed.as_bytes()))
}

/// The canonical form of `record`, as stored on one line (without the line
/// break). It carries `record.hash` as it is, right or wrong.
pub fn canonical_line(record: &ChainedRecord) -> String {
    let mut line = canonical_prefix(record);
    line.push(',');
    push_key(&mut line, "hash");
    push_string(&mut line, &record.hash);
    line.push('}');
    line
}

/// The canonical form up to and including `prev`, without the closing brace.
fn canonical_prefix(record: &ChainedRecord) -> String {
    let entry = &record.entry;
    let mut out = String::with_capacity(512);
    out.push('{');
    push_key(&mut out, "seq");
    out.push_str(&record.seq.to_string());
    out.push(',');
    push_key(&mut out, "decision_id");
    push_string(&mut out, &entry.decision_id.hyphenated().to_string());
    out.push(',');
    push_key(&mut out, "at");
    push_string(&mut out, &entry.at);
    out.push(',');
    push_key(&mut out, "principal");
    push_string(&mut out, &entry.principal);
    out.push(',');
    push_key(&mut out, "action");
    push_string(&mut out, &entry.action);
    out.push(',');
    push_key(&mut out, "resource");
    push_string(&mut out, &entry.resource);
    out.push(',');
    push_key(&mut out, "patients");
    push_strings(&mut out, &entry.patients);
    out.push(',');
    push_key(&mut out, "purpose");
    match &entry.purpose {
        Some(purpose) => push_string(&mut out, purpose),
        None => out.push_str("null"),
    }
    out.push(',');
    push_key(&mut out, "decision");
    push_string(&mut out, &entry.decision);
    out.push(',');
    push_key(&mut out, "outcome");
    push_string(&mut out, &entry.outcome);
    out.push(',');
    push_key(&mut out, "reasons");
    push_strings(&mut out, &entry.reasons);
    out.push(',');
    push_key(&mut out, "obligations");
    push_strings(&mut out, &entry.obligations);
    out.push(',');
    push_key(&mut out, "plugins");
    push_strings(&mut out, &entry.plugins);
    out.push(',');
    push_key(&mut out, "policy_hash");
    push_string(&mut out, &entry.policy_hash);
    out.push(',');
    push_key(&mut out, "prev");
    push_string(&mut out, &record.prev);
    out
}

/// `"key":`; keys are plain ASCII and need no escaping.
fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// A JSON array of strings.
fn push_strings(out: &mut String, values: &[String]) {
    out.push('[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(out, value);
    }
    out.push(']');
}

/// A JSON string, escaped exactly as `serde_json` escapes it. Runs of
/// characters that need no escape (nearly all of them) are copied whole.
pub(super) fn push_string(out: &mut String, value: &str) {
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
fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| char::from_digit(u32::from(nibble), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(digit(byte >> 4));
        out.push(digit(byte & 0x0f));
    }
    out
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record at `{file}` line {line}{}: {reason}", seq_note(*.seq))]
pub struct ChainBreak {
    /// The file holding the offending line.
    pub file: String,
    /// The offending line, 1-based within `file`.
    pub line: usize,
    /// The `seq` the offending line claims, when it has one.
    pub seq: Option<u64>,
    /// What is wrong with it.
    pub reason: String,
}

/// ` (seq N)`, or nothing.
fn seq_note(seq: Option<u64>) -> String {
    seq.map(|seq| format!(" (seq {seq})")).unwrap_or_default()
}

/// Checks a log line by line, in order, across files.
///
/// Each line is checked against the record before it, so the first line
/// reported is where the log stops being trustworthy: an edited record is
/// reported itself, a deleted one at the line that follows the gap, two
/// swapped ones at the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// Where the next record must attach.
    head: ChainHead,
    /// How many records have been checked and found intact.
    records: u64,
    /// Records noted outside the log, which must be in it unchanged.
    anchors: Vec<Anchor>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier expecting the first record of a log (`seq` 0, `prev`
    /// [`GENESIS`]).
    pub fn new() -> Self {
        Self::anchored(Vec::new())
    }

    /// A verifier that also checks `anchors`: the record with each anchor's
    /// `seq` must carry its hash, and [`Verifier::finish`] fails if one lies
    /// past the end of the log.
    pub fn anchored(anchors: Vec<Anchor>) -> Self {
        Self { head: ChainHead::genesis(), records: 0, anchors }
    }

    /// Checks `line` (without its line break), line `line_no` (1-based) of
    /// `file`, as the next record of the chain. On success the verifier moves
    /// past it; on a break it stays where it was.
    pub fn check_line(&mut self, file: &str, line_no: usize, line: &str) -> Result<(), ChainBreak> {
        let fail = |seq: Option<u64>, reason: String| ChainBreak {
            file: file.to_owned(),
            line: line_no,
            seq,
            reason,
        };
        let record: ChainedRecord = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(error) => return Err(fail(claimed_seq(line), parse_reason(&error))),
        };
        let seq = Some(record.seq);
        if record.seq != self.head.next_seq {
            return Err(fail(
                seq,
                format!("`seq` out of order: expected {}, found {}", self.head.next_seq, record.seq),
            ));
        }
        if record.prev != self.head.last_hash {
            let previous = if record.seq == 0 { "the genesis hash" } else { "the previous record's hash" };
            return Err(fail(
                seq,
                format!(
                    "`prev` does not match {previous}: expected `{}`, found `{}`",
                    self.head.last_hash, record.prev
                ),
            ));
        }
        let expected = record_hash(&record);
        if record.hash != expected {
            return Err(fail(
                seq,
                format!(
                    "`hash` does not match the record's content (it was edited): expected `{expected}`, \
                     found `{}`",
                    record.hash
                ),
            ));
        }
        if canonical_line(&record) != line {
            return Err(fail(
                seq,
                "the line is not in canonical form (a member was added, reordered, re-escaped or \
                 reformatted)"
                    .to_owned(),
            ));
        }
        if let Some(anchor) = self.anchors.iter().find(|a| a.seq == record.seq && a.hash != record.hash) {
            return Err(fail(seq, anchor.mismatch(&record.hash)));
        }
        self.head.advance(&record);
        self.records = self.records.wrapping_add(1);
        Ok(())
    }

    /// Ends a check of a whole log: its records and head, unless an anchor
    /// names a record past its end (the lowest such anchor is reported).
    pub fn finish(self) -> Result<Verified, MissingAnchor> {
        let next_seq = self.head.next_seq;
        if let Some(anchor) = self.anchors.into_iter().filter(|a| a.seq >= next_seq).min_by_key(|a| a.seq) {
            return Err(MissingAnchor { anchor, records: self.records });
        }
        let head = next_seq.checked_sub(1).map(|seq| Anchor { seq, hash: self.head.last_hash });
        Ok(Verified { records: self.records, head })
    }
}

/// The `seq` a line that is not a valid record still claims, for the report.
fn claimed_seq(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get("seq")?.as_u64()
}

/// Why a line did not parse as a record, without `serde_json`'s "line 1"
/// (each record is one line; the column is kept).
fn parse_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    match error.classify() {
        serde_json::error::Category::Data => {
            format!("not a record: {message} (column {})", error.column())
        }
        serde_json::error::Category::Eof => format!("not JSON: the line ends early (truncated): {message}"),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            format!("not JSON: {message} (column {})", error.column())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> DecisionEntry {
        DecisionEntry {
            decision_id: uuid::Uuid::from_u128(u128::from(n) + 0xABCD_0000),
            at: format!("2026-05-01T10:00:{:02}Z", n % 60),
            principal: "Practitioner::\"dr-weber\"".to_owned(),
            action: "Action::\"read\"".to_owned(),
            resource: format!("Observation::\"obs-{n}\""),
            patients: vec!["p-1".to_owned(), format!("p-{n}")],
            purpose: if n.is_multiple_of(2) { Some("TREAT".to_owned()) } else { None },
            decision: "Allow".to_owned(),
            outcome: "allow".to_owned(),
            reasons: vec!["consent/c-100/v2/root".to_owned()],
            obligations: vec![],
            plugins: vec!["labeler/enrich: ok".to_owned()],
            policy_hash: "sha256:abc".to_owned(),
        }
    }

    fn lines(n: u32) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (0..n).map(|i| chain(entry(i), &mut head).1).collect()
    }

    fn verify(lines: &[String]) -> Result<u64, ChainBreak> {
        let mut verifier = Verifier::new();
        for (i, line) in lines.iter().enumerate() {
            verifier.check_line("log", i + 1, line)?;
        }
        Ok(verifier.finish().expect("without anchors nothing is missing").records)
    }

    #[test]
    fn genesis_record() {
        let mut head = ChainHead::genesis();
        let record = chain(entry(0), &mut head).0;
        assert_eq!(record.seq, 0);
        assert_eq!(record.prev, GENESIS);
        assert_eq!(GENESIS.len(), 64);
        assert!(GENESIS.bytes().all(|b| b == b'0'));
        assert_eq!(head, ChainHead { next_seq: 1, last_hash: record.hash.clone() });
        let next = chain(entry(1), &mut head).0;
        assert_eq!((next.seq, next.prev.as_str()), (1, record.hash.as_str()));
    }

    #[test]
    fn hash_is_sha256_of_the_line_without_hash() {
        let mut head = ChainHead::genesis();
        let record = chain(entry(3), &mut head).0;
        let line = canonical_line(&record);
        let suffix = format!(",\"hash\":\"{}\"}}", record.hash);
        let unhashed = format!("{}}}", line.strip_suffix(&suffix).unwrap());
        assert_eq!(record.hash, hex(&Sha256::digest(unhashed.as_bytes())));
        assert_eq!(record.hash.len(), 64);
    }

    #[test]
    fn canonical_form_is_serde_json_compact_and_roundtrips() {
        let mut nasty = entry(2);
        nasty.principal = (0u32..0x80).filter_map(char::from_u32).collect::<String>()
            + "\u{7f}\u{80}é\u{2028}\u{2029}😀\"\\/";
        nasty.patients = vec![String::new(), "\u{0}".to_owned()];
        nasty.obligations = vec!["a\"b".to_owned()];
        for e in [entry(0), entry(1), nasty] {
            let mut head = ChainHead::genesis();
            let (record, line) = chain(e, &mut head);
            assert_eq!(canonical_line(&record), line);
            assert_eq!(line, serde_json::to_string(&record).unwrap());
            let parsed: ChainedRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed, record);
            assert_eq!(canonical_line(&parsed), line);
            assert_eq!(record_hash(&parsed), record.hash);
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&lines(10)), Ok(10));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn an_edited_record_is_reported_itself() {
        let mut log = lines(10);
        log[5] = log[5].replace("obs-5", "obs-6");
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (6, Some(5)));
        assert!(err.reason.starts_with("`hash` does not match the record's content"), "{err}");
    }

    #[test]
    fn a_recomputed_hash_is_caught_at_the_next_record() {
        let mut log = lines(10);
        let mut record: ChainedRecord = serde_json::from_str(&log[5]).unwrap();
        record.entry.decision = "Deny".to_owned();
        record.hash = record_hash(&record);
        log[5] = canonical_line(&record);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (7, Some(6)));
        assert!(err.reason.starts_with("`prev` does not match the previous record's hash"), "{err}");
    }

    #[test]
    fn deleted_and_swapped_records_break_the_sequence() {
        let mut deleted = lines(10);
        deleted.remove(4);
        let err = verify(&deleted).unwrap_err();
        assert_eq!((err.line, err.seq), (5, Some(5)));
        assert_eq!(err.reason, "`seq` out of order: expected 4, found 5");

        let mut swapped = lines(10);
        swapped.swap(4, 5);
        let err = verify(&swapped).unwrap_err();
        assert_eq!((err.line, err.seq), (5, Some(5)));
        assert_eq!(err.reason, "`seq` out of order: expected 4, found 5");
    }

    #[test]
    fn a_wrong_genesis_is_reported() {
        let mut log = lines(2);
        log[0] = log[0].replacen(GENESIS, &"1".repeat(64), 1);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (1, Some(0)));
        assert!(err.reason.starts_with("`prev` does not match the genesis hash"), "{err}");
    }

    #[test]
    fn malformed_lines_are_named() {
        let mut log = lines(3);
        log[1] = log[1].replace("\"principal\"", "\"principle\"");
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (2, Some(1)));
        assert!(err.reason.starts_with("not a record: missing field `principal`"), "{err}");

        let mut log = lines(3);
        log[1].truncate(40);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (2, None));
        assert!(err.reason.starts_with("not JSON: the line ends early"), "{err}");

        let err = verify(&["{]".to_owned()]).unwrap_err();
        assert!(err.reason.starts_with("not JSON: "), "{err}");
        assert!(!err.reason.contains("line 1"), "{err}");
        assert_eq!(
            err.to_string(),
            format!("record at `log` line 1: {}", err.reason),
            "the display names the file and line"
        );
    }

    #[test]
    fn added_members_and_reformatting_are_reported() {
        let mut log = lines(3);
        log[1] = log[1].replacen('{', "{\"extra\":\"x\",", 1);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (2, Some(1)));
        assert!(err.reason.starts_with("the line is not in canonical form"), "{err}");
        assert!(err.to_string().starts_with("record at `log` line 2 (seq 1): "), "{err}");

        let mut log = lines(3);
        log[2] = log[2].replacen(",", ", ", 1);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (3, Some(2)));

        let mut log = lines(3);
        let upper = entry(1).decision_id.hyphenated().to_string().to_uppercase();
        log[1] = log[1].replace(&entry(1).decision_id.to_string(), &upper);
        let err = verify(&log).unwrap_err();
        assert_eq!((err.line, err.seq), (2, Some(1)));
    }

    #[test]
    fn a_break_leaves_the_verifier_in_place() {
        let log = lines(3);
        let mut verifier = Verifier::new();
        verifier.check_line("log", 1, &log[0]).unwrap();
        assert!(verifier.check_line("log", 2, &log[2]).is_err());
        verifier.check_line("log", 2, &log[1]).unwrap();
        verifier.check_line("log", 3, &log[2]).unwrap();
        let last: ChainedRecord = serde_json::from_str(&log[2]).unwrap();
        let verified = verifier.finish().unwrap();
        assert_eq!(verified.records, 3);
        assert_eq!(verified.head, Some(Anchor { seq: 2, hash: last.hash }));
    }
}
