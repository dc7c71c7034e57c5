//! Tests of the JSON Lines sink, on real files in temporary directories.

use super::super::chain::{ChainedRecord, GENESIS};
use super::*;
use crate::audit::change::fixtures::policies_loaded;
use crate::audit::record::DecisionEntry;
use crate::audit::record::fixtures::read_by_weber;

fn entry(n: u32) -> DecisionEntry {
    read_by_weber(n, "2026-05-01T10:00:00Z", &[&format!("p-{n}")])
}

fn entries(range: std::ops::Range<u32>) -> Vec<DecisionEntry> {
    range.map(entry).collect()
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn file(dir: &Path, index: u64) -> PathBuf {
    dir.join(file_name(index))
}

/// How many records `dir` holds, if its chain is intact.
fn verified(dir: &Path) -> Result<u64, VerifyError> {
    let mut verifier = Verifier::new();
    verify_dir(dir, &mut verifier)?;
    Ok(verifier.finish().expect("without anchors nothing is missing").records)
}

fn broken(dir: &Path) -> ChainBreak {
    match verified(dir) {
        Err(VerifyError::Break(b)) => b,
        other => panic!("expected a break, got {other:?}"),
    }
}

/// One file of ten records, written in three batches.
fn ten(dir: &Path) {
    let mut sink = JsonlSink::open(dir, u64::MAX).unwrap();
    sink.append(entries(0..3)).unwrap();
    sink.append(entries(3..4)).unwrap();
    sink.append(entries(4..10)).unwrap();
}

#[test]
fn genesis_and_a_chain_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.dir(), tmp.path());
    assert_eq!(sink.head(), &ChainHead::genesis());
    let records = sink.append(entries(0..4)).unwrap();
    assert_eq!(records[0].seq(), 0);
    assert_eq!(records[0].prev(), GENESIS);
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq(), pair[0].seq() + 1);
        assert_eq!(pair[1].prev(), pair[0].stored_hash());
    }
    assert!(sink.append(Vec::<DecisionEntry>::new()).unwrap().is_empty());
    let lines = lines_of(&file(tmp.path(), 1));
    assert_eq!(lines.len(), 4);
    let first: ChainedRecord = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ChainLine::Decision(first), records[0]);
    assert_eq!(verified(tmp.path()).unwrap(), 4);
}

#[test]
fn an_empty_directory_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(verified(tmp.path()).unwrap(), 0);
    assert!(matches!(verified(&tmp.path().join("absent")), Err(VerifyError::Io { .. })));
}

#[test]
fn editing_a_field_is_caught_at_that_record() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let mut lines = lines_of(&path);
    lines[5] = lines[5].replace("\"Allow\"", "\"Deny\"");
    write_lines(&path, &lines);
    let b = broken(tmp.path());
    assert_eq!((b.file.as_str(), b.line, b.seq), (path.display().to_string().as_str(), 6, Some(5)));
    assert!(b.reason.starts_with("`hash` does not match the record's content"), "{b}");
}

#[test]
fn deleting_a_line_is_caught_at_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let mut lines = lines_of(&path);
    lines.remove(5);
    write_lines(&path, &lines);
    let b = broken(tmp.path());
    assert_eq!((b.line, b.seq), (6, Some(6)));
    assert_eq!(b.reason, "`seq` out of order: expected 5, found 6");
}

#[test]
fn swapping_lines_is_caught_at_the_first_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let mut lines = lines_of(&path);
    lines.swap(5, 6);
    write_lines(&path, &lines);
    let b = broken(tmp.path());
    assert_eq!((b.line, b.seq), (6, Some(6)));
    assert_eq!(b.reason, "`seq` out of order: expected 5, found 6");
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1000).unwrap();
    for n in 0..12 {
        sink.append(vec![entry(n)]).unwrap();
    }
    let files = log_files(tmp.path()).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(
        files.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (1..=files.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(sink.current_file(), files.last().unwrap().1);
    assert_eq!(verified(tmp.path()).unwrap(), 12);

    // A file exceeds the limit by at most one batch.
    for (_, path) in &files[..files.len() - 1] {
        let len = fs::metadata(path).unwrap().len();
        assert!((1000..2000).contains(&len), "{len}");
    }

    let second = file(tmp.path(), 2);
    let mut lines = lines_of(&second);
    let first_seq = lines_of(&file(tmp.path(), 1)).len() as u64;
    lines.remove(0);
    write_lines(&second, &lines);
    let b = broken(tmp.path());
    assert_eq!(b.file, second.display().to_string());
    assert_eq!((b.line, b.seq), (1, Some(first_seq + 1)));
    assert_eq!(b.reason, format!("`seq` out of order: expected {first_seq}, found {}", first_seq + 1));
}

#[test]
fn deleting_a_middle_file_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1).unwrap();
    for n in 0..3 {
        sink.append(vec![entry(n)]).unwrap();
    }
    drop(sink);
    fs::remove_file(file(tmp.path(), 2)).unwrap();
    let b = broken(tmp.path());
    assert_eq!(b.file, file(tmp.path(), 3).display().to_string());
    assert_eq!((b.line, b.seq), (1, Some(2)));
}

