//! Anchors: a record's `seq` and `hash`, noted outside the log.
//!
//! The hash chain shows a record edited, deleted or moved *inside* the log,
//! but two changes leave a chain that is intact in itself: records cut from
//! its end, and everything from some record on rewritten with every hash
//! recomputed. What shows them is a head noted earlier somewhere the
//! sidecar cannot write (a ticket, a write-once bucket, another team's
//! system). `consentry audit verify` prints the head of an intact log as an
//! anchor, `SEQ:HASH`, and checks the anchors it is given: each must still
//! name a record of the log, with the same hash.

use std::fmt;
use std::str::FromStr;

/// A record's place in the chain as noted outside the log: `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The record's `seq`.
    pub seq: u64,
    /// The record's `hash`: 64 lowercase hex digits.
    pub hash: String,
}

impl Anchor {
    /// Why a record with `seq` [`Anchor::seq`] but hash `found` fails this
    /// anchor.
    pub(crate) fn mismatch(&self, found: &str) -> String {
        format!(
            "`hash` is `{found}`, but anchor `{self}` noted `{}`: the log was rewritten at or before this record",
            self.hash
        )
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Why a string is not an anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorParseError {
    /// No `:` between the two parts.
    #[error("an anchor is `SEQ:HASH`, as `audit verify` prints it; `{0}` has no `:`")]
    NoSeparator(String),
    /// The part before `:` is not a record number.
    #[error("`{0}` is not a record's `seq` (a whole number)")]
    Seq(String),
    /// The part after `:` is not a SHA-256 in lowercase hex.
    #[error("`{0}` is not a record's `hash` (64 lowercase hex digits)")]
    Hash(String),
}

impl FromStr for Anchor {
    type Err = AnchorParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (seq, hash) =
            text.split_once(':').ok_or_else(|| AnchorParseError::NoSeparator(text.to_owned()))?;
        let seq = seq.parse().map_err(|_| AnchorParseError::Seq(seq.to_owned()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(AnchorParseError::Hash(hash.to_owned()));
        }
        Ok(Self { seq, hash: hash.to_owned() })
    }
}

/// An anchor naming a record past the end of the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("anchor `{anchor}` names seq {}, but the log {}: records were removed from its end", anchor.seq, ends(*.records))]
pub struct MissingAnchor {
    /// The first anchor past the end.
    pub anchor: Anchor,
    /// How many records the log holds.
    pub records: u64,
}

/// `ends at seq N`, or `is empty`.
fn ends(records: u64) -> String {
    match records.checked_sub(1) {
        Some(last) => format!("ends at seq {last}"),
        None => "is empty".to_owned(),
    }
}

/// What checking a whole log found: how many records, and its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How many records the log holds, all intact.
    pub records: u64,
    /// The latest record's anchor; `None` for an empty log.
    pub head: Option<Anchor>,
    /// The records retired from the log's beginning, if any were.
    pub retired: Option<Retired>,
}

/// Records deleted from a log's beginning by retention, which `verify`
/// reports rather than passing over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The first `seq` kept: records 0 up to it were retired.
    pub before_seq: u64,
    /// The anchor that covered them when they were deleted, `SEQ:HASH`.
    pub covered_by: String,
    /// How many anchors given fall among the retired records, where they
    /// can no longer be checked.
    pub unchecked_anchors: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{ChainHead, ChainedRecord, Verifier, chain};
    use crate::audit::record::fixtures::read_by_weber;

    const HASH: &str = "3f1a0c7e9b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

    #[test]
    fn an_anchor_reads_back_as_printed() {
        let anchor: Anchor = format!("41:{HASH}").parse().unwrap();
        assert_eq!(anchor, Anchor { seq: 41, hash: HASH.to_owned() });
        assert_eq!(anchor.to_string(), format!("41:{HASH}"));
    }

    #[test]
    fn malformed_anchors_name_the_bad_part() {
        assert_eq!("41".parse::<Anchor>(), Err(AnchorParseError::NoSeparator("41".to_owned())));
        assert_eq!(format!("-1:{HASH}").parse::<Anchor>(), Err(AnchorParseError::Seq("-1".to_owned())));
        assert_eq!("7:abc".parse::<Anchor>(), Err(AnchorParseError::Hash("abc".to_owned())));
        let upper = HASH.to_uppercase();
        assert_eq!(format!("7:{upper}").parse::<Anchor>(), Err(AnchorParseError::Hash(upper)));
    }

    #[test]
    fn a_missing_anchor_says_where_the_log_ends() {
        let anchor = Anchor { seq: 9, hash: HASH.to_owned() };
        let past_end = MissingAnchor { anchor: anchor.clone(), records: 5 };
        assert!(past_end.to_string().contains("names seq 9, but the log ends at seq 4"), "{past_end}");
        let empty = MissingAnchor { anchor, records: 0 };
        assert!(empty.to_string().contains("but the log is empty"), "{empty}");
    }

    /// A log of `n` records; record `changed_from` on (if any) reads a
    /// different resource, as if the chain were rewritten from there with
    /// every hash recomputed.
    fn log(n: u32, changed_from: Option<u32>) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| {
                let mut entry = read_by_weber(i, "2026-05-01T10:00:00Z", &["p-100"]);
                if changed_from.is_some_and(|from| i >= from) {
                    entry.resource = "Observation::\"obs-hidden\"".to_owned();
                }
                chain(entry.into(), &mut head).1
            })
            .collect()
    }

    fn anchor_of(line: &str) -> Anchor {
        let record: ChainedRecord = serde_json::from_str(line).unwrap();
        Anchor { seq: record.seq, hash: record.hash }
    }

    fn check(lines: &[String], anchors: Vec<Anchor>) -> Result<Verifier, crate::audit::chain::ChainBreak> {
        let mut verifier = Verifier::anchored(anchors);
        for (i, line) in lines.iter().enumerate() {
            verifier.check_line("log", i + 1, line)?;
        }
        Ok(verifier)
    }

    #[test]
    fn anchors_that_match_pass_and_the_head_is_the_last_record() {
        let lines = log(5, None);
        let verified =
            check(&lines, vec![anchor_of(&lines[1]), anchor_of(&lines[4])]).unwrap().finish().unwrap();
        assert_eq!(verified, Verified { records: 5, head: Some(anchor_of(&lines[4])), retired: None });
    }

    #[test]
    fn an_empty_log_has_no_head() {
        assert_eq!(Verifier::new().finish().unwrap(), Verified { records: 0, head: None, retired: None });
    }

    #[test]
    fn a_chain_rewritten_with_recomputed_hashes_fails_at_the_anchored_record() {
        let original = log(5, None);
        let rewritten = log(5, Some(2));
        // Intact in itself: only an anchor can tell.
        assert_eq!(check(&rewritten, vec![]).unwrap().finish().unwrap().records, 5);
        let broken = check(&rewritten, vec![anchor_of(&original[3])]).unwrap_err();
        assert_eq!((broken.line, broken.seq), (4, Some(3)));
        assert!(broken.reason.contains("the log was rewritten at or before this record"), "{broken}");
    }

    #[test]
    fn records_cut_from_the_end_fail_at_finish_naming_the_lowest_missing_anchor() {
        let lines = log(5, None);
        let anchors = vec![anchor_of(&lines[4]), anchor_of(&lines[3]), anchor_of(&lines[1])];
        let missing = check(&lines[..3], anchors).unwrap().finish().unwrap_err();
        assert_eq!(missing, MissingAnchor { anchor: anchor_of(&lines[3]), records: 3 });
    }
}
