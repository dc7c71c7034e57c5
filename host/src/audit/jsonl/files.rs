//! Finished log files, compressed, and reading either kind alike.
//!
//! A busy sidecar writes hundreds of bytes per decision, tens of thousands
//! of decisions a second: left plain, the log fills a disk in a day. JSON
//! Lines of near-identical records compress about tenfold, so a file is
//! compressed with zstd once the sink has moved on to the next one (zstd
//! rather than gzip: a better ratio at a fraction of the CPU, and faster to
//! read back for `verify` and the access log). The file being appended to
//! stays plain, so an append is still one `write` and one `fsync`.
//!
//! # Never lose or duplicate a record
//!
//! `decisions-N.jsonl` becomes `decisions-N.jsonl.zst` in steps that a
//! crash may cut at any point: the compressed copy is written to
//! `decisions-N.jsonl.zst.tmp` and fsynced, renamed to its final name (and
//! the directory synced), and only then is the plain file removed. Readers
//! take the plain file while both exist, and a `.tmp` is never read. On
//! start-up [`recover`] removes what a crash left: a `.tmp` (the plain file
//! is still there), or the plain file once its compressed copy is checked to
//! hold the same bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::{AuditIoError, io_error, log_files, sync_dir};

/// The end of a compressed log file's name, after the plain one's.
pub(super) const ZST: &str = ".zst";
/// The end of a compressed copy being written.
const TMP: &str = ".zst.tmp";
/// zstd's default level: near its best ratio for text at a low CPU cost.
const LEVEL: i32 = 3;

/// Whether `path` names a compressed log file.
pub(super) fn is_compressed(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "zst")
}

/// The compressed name of the plain log file `plain`.
fn compressed_name(plain: &Path) -> PathBuf {
    let mut name = plain.as_os_str().to_owned();
    name.push(ZST);
    PathBuf::from(name)
}

/// Reads a log file line by line, decompressing it if it is compressed.
///
/// A plain file compressed between listing the directory and opening it is
/// read from its compressed copy instead, so a reader never misses a file
/// the sink is busy compressing.
pub(in crate::audit) fn open_lines(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    if is_compressed(path) {
        return decoder(File::open(path)?);
    }
    match File::open(path) {
        Ok(file) => Ok(Box::new(BufReader::new(file))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            decoder(File::open(compressed_name(path)).map_err(|_| error)?)
        }
        Err(error) => Err(error),
    }
}

/// A line reader over a zstd stream.
fn decoder(file: File) -> io::Result<Box<dyn BufRead + Send>> {
    Ok(Box::new(BufReader::new(zstd::stream::read::Decoder::new(file)?)))
}

/// The last complete line of a compressed file, and any bytes after it.
/// A compressed file was finished before it was compressed, so trailing
/// bytes there are damage, not a torn append.
pub(super) fn compressed_tail(path: &Path) -> io::Result<(Option<Vec<u8>>, bool)> {
    let mut reader = open_lines(path)?;
    let (mut last, mut buf) = (None, Vec::new());
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok((last, false));
        }
        match buf.strip_suffix(b"\n") {
            Some(line) => last = Some(line.to_vec()),
            None => return Ok((last, true)),
        }
    }
}

/// Compresses the finished plain log file `plain` (see the [module
/// documentation](self) for the steps); returns the compressed file.
pub(super) fn compress(dir: &Path, plain: &Path) -> Result<PathBuf, AuditIoError> {
    let target = compressed_name(plain);
    let mut tmp_name = plain.as_os_str().to_owned();
    tmp_name.push(TMP);
    let tmp = PathBuf::from(tmp_name);
    let mut source = File::open(plain).map_err(io_error("open", plain))?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    let written = zstd::stream::write::Encoder::new(out, LEVEL).and_then(|mut encoder| {
        io::copy(&mut source, &mut encoder)?;
        let mut out = encoder.finish()?;
        out.flush()?;
        out.sync_all()
    });
    written.map_err(io_error("compress into", &tmp))?;
    fs::rename(&tmp, &target).map_err(io_error("rename", &tmp))?;
    sync_dir(dir)?;
    fs::remove_file(plain).map_err(io_error("remove", plain))?;
    sync_dir(dir)?;
    Ok(target)
}

/// Finishes or undoes what a crash left half-way through [`compress`]:
/// removes `.zst.tmp` files, and a plain file whose compressed copy holds
/// the same bytes. A compressed copy that differs from its plain file is
/// removed instead (the plain file is the original), to be made again.
pub(super) fn recover(dir: &Path) -> Result<(), AuditIoError> {
    let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let path = entry.map_err(io_error("list", dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(super::PREFIX) && name.ends_with(TMP) {
            tracing::warn!(file = %path.display(), "removing a compressed copy a crash left unfinished");
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    for (_, path) in log_files(dir).map_err(io_error("list", dir))? {
        let compressed = compressed_name(&path);
        if is_compressed(&path) || !compressed.exists() {
            continue;
        }
        let same = same_content(&path, &compressed).map_err(io_error("compare", &compressed))?;
        let extra = if same { path.clone() } else { compressed };
        tracing::warn!(file = %extra.display(), "removing a copy a crash left during compression");
        fs::remove_file(&extra).map_err(io_error("remove", &extra))?;
    }
    sync_dir(dir)
}

/// Whether the plain file and the compressed one hold the same bytes. A
/// compressed copy that cannot be decompressed is not the same.
fn same_content(plain: &Path, compressed: &Path) -> io::Result<bool> {
    let mut left = BufReader::new(File::open(plain)?);
    let Ok(mut right) = open_lines(compressed) else {
        return Ok(false);
    };
    let (mut a, mut b) = ([0_u8; 8192], Vec::with_capacity(8192));
    loop {
        let n = left.read(&mut a)?;
        b.clear();
        if (&mut right).take(n as u64).read_to_end(&mut b).is_err() {
            return Ok(false);
        }
        if a.get(..n) != Some(b.as_slice()) {
            return Ok(false);
        }
        if n == 0 {
            // The plain file has ended: so must the copy.
            return Ok(matches!(right.read(&mut [0_u8; 1]), Ok(0)));
        }
    }
}