#[test]
fn reopening_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    let before = sink.append(entries(0..3)).unwrap();
    drop(sink);

    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.head(), &ChainHead { next_seq: 3, last_hash: before[2].stored_hash().to_owned() });
    assert_eq!(sink.torn_tail_moved_to(), None);
    let after = sink.append(entries(3..5)).unwrap();
    assert_eq!(after[0].seq(), 3);
    assert_eq!(after[0].prev(), before[2].stored_hash());
    drop(sink);
    assert_eq!(lines_of(&file(tmp.path(), 1)).len(), 5);
    assert_eq!(verified(tmp.path()).unwrap(), 5);
}

#[test]
fn reopening_after_rotation_appends_to_the_newest_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1).unwrap();
    sink.append(entries(0..2)).unwrap();
    sink.append(entries(2..4)).unwrap();
    drop(sink);
    // An empty newest file (a crash right after a rotation) is appended
    // to, continuing from the file before it.
    File::create(file(tmp.path(), 3)).unwrap();
    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.head().next_seq, 4);
    sink.append(entries(4..5)).unwrap();
    assert_eq!(sink.current_file(), file(tmp.path(), 3));
    assert_eq!(lines_of(&file(tmp.path(), 3)).len(), 1);
    assert_eq!(verified(tmp.path()).unwrap(), 5);
}

#[test]
fn a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    let err = JsonlSink::open(tmp.path(), u64::MAX).unwrap_err();
    assert!(matches!(err, AuditIoError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another writer"), "{err}");
}

#[test]
fn other_files_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    fs::write(tmp.path().join("decisions-1.jsonl"), "junk\n").unwrap();
    fs::write(tmp.path().join("decisions-00000a.jsonl"), "junk\n").unwrap();
    fs::create_dir(tmp.path().join("decisions-000009.jsonl")).unwrap();
    assert_eq!(verified(tmp.path()).unwrap(), 10);
    assert_eq!(file_index("decisions-1000000.jsonl"), Some(1_000_000));
    assert_eq!(file_index("decisions-000001.jsonl"), Some(1));
    assert_eq!(file_index("decisions-000001.jsonl.torn-at-5"), None);
}

#[test]
fn a_torn_last_line_is_moved_aside_and_the_chain_continues() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let intact = fs::read(&path).unwrap();
    let torn = b"{\"seq\":10,\"decision_id\":\"0000".to_vec();
    fs::write(&path, [intact.clone(), torn.clone()].concat()).unwrap();

    let b = broken(tmp.path());
    assert_eq!((b.line, b.seq), (11, None));
    assert!(b.reason.contains("torn write"), "{b}");

    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    let aside = tmp.path().join(format!("decisions-000001.jsonl.torn-at-{}", intact.len()));
    assert_eq!(sink.torn_tail_moved_to(), Some(aside.as_path()));
    assert_eq!(fs::read(&aside).unwrap(), torn);
    assert_eq!(fs::read(&path).unwrap(), intact);
    assert_eq!(sink.head().next_seq, 10);
    let more = sink.append(entries(10..12)).unwrap();
    assert_eq!(more[0].seq(), 10);
    drop(sink);
    assert_eq!(verified(tmp.path()).unwrap(), 12);
}

#[test]
fn setting_aside_is_idempotent_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let intact = fs::read(&path).unwrap();
    let aside =
        |suffix: &str| tmp.path().join(format!("decisions-000001.jsonl.torn-at-{}{suffix}", intact.len()));
    // A crash after the copy, before the cut: the same bytes are found.
    fs::write(aside(""), b"{\"seq\"").unwrap();
    fs::write(&path, [intact.clone(), b"{\"seq\"".to_vec()].concat()).unwrap();
    let sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.torn_tail_moved_to(), Some(aside("").as_path()));
    drop(sink);
    // A second tear at the same offset keeps the first one's bytes.
    fs::write(&path, [intact.clone(), b"{\"se".to_vec()].concat()).unwrap();
    let sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.torn_tail_moved_to(), Some(aside(".1").as_path()));
    assert_eq!(fs::read(aside("")).unwrap(), b"{\"seq\"");
    assert_eq!(fs::read(aside(".1")).unwrap(), b"{\"se");
    drop(sink);
    assert_eq!(verified(tmp.path()).unwrap(), 10);
}

#[test]
fn a_file_that_is_only_a_torn_line_continues_from_the_file_before() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1).unwrap();
    sink.append(entries(0..2)).unwrap();
    drop(sink);
    fs::write(file(tmp.path(), 2), b"{\"seq\":2,").unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1).unwrap();
    assert_eq!(sink.head().next_seq, 2);
    sink.append(entries(2..3)).unwrap();
    drop(sink);
    assert_eq!(verified(tmp.path()).unwrap(), 3);
}

