//! Compression and retention, on real files in temporary directories with
//! real zstd.

use std::io::Read;

use super::super::files::ZST;
use super::super::{JsonlSink, VerifyError, file_name, verify_dir};
use super::*;
use crate::audit::chain::{ChainBreak, Verifier};
use crate::audit::record::fixtures::read_by_weber;
use crate::audit::{Retired, Verified};

/// A log of four files of five records each (seq 0–19), the last one being
/// written; returns the sink, still open.
fn four_files(dir: &Path) -> JsonlSink {
    let mut sink = JsonlSink::open(dir, 1).unwrap();
    for batch in 0..4_u32 {
        let entries: Vec<_> = (batch * 5..batch * 5 + 5)
            .map(|n| read_by_weber(n, "2026-05-01T10:00:00Z", &["p-100"]))
            .collect();
        sink.append(entries).unwrap();
    }
    assert_eq!(sink.index, 4);
    sink
}

fn plain(dir: &Path, index: u64) -> PathBuf {
    dir.join(file_name(index))
}

fn zst(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{}{ZST}", file_name(index)))
}

fn verify(dir: &Path, anchors: Vec<Anchor>) -> Result<Verified, VerifyError> {
    let mut verifier = Verifier::anchored(anchors);
    verify_dir(dir, &mut verifier)?;
    Ok(verifier.finish().expect("no anchor past the end"))
}

fn broken(dir: &Path) -> ChainBreak {
    match verify(dir, vec![]) {
        Err(VerifyError::Break(b)) => b,
        other => panic!("expected a break, got {other:?}"),
    }
}

/// The anchor of record `seq`, as `verify` would have printed it.
fn anchor_at(dir: &Path, seq: u64) -> Anchor {
    for (_, path) in log_files(dir).unwrap() {
        if let Some(record) = record_in(&path, seq).unwrap() {
            return Anchor { seq, hash: record.stored_hash().to_owned() };
        }
    }
    panic!("no record {seq}");
}

fn keep(dir: &Path, anchor: &Anchor) {
    fs::write(dir.join(ANCHORS_FILE), format!("# kept in ticket OPS-1\n{anchor}\n")).unwrap();
}

fn unzstd(path: &Path) -> String {
    let mut text = String::new();
    zstd::stream::read::Decoder::new(fs::File::open(path).unwrap())
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn finished_files_are_compressed_and_verify_reads_both_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = four_files(dir);
    let before: Vec<String> = (1..=3).map(|i| fs::read_to_string(plain(dir, i)).unwrap()).collect();
    let done = tidy(dir, sink.index, Retention::default()).unwrap();
    assert_eq!(done, Tidied { compressed: 3, retired: 0, kept_because: None });
    for i in 1..=3_u64 {
        assert!(!plain(dir, i).exists() && zst(dir, i).exists(), "file {i}");
        assert_eq!(unzstd(&zst(dir, i)), before[(i - 1) as usize]);
    }
    assert!(plain(dir, 4).exists() && !zst(dir, 4).exists(), "the file being written stays plain");
    let verified = verify(dir, vec![anchor_at(dir, 3), anchor_at(dir, 19)]).unwrap();
    assert_eq!((verified.records, verified.retired), (20, None));
    // A restart continues from the plain file, and one that finds the
    // newest file compressed begins the next.
    drop(sink);
    let mut sink = JsonlSink::open(dir, 1).unwrap();
    assert_eq!(sink.head().next_seq, 20);
    sink.append(vec![read_by_weber(20, "2026-05-01T10:00:00Z", &["p-100"])]).unwrap();
    drop(sink);
    tidy(dir, 6, Retention::default()).unwrap();
    assert!(zst(dir, 5).exists());
    let sink = JsonlSink::open(dir, 1).unwrap();
    assert_eq!((sink.index, sink.head().next_seq), (6, 21));
    assert_eq!(verify(dir, vec![]).unwrap().records, 21);
}

#[test]
fn an_edit_inside_a_compressed_file_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = four_files(dir);
    tidy(dir, sink.index, Retention::default()).unwrap();
    let text = unzstd(&zst(dir, 2)).replacen("\"Allow\"", "\"Deny\"", 1);
    fs::write(zst(dir, 2), zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
    let b = broken(dir);
    assert_eq!((b.file.clone(), b.line, b.seq), (zst(dir, 2).display().to_string(), 1, Some(5)));
    assert!(b.reason.starts_with("`hash` does not match"), "{b}");
}

