//! The free space left where the decision log is written, against a
//! low-water mark.
//!
//! A decision log that cannot write fails closed, so a full disk is an
//! outage of every decision. At about 60 bytes per compressed record a busy
//! sidecar still writes gigabytes a day, so operators need to see the
//! disk filling before it is full: as a gauge beside the low-water mark,
//! for an alert, and as a warning in `/readyz`. The warning does not make
//! the sidecar unready: next to its service, an unready sidecar takes the
//! whole pod out of rotation, an outage before there is one.
//!
//! The space is read when it is asked for (a probe, a scrape), not
//! polled: `statvfs` is one system call, and a reading is then never
//! older than the question.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the log's files are, and the free space below which to warn.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    dir: PathBuf,
    low_water_bytes: u64,
}

/// One reading of the log's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use; `None` when the file
    /// system could not be asked.
    pub free_bytes: Option<u64>,
    /// The configured low-water mark.
    pub low_water_bytes: u64,
    /// Whether the free space is below the mark, or unknown.
    pub low: bool,
}

impl DiskWatch {
    /// Watches the file system that holds `dir`, and sets the mark's gauge.
    pub fn new(dir: &Path, low_water_bytes: u64) -> Self {
        // Before the log's writer would install the recorder, so the
        // setting is not lost to the no-op one.
        crate::metrics::handle();
        metrics::gauge!(crate::metrics::AUDIT_DISK_LOW_WATER).set(low_water_bytes as f64);
        Self { dir: dir.to_path_buf(), low_water_bytes }
    }

    /// Reads the free space now, and sets its gauge.
    pub fn read(&self) -> DiskSpace {
        let free_bytes = free_bytes(&self.dir);
        if let Some(free) = free_bytes {
            metrics::gauge!(crate::metrics::AUDIT_DISK_FREE).set(free as f64);
        }
        DiskSpace {
            free_bytes,
            low_water_bytes: self.low_water_bytes,
            low: free_bytes.is_none_or(|free| free < self.low_water_bytes),
        }
    }
}

/// The bytes available to an unprivileged writer on the file system of
/// `dir` (`f_bavail`, not `f_bfree`: the blocks reserved for root are not
/// the log's to use).
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

/// Unknown off Unix, which reads as low: better a warning too many.
#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_free_space_and_a_mark_above_it_is_low() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskWatch::new(dir.path(), 0).read();
        let free = roomy.free_bytes.expect("statvfs answers for a real directory");
        assert!(free > 0);
        assert!(!roomy.low);
        let above = DiskWatch::new(dir.path(), free.saturating_mul(2).max(1 << 62)).read();
        assert!(above.low, "{above:?}");
    }

    #[test]
    fn a_missing_directory_is_reported_low_rather_than_fine() {
        let reading = DiskWatch::new(Path::new("/no/such/consentry/log"), 1).read();
        assert_eq!(reading, DiskSpace { free_bytes: None, low_water_bytes: 1, low: true });
    }
}