#[test]
fn a_damaged_last_record_or_torn_older_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    ten(tmp.path());
    let path = file(tmp.path(), 1);
    let mut lines = lines_of(&path);
    lines[9] = lines[9].replace("obs-9", "obs-X");
    write_lines(&path, &lines);
    let err = JsonlSink::open(tmp.path(), u64::MAX).unwrap_err();
    assert!(matches!(&err, AuditIoError::Corrupt { path: p, .. } if *p == path), "{err}");
    assert!(err.to_string().contains("does not match the record's content"), "{err}");

    lines[9] = "not json".to_owned();
    write_lines(&path, &lines);
    let err = JsonlSink::open(tmp.path(), u64::MAX).unwrap_err();
    assert!(err.to_string().contains("its last line is not a record"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), 1).unwrap();
    sink.append(entries(0..1)).unwrap();
    sink.append(entries(1..2)).unwrap();
    drop(sink);
    let first = file(tmp.path(), 1);
    let mut bytes = fs::read(&first).unwrap();
    bytes.pop();
    fs::write(&first, bytes).unwrap();
    // The chain is continued from the older file only when every newer
    // one is empty; only then is it read.
    fs::write(file(tmp.path(), 2), b"").unwrap();
    let err = JsonlSink::open(tmp.path(), 1).unwrap_err();
    assert!(err.to_string().contains("only the newest file can be torn"), "{err}");
}

#[test]
fn a_poisoned_sink_refuses_to_append() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    sink.poisoned = true;
    let err = sink.append(entries(0..1)).unwrap_err();
    assert!(matches!(err, AuditIoError::Poisoned { .. }), "{err}");
    assert_eq!(sink.head(), &ChainHead::genesis());
}

#[test]
fn the_tail_is_found_however_long_the_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let long = "x".repeat(3 * TAIL_WINDOW as usize);
    for (content, last, torn) in [
        (String::new(), None, None),
        ("a\n".to_owned(), Some("a"), None),
        ("\n".to_owned(), Some(""), None),
        ("a".to_owned(), None, Some((0, "a"))),
        ("a\nb\n".to_owned(), Some("b"), None),
        ("a\nbc".to_owned(), Some("a"), Some((2, "bc"))),
        (format!("a\n{long}\n"), Some(long.as_str()), None),
        (format!("{long}\nb\n{long}"), Some("b"), Some((long.len() as u64 + 3, long.as_str()))),
        (format!("{long}\n{long}\n"), Some(long.as_str()), None),
    ] {
        fs::write(&path, &content).unwrap();
        let tail = read_tail(&path).unwrap();
        let expected = Tail {
            last_line: last.map(|l| l.as_bytes().to_vec()),
            torn: torn.map(|(o, t)| (o, t.as_bytes().to_vec())),
        };
        assert_eq!(tail, expected, "{:?}", content.get(..20));
    }
}

#[test]
fn the_last_record_is_the_newest_complete_line_whatever_follows_it() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(last_record(tmp.path()).unwrap(), None);
    let mut sink = JsonlSink::open(tmp.path(), 1000).unwrap();
    let mut written = Vec::new();
    for n in 0..12 {
        written.extend(sink.append(vec![entry(n)]).unwrap());
    }
    assert_eq!(last_record(tmp.path()).unwrap().as_ref(), written.last());
    drop(sink);

    // An append still in progress, and a newer file not yet written to.
    let files = log_files(tmp.path()).unwrap();
    let newest = &files.last().unwrap().1;
    let mut appending = OpenOptions::new().append(true).open(newest).unwrap();
    appending.write_all(b"{\"seq\":12,\"decision_id\":\"0000").unwrap();
    fs::write(file(tmp.path(), files.len() as u64 + 1), b"").unwrap();
    assert_eq!(last_record(tmp.path()).unwrap().as_ref(), written.last());

    // A last record whose hash no longer matches is not a head to anchor.
    let mut lines = lines_of(newest);
    lines.pop();
    let last = lines.last_mut().unwrap();
    *last = last.replace("obs-11", "obs-X");
    write_lines(newest, &lines);
    let err = last_record(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("does not match the record's content"), "{err}");
}

#[test]
fn a_log_ending_in_a_change_record_reopens_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    sink.append(entries(0..2)).unwrap();
    let written = sink.append(vec![policies_loaded(1, "2026-05-01T10:00:00Z")]).unwrap();
    assert!(matches!(&written[0], ChainLine::Change(change) if change.seq == 2));
    drop(sink);
    assert_eq!(last_record(tmp.path()).unwrap().as_ref(), written.last());

    let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
    assert_eq!(sink.head(), &ChainHead::after(&written[0]));
    let mixed: Vec<AuditEntry> = vec![entry(3).into(), policies_loaded(2, "2026-05-01T10:00:01Z").into()];
    sink.append(mixed).unwrap();
    drop(sink);
    assert_eq!(verified(tmp.path()).unwrap(), 5);

    // Editing the change record is caught at it.
    let path = file(tmp.path(), 1);
    let mut lines = lines_of(&path);
    lines[2] = lines[2].replace("\"subject\":\"v1\"", "\"subject\":\"v0\"");
    write_lines(&path, &lines);
    let b = broken(tmp.path());
    assert_eq!((b.line, b.seq), (3, Some(2)));
    assert!(b.reason.starts_with("`hash` does not match the record's content"), "{b}");
}