#[test]
fn a_crash_mid_compression_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(four_files(dir));
    // Cut before the rename: a half-written copy beside the plain file.
    let half = zstd::encode_all(fs::read(plain(dir, 1)).unwrap().as_slice(), 3).unwrap();
    let tmp_copy = dir.join(format!("{}.zst.tmp", file_name(1)));
    fs::write(&tmp_copy, &half[..half.len() / 2]).unwrap();
    // Cut after the rename: both the plain file and its full copy.
    fs::write(zst(dir, 2), zstd::encode_all(fs::read(plain(dir, 2)).unwrap().as_slice(), 3).unwrap())
        .unwrap();
    // A copy that does not match its plain file (here: one line longer) is
    // not trusted over it.
    let mut longer = fs::read(plain(dir, 3)).unwrap();
    longer.extend_from_slice(b"{\"seq\":15}\n");
    fs::write(zst(dir, 3), zstd::encode_all(longer.as_slice(), 3).unwrap()).unwrap();
    assert_eq!(verify(dir, vec![]).unwrap().records, 20, "readers take the plain file while both exist");
    let sink = JsonlSink::open(dir, 1).unwrap();
    assert!(!tmp_copy.exists());
    assert!(plain(dir, 1).exists());
    assert!(!plain(dir, 2).exists() && zst(dir, 2).exists());
    assert!(plain(dir, 3).exists() && !zst(dir, 3).exists());
    assert_eq!(sink.head().next_seq, 20);
    assert_eq!(verify(dir, vec![]).unwrap().records, 20);
}

#[test]
fn without_an_anchor_no_file_is_retired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = four_files(dir);
    let done = tidy(dir, sink.index, Retention { keep_files: 1 }).unwrap();
    assert_eq!((done.compressed, done.retired), (3, 0));
    assert!(done.kept_because.unwrap().contains("names no anchor the log holds"));
    assert_eq!(log_files(dir).unwrap().len(), 4);
    // An anchor whose hash the log does not hold covers nothing.
    keep(dir, &Anchor { seq: 19, hash: "0".repeat(64) });
    assert_eq!(tidy(dir, sink.index, Retention { keep_files: 1 }).unwrap().retired, 0);
    assert_eq!(log_files(dir).unwrap().len(), 4);
}

#[test]
fn files_an_anchor_covers_are_retired_and_verify_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = four_files(dir);
    // Seq 7 lies in file 2: file 1 (0–4) is covered, file 2 (5–9) is not.
    let anchor = anchor_at(dir, 7);
    keep(dir, &anchor);
    let done = tidy(dir, sink.index, Retention { keep_files: 1 }).unwrap();
    assert_eq!(done.retired, 1);
    assert!(done.kept_because.unwrap().contains("holds records up to seq 9"));
    assert!(!zst(dir, 1).exists() && zst(dir, 2).exists());
    let verified = verify(dir, vec![anchor.clone(), anchor_at(dir, 19)]).unwrap();
    assert_eq!(verified.records, 15);
    assert_eq!(
        verified.retired,
        Some(Retired { before_seq: 5, covered_by: anchor.to_string(), unchecked_anchors: 0 })
    );
    // A later anchor covers the rest but the newest file.
    keep(dir, &anchor_at(dir, 19));
    assert_eq!(tidy(dir, sink.index, Retention { keep_files: 1 }).unwrap().retired, 2);
    assert_eq!(log_files(dir).unwrap().len(), 1);
    let verified = verify(dir, vec![anchor]).unwrap();
    assert_eq!(verified.records, 5);
    assert_eq!(verified.retired.unwrap().unchecked_anchors, 1);
    assert_eq!(fs::read_to_string(dir.join(RETIRED_FILE)).unwrap().lines().count(), 3);
}

#[test]
fn an_anchor_at_the_last_retired_record_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = four_files(dir);
    keep(dir, &anchor_at(dir, 4));
    let last_retired = anchor_at(dir, 4);
    assert_eq!(tidy(dir, sink.index, Retention { keep_files: 1 }).unwrap().retired, 1);
    assert_eq!(verify(dir, vec![last_retired]).unwrap().records, 15);
    let other = Anchor { seq: 4, hash: "a".repeat(64) };
    let Err(VerifyError::Break(b)) = verify(dir, vec![other]) else { panic!("a wrong anchor passed") };
    assert!(b.reason.contains("the log was rewritten at or before this record"), "{b}");
}

#[test]
fn a_file_deleted_without_retirement_is_a_hole_verify_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(four_files(dir));
    fs::remove_file(plain(dir, 1)).unwrap();
    let b = broken(dir);
    assert_eq!((b.line, b.seq), (1, Some(5)));
    assert!(b.reason.contains("records before it are missing"), "{b}");
}
