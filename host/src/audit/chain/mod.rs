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
//! Decisions and changes to the rules share one chain: a change record sits
//! between the decisions made before and after it, so which rules were in
//! force for a decision is evident from the log itself, and neither kind can
//! be removed without breaking the run.
//!
//! # The hash
//!
//! Every record is stored as one line, its *canonical form*: compact JSON
//! (no whitespace) with the members in this order, for a decision:
//!
//! ```text
//! {"seq":…,"decision_id":…,"at":…,"principal":…,"action":…,"resource":…,"patients":[…],
//!  "purpose":…,"decision":…,"outcome":…,"reasons":[…],"obligations":[…],"plugins":[…],
//!  "policy_hash":…,"prev":…,"hash":…}
//! ```
//!
//! and for a change to the rules:
//!
//! ```text
//! {"seq":…,"type":"change","change_id":…,"at":…,"actor":…,"kind":…,"subject":…,
//!  "content_hash":…,"counts":[…],"reason":…,"prev":…,"hash":…}
//! ```
//!
//! A decision line has no `type` member (logs from before change records
//! existed verify unchanged); a line with a `"type":"change"` member is a
//! change. `seq` is a decimal integer, `decision_id` and `change_id`
//! lowercase hyphenated UUIDs, `purpose` and `reason` a string or `null`,
//! everything else strings or arrays of strings. Strings are escaped exactly
//! as `serde_json` does: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! characters below U+0020 as `\u00xx` with lowercase hex, and every other
//! character as itself in UTF-8.
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

mod canonical;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::anchor::{Anchor, MissingAnchor, Retired, Verified};
use super::change::ChangeEntry;
use super::record::DecisionEntry;
pub(super) use canonical::push_string;
use canonical::{change_prefix, close_with_hash, decision_prefix, hex};

/// The `prev` of the first record: 64 zeros, no record's hash.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that marks a change record's line. In valid JSON these bytes
/// can only be a member named `type` (a quote inside a string is escaped),
/// and decision records have none, so finding them is enough to tell the
/// kinds apart without parsing the line.
const CHANGE_MARK: &str = "\"type\":\"change\"";

/// What a record of the log is about, as the writer queues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEntry {
    /// A decision.
    Decision(DecisionEntry),
    /// A change to the rules decisions are made under.
    Change(ChangeEntry),
}

impl From<DecisionEntry> for AuditEntry {
    fn from(entry: DecisionEntry) -> Self {
        Self::Decision(entry)
    }
}

impl From<ChangeEntry> for AuditEntry {
    fn from(change: ChangeEntry) -> Self {
        Self::Change(change)
    }
}

/// One decision line of the audit log: a decision with its place in the
/// chain.
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

/// One change line of the audit log: a change to the rules with its place in
/// the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedChange {
    /// The record's position in the log, in the one sequence decisions and
    /// changes share.
    pub seq: u64,
    /// Always [`RecordType::Change`]: what tells the line from a decision's.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The change.
    #[serde(flatten)]
    pub change: ChangeEntry,
    /// The `hash` of the previous record; [`GENESIS`] for `seq` 0.
    pub prev: String,
    /// The lowercase hex SHA-256 of this record's canonical form without the
    /// `hash` member.
    pub hash: String,
}

/// The `type` member of a line that has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordType {
    /// A change to the rules.
    #[serde(rename = "change")]
    Change,
}

/// One line of the audit log, of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainLine {
    /// A decision.
    Decision(ChainedRecord),
    /// A change to the rules.
    Change(ChainedChange),
}

impl ChainLine {
    /// Parses a line of either kind: one with a `"type":"change"` member as a
    /// change, any other as a decision.
    pub fn parse(line: &str) -> serde_json::Result<Self> {
        if is_change_line(line) {
            serde_json::from_str(line).map(Self::Change)
        } else {
            serde_json::from_str(line).map(Self::Decision)
        }
    }

    /// The record's position in the log.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Decision(record) => record.seq,
            Self::Change(record) => record.seq,
        }
    }

    /// When the decision or the change was made.
    pub fn at(&self) -> &str {
        match self {
            Self::Decision(record) => &record.entry.at,
            Self::Change(record) => &record.change.at,
        }
    }

    /// The hash of the previous record.
    pub fn prev(&self) -> &str {
        match self {
            Self::Decision(record) => &record.prev,
            Self::Change(record) => &record.prev,
        }
    }
}

/// Whether `line` is a change record's (see [`CHANGE_MARK`]), told without
/// parsing it.
pub fn is_change_line(line: &str) -> bool {
    line.contains(CHANGE_MARK)
}

/// A record as stored: its canonical form can be written and its stored
/// hash read.
pub trait Canonical {
    /// The canonical form up to and including `prev`, without the closing
    /// brace.
    fn canonical_prefix(&self) -> String;
    /// The `hash` the record carries, right or wrong.
    fn stored_hash(&self) -> &str;
}

impl Canonical for ChainedRecord {
    fn canonical_prefix(&self) -> String {
        decision_prefix(self)
    }

    fn stored_hash(&self) -> &str {
        &self.hash
    }
}

impl Canonical for ChainedChange {
    fn canonical_prefix(&self) -> String {
        change_prefix(self)
    }

