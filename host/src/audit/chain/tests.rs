use super::canonical::hex;
use super::*;
use crate::audit::change::fixtures::policies_loaded;

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

/// Chains a decision, which must come back as one.
fn chain_decision(entry: DecisionEntry, head: &mut ChainHead) -> (ChainedRecord, String) {
    match chain(entry.into(), head) {
        (ChainLine::Decision(record), line) => (record, line),
        (other, _) => panic!("a decision was chained as {other:?}"),
    }
}

fn lines(n: u32) -> Vec<String> {
    let mut head = ChainHead::genesis();
    (0..n).map(|i| chain(entry(i).into(), &mut head).1).collect()
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
    let record = chain_decision(entry(0), &mut head).0;
    assert_eq!(record.seq, 0);
    assert_eq!(record.prev, GENESIS);
    assert_eq!(GENESIS.len(), 64);
    assert!(GENESIS.bytes().all(|b| b == b'0'));
    assert_eq!(head, ChainHead { next_seq: 1, last_hash: record.hash.clone() });
    let next = chain_decision(entry(1), &mut head).0;
    assert_eq!((next.seq, next.prev.as_str()), (1, record.hash.as_str()));
}

#[test]
fn hash_is_sha256_of_the_line_without_hash() {
    let mut head = ChainHead::genesis();
    let record = chain_decision(entry(3), &mut head).0;
    let line = canonical_line(&record);
    let suffix = format!(",\"hash\":\"{}\"}}", record.hash);
    let unhashed = format!("{}}}", line.strip_suffix(&suffix).unwrap());
    assert_eq!(record.hash, hex(&Sha256::digest(unhashed.as_bytes())));
    assert_eq!(record.hash.len(), 64);
}

#[test]
fn canonical_form_is_serde_json_compact_and_roundtrips() {
    let mut nasty = entry(2);
    nasty.principal =
        (0u32..0x80).filter_map(char::from_u32).collect::<String>() + "\u{7f}\u{80}é\u{2028}\u{2029}😀\"\\/";
    nasty.patients = vec![String::new(), "\u{0}".to_owned()];
    nasty.obligations = vec!["a\"b".to_owned()];
    for e in [entry(0), entry(1), nasty] {
        let mut head = ChainHead::genesis();
        let (record, line) = chain_decision(e, &mut head);
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

/// Decisions with a change after every third, as one chain.
fn mixed_lines(n: u32) -> Vec<String> {
    let mut head = ChainHead::genesis();
    (0..n)
        .map(|i| {
            let entry = if i % 3 == 2 {
                AuditEntry::from(policies_loaded(i, "2026-05-01T10:00:00Z"))
            } else {
                entry(i).into()
            };
            chain(entry, &mut head).1
        })
        .collect()
}

#[test]
fn a_log_written_before_change_records_still_verifies() {
    // Written by the decision-only format; its bytes must keep verifying.
    let old =
        include_str!("../../../tests/audit/fixtures/decisions-before-change-records/decisions-000001.jsonl");
    let lines: Vec<String> = old.lines().map(str::to_owned).collect();
    assert_eq!(verify(&lines), Ok(3));
    assert!(lines.iter().all(|line| matches!(ChainLine::parse(line), Ok(ChainLine::Decision(_)))));
    // And the chain goes on with a change record.
    let last = ChainLine::parse(&lines[2]).unwrap();
    let mut head = ChainHead::after(&last);
    let mut continued = lines.clone();
    continued.push(chain(policies_loaded(1, "2026-05-01T10:00:00Z").into(), &mut head).1);
    assert_eq!(verify(&continued), Ok(4));
}

#[test]
fn a_change_line_is_canonical_serde_json_and_roundtrips() {
    let mut nasty = policies_loaded(7, "2026-05-01T10:00:00.123Z");
    nasty.reason = Some("\"quoted\" \\ é 😀 \u{7f}".to_owned());
    nasty.counts = vec![];
    let mut blank = policies_loaded(8, "2026-05-01T10:00:00Z");
    blank.reason = None;
    blank.content_hash = String::new();
    for change in [policies_loaded(1, "2026-05-01T10:00:00Z"), nasty, blank] {
        let mut head = ChainHead::genesis();
        let (record, line) = chain(change.clone().into(), &mut head);
        let ChainLine::Change(chained) = &record else { panic!("{record:?}") };
        assert_eq!(chained.change, change);
        assert!(line.starts_with("{\"seq\":0,\"type\":\"change\",\"change_id\":\""), "{line}");
        assert_eq!(line, serde_json::to_string(chained).unwrap());
        assert_eq!(canonical_line(&record), line);
        let parsed = ChainLine::parse(&line).unwrap();
        assert_eq!(parsed, record);
        assert_eq!(record_hash(&parsed), chained.hash);
        assert!(is_change_line(&line));
    }
    assert!(!is_change_line(&lines(1)[0]));
}

#[test]
fn decisions_and_changes_make_one_chain() {
    let log = mixed_lines(9);
    assert_eq!(verify(&log), Ok(9));
    let kinds: Vec<bool> =
        log.iter().map(|line| matches!(ChainLine::parse(line).unwrap(), ChainLine::Change(_))).collect();
    assert_eq!(kinds, [false, false, true, false, false, true, false, false, true]);
    let seqs: Vec<u64> = log.iter().map(|line| ChainLine::parse(line).unwrap().seq()).collect();
    assert_eq!(seqs, (0..9).collect::<Vec<u64>>());
}

#[test]
fn an_edited_change_record_is_reported_itself() {
    let mut log = mixed_lines(9);
    log[5] = log[5].replace("\"actor\":\"admin\"", "\"actor\":\"someone\"");
    let err = verify(&log).unwrap_err();
    assert_eq!((err.line, err.seq), (6, Some(5)));
    assert!(err.reason.starts_with("`hash` does not match the record's content"), "{err}");

    // Deleting a change record breaks the sequence like deleting a decision.
    let mut log = mixed_lines(9);
    log.remove(2);
    let err = verify(&log).unwrap_err();
    assert_eq!(err.reason, "`seq` out of order: expected 2, found 3");

    // A change record disguised as a decision is not a record.
    let mut log = mixed_lines(9);
    log[2] = log[2].replace("\"type\":\"change\",", "");
    let err = verify(&log).unwrap_err();
    assert_eq!((err.line, err.seq), (3, Some(2)));
    assert!(err.reason.starts_with("not a record: missing field `decision_id`"), "{err}");

    // So is a change record with a `type` it does not know.
    let mut log = mixed_lines(9);
    log[2] = log[2].replace("\"type\":\"change\"", "\"type\":\"chang\"");
    let err = verify(&log).unwrap_err();
    assert!(err.reason.starts_with("not a record: missing field `decision_id`"), "{err}");

    // A re-hashed change record is caught at the next record.
    let mut log = mixed_lines(9);
    let ChainLine::Change(mut change) = ChainLine::parse(&log[5]).unwrap() else { panic!() };
    change.change.reason = None;
    change.hash = record_hash(&change);
    log[5] = canonical_line(&change);
    let err = verify(&log).unwrap_err();
    assert_eq!((err.line, err.seq), (7, Some(6)));
    assert!(err.reason.starts_with("`prev` does not match the previous record's hash"), "{err}");
}