    fn stored_hash(&self) -> &str {
        &self.hash
    }
}

impl Canonical for ChainLine {
    fn canonical_prefix(&self) -> String {
        match self {
            Self::Decision(record) => record.canonical_prefix(),
            Self::Change(record) => record.canonical_prefix(),
        }
    }

    fn stored_hash(&self) -> &str {
        match self {
            Self::Decision(record) => &record.hash,
            Self::Change(record) => &record.hash,
        }
    }
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

    /// The head after `record`, where the chain continues from it.
    pub fn after(record: &ChainLine) -> Self {
        // 2^64 records cannot be reached; wrapping only keeps this panic-free.
        Self { next_seq: record.seq().wrapping_add(1), last_hash: record.stored_hash().to_owned() }
    }
}

/// Attaches `entry` to the chain at `head`, computing its hash, and moves
/// `head` past it. Returns the record and its canonical line, built once
/// for both the hash and the line.
pub fn chain(entry: AuditEntry, head: &mut ChainHead) -> (ChainLine, String) {
    let (seq, prev) = (head.next_seq, head.last_hash.clone());
    let mut record = match entry {
        AuditEntry::Decision(entry) => {
            ChainLine::Decision(ChainedRecord { seq, entry, prev, hash: String::new() })
        }
        AuditEntry::Change(change) => ChainLine::Change(ChainedChange {
            seq,
            record_type: RecordType::Change,
            change,
            prev,
            hash: String::new(),
        }),
    };
    let mut unhashed = record.canonical_prefix();
    unhashed.push('}');
    let hash = hex(&Sha256::digest(unhashed.as_bytes()));
    unhashed.pop();
    let line = close_with_hash(unhashed, &hash);
    match &mut record {
        ChainLine::Decision(decision) => decision.hash.clone_from(&hash),
        ChainLine::Change(change) => change.hash.clone_from(&hash),
    }
    *head = ChainHead { next_seq: seq.wrapping_add(1), last_hash: hash };
    (record, line)
}

/// The hash `record` should carry, recomputed from its content and `prev`
/// (its `hash` field is ignored).
pub fn record_hash(record: &impl Canonical) -> String {
    let mut unhashed = record.canonical_prefix();
    unhashed.push('}');
    hex(&Sha256::digest(unhashed.as_bytes()))
}

/// The canonical form of `record`, as stored on one line (without the line
/// break). It carries the record's `hash` as it is, right or wrong.
pub fn canonical_line(record: &impl Canonical) -> String {
    close_with_hash(record.canonical_prefix(), record.stored_hash())
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
    /// The records retired from the log's beginning, if it starts past 0.
    retired: Option<Retired>,
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
        Self { head: ChainHead::genesis(), records: 0, anchors, retired: None }
    }

    /// Starts the check at `seq` rather than 0, for a log whose files before
    /// it were retired: the first record must follow `last_hash`, the last
    /// retired record's, which anchor `covered_by` vouched for when they were
    /// deleted. An anchor given for the last retired record is checked
    /// against `last_hash`; older ones cannot be checked and are counted.
    pub fn resume(&mut self, seq: u64, last_hash: String, covered_by: String) -> Result<(), String> {
        let last = seq.saturating_sub(1);
        if let Some(anchor) = self.anchors.iter().find(|a| a.seq == last && a.hash != last_hash) {
            return Err(format!("the retired record {}", anchor.mismatch(&last_hash)));
        }
        let unchecked = self.anchors.iter().filter(|a| a.seq < last).count();
        self.retired = Some(Retired { before_seq: seq, covered_by, unchecked_anchors: unchecked });
        self.head = ChainHead { next_seq: seq, last_hash };
        Ok(())
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
        let record = match ChainLine::parse(line) {
            Ok(record) => record,
            Err(error) => return Err(fail(claimed_seq(line), parse_reason(&error))),
        };
        let (seq, hash) = (record.seq(), record.stored_hash());
        if seq != self.head.next_seq {
            return Err(fail(
                Some(seq),
                format!("`seq` out of order: expected {}, found {seq}", self.head.next_seq),
            ));
        }
        if record.prev() != self.head.last_hash {
            let previous = if seq == 0 { "the genesis hash" } else { "the previous record's hash" };
            return Err(fail(
                Some(seq),
                format!(
                    "`prev` does not match {previous}: expected `{}`, found `{}`",
                    self.head.last_hash,
                    record.prev()
                ),
            ));
        }
        let expected = record_hash(&record);
        if hash != expected {
            return Err(fail(
                Some(seq),
                format!(
                    "`hash` does not match the record's content (it was edited): expected `{expected}`, \
                     found `{hash}`"
                ),
            ));
        }
        if canonical_line(&record) != line {
            return Err(fail(
                Some(seq),
                "the line is not in canonical form (a member was added, reordered, re-escaped or \
                 reformatted)"
                    .to_owned(),
            ));
        }
        if let Some(anchor) = self.anchors.iter().find(|a| a.seq == seq && a.hash != hash) {
            return Err(fail(Some(seq), anchor.mismatch(hash)));
        }
        self.head = ChainHead::after(&record);
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
        Ok(Verified { records: self.records, head, retired: self.retired })
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
mod tests;
