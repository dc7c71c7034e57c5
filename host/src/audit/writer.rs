//! The bounded, asynchronous audit writer.
//!
//! Decisions hand their records to a queue of fixed capacity and go on; one
//! thread drains it into the sink in batches, one fsync per batch, so the
//! request path never waits for the disk. The queue's bound is what keeps a
//! slow or failed sink from growing memory: when it is full, or the sink's
//! last write failed, the configured [`Backpressure`] decides.
//!
//! Some decisions must be provable even if the process dies the moment
//! after answering: a break-glass Allow is answered only once the batch that
//! holds its record is durable, and with [`Durability::Sync`] every decision
//! is. Such a record carries a completion the writer fires after the batch's
//! write (and fsync) returns. A batch that begins with such a record is
//! written at once, without the batch window: it costs the waiting decision
//! about one fsync, and costs nothing to the others.
//!
//! A change to the rules ([`AuditLog::record_change`]) always waits so: a
//! change that was acknowledged must be in the log, or the rules a decision
//! was made under could not be accounted for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::oneshot;

use super::chain::AuditEntry;
use super::change::ChangeEntry;
use super::disk::{DiskSpace, DiskWatch};
use super::failure::{AuditRefusal, NotDurable, WriteFailure};
use super::record::DecisionEntry;
use super::sink::AuditSink;

/// Records written per batch at most, so one fsync covers a burst.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers records after the first before it writes
/// them: under load, one fsync then covers many decisions instead of one,
/// and the writer wakes once per batch rather than once per record.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// What happens to new decisions when the log cannot keep up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backpressure {
    /// Deny them with the reason "audit unavailable".
    #[default]
    FailClosed,
    /// Decide them, drop their records and count the drops.
    DropAndCount,
}

/// Which decisions wait for their record to be durable before they are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Break-glass Allows (those with the `audit-priority` obligation);
    /// every other record is written within moments.
    #[default]
    BreakGlass,
    /// Every decision.
    Sync,
}

/// How long a decision waits for its record to be durable. A blocked log
/// must not hold emergency requests indefinitely: past this the answer is a
/// Deny saying why, and the record, written later, shows an access that
/// did not happen rather than hiding one that did.
pub const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// Why a record could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unqueued {
    /// The queue is full: the writer is falling behind.
    Full,
    /// The writer has stopped.
    Stopped,
}

/// A record in the queue, and who waits for it to be durable.
#[derive(Debug)]
struct Queued {
    entry: AuditEntry,
    /// Fired with the outcome of the batch's write; `None` when nobody waits.
    written: Option<oneshot::Sender<Result<(), WriteFailure>>>,
}

/// A queued record, which a decision that must be provable waits on.
#[derive(Debug)]
#[must_use = "a decision that must be durable is answered only after `durable`"]
pub struct Recording(Option<oneshot::Receiver<Result<(), WriteFailure>>>);

impl Recording {
    /// Waits until the record is durable, if its decision must wait.
    pub async fn durable(self) -> Result<(), NotDurable> {
        let Some(written) = self.0 else { return Ok(()) };
        match tokio::time::timeout(DURABLE_WAIT, written).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(failure))) => Err(NotDurable::WriteFailed(failure)),
            Ok(Err(_)) => Err(NotDurable::WriterStopped),
            Err(_) => Err(NotDurable::TimedOut),
        }
    }
}

/// How long closing the log waits for the writer to write what is queued.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handle decisions submit their records through. Dropping it closes
/// the log: the writer writes every record already queued (decisions whose
/// answers have gone out) before the process may exit.
#[derive(Debug)]
pub struct AuditLog {
    /// `None` once closed, which tells the writer to finish.
    queue: Option<SyncSender<Queued>>,
    /// Signalled (its sender dropped) when the writer has finished; in a
    /// mutex only because a receiver is not `Sync`.
    finished: Mutex<Receiver<()>>,
    shared: Arc<Shared>,
    backpressure: Backpressure,
    /// Which decisions wait for their record to be durable.
    durability: Durability,
    /// Where the records go, for operators (never a password).
    description: String,
    /// The disk of a directory log.
    disk: Option<DiskWatch>,
}

/// How the log is doing, for `/readyz`.
#[derive(Debug, Clone)]
pub struct AuditStatus {
    /// Where the records go.
    pub log: String,
    /// What new decisions meet while the log cannot keep up.
    pub backpressure: Backpressure,
    /// Why the last write failed, while it is the last word.
    pub failure: Option<WriteFailure>,
    /// The free space of a directory log's disk.
    pub disk: Option<DiskSpace>,
}

impl AuditStatus {
    /// Whether decisions are being denied because of the log: its last
    /// write failed and it fails closed. A full queue is not counted: it is
    /// a moment's backlog, and readiness that flapped with it would move
    /// traffic for nothing.
    pub fn denies_decisions(&self) -> bool {
        self.failure.is_some() && self.backpressure == Backpressure::FailClosed
    }
}

#[derive(Debug)]
struct Shared {
    /// Whether the sink's last write failed: read by every decision, so it
    /// is an atomic and the lock below is taken only after a failure.
    failed: AtomicBool,
    /// Why the sink's last write failed; cleared by the next success.
    failure: Mutex<Option<WriteFailure>>,
    dropped: Counter,
    lost: Counter,
    written: Counter,
    /// 1 while the last write failed, else 0.
    failing: Gauge,
}

impl AuditLog {
    /// Starts the writer thread over `sink` (described to operators as
    /// `description`), with a queue of `capacity` records.
    pub fn start(
        sink: AuditSink,
        description: String,
        capacity: usize,
        backpressure: Backpressure,
        durability: Durability,
    ) -> std::io::Result<Self> {
        crate::metrics::handle();
        let (queue, receiver) = sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            dropped: counter!("consentry_audit_dropped_total"),
            lost: counter!("consentry_audit_write_failures_total"),
            written: counter!("consentry_audit_written_total"),
            failing: gauge!("consentry_audit_failing"),
        });
        shared.failing.set(0.0);
        let writer = Arc::clone(&shared);
        let (finishing, finished) = sync_channel::<()>(0);
        std::thread::Builder::new().name("audit-writer".to_owned()).spawn(move || {
            write(sink, &receiver, &writer);
            drop(finishing);
        })?;
        Ok(Self {
            queue: Some(queue),
            finished: Mutex::new(finished),
            shared,
            backpressure,
            durability,
            description,
            disk: None,
        })
    }

    /// Where the records go, how backpressure is set, and whether the last
    /// write failed.
    pub fn status(&self) -> AuditStatus {
        AuditStatus {
            log: self.description.clone(),
            backpressure: self.backpressure,
            failure: self.failure(),
            disk: self.disk(),
        }
    }

    /// Reads the free space of a directory log's disk.
    pub fn disk(&self) -> Option<DiskSpace> {
        self.disk.as_ref().map(DiskWatch::read)
    }

    /// Reports the free space of the disk `disk` watches in its status.
    pub fn watching_disk(mut self, disk: Option<DiskWatch>) -> Self {
        self.disk = disk;
        self
    }

    /// Queues `entry`, the record of a decision that carries the
    /// `audit-priority` obligation if `priority`. The decision may be
    /// answered once the returned [`Recording`] is durable: at once for most
    /// decisions, after the write of its batch for a priority one or, with
    /// [`Durability::Sync`], for every one. `Err` carries the reason the
    /// decision must be denied instead.
    pub fn record(&self, entry: DecisionEntry, priority: bool) -> Result<Recording, NotDurable> {
        if !priority && self.durability == Durability::BreakGlass {
            return self.submit(entry).map(|()| Recording(None)).map_err(NotDurable::Refused);
        }
        self.queue_durable(entry.into())
    }

    /// Queues the record of `change`, a change to the rules, which is
    /// never dropped: the change may be acknowledged once the returned
    /// [`Recording`] is [durable](Recording::durable), whatever the
    /// durability setting. `Err` carries the reason the change must be
    /// refused instead (the log is full, failing or stopped).
    pub fn record_change(&self, change: ChangeEntry) -> Result<Recording, NotDurable> {
        self.queue_durable(change.into())
    }

    /// Queues `entry` with a completion its caller waits on.
    fn queue_durable(&self, entry: AuditEntry) -> Result<Recording, NotDurable> {
        let (written, durable) = oneshot::channel();
        let queued = self.enqueue(Queued { entry, written: Some(written) });
        self.refusal(queued.err(), false).map_err(NotDurable::Refused)?;
        Ok(Recording(Some(durable)))
    }

    /// Queues `entry`. `Err` carries the reason the decision must be
    /// denied instead; with `drop-and-count` that never happens.
    pub fn submit(&self, entry: DecisionEntry) -> Result<(), AuditRefusal> {
        let queued = self.enqueue(Queued { entry: entry.into(), written: None });
        self.refusal(queued.err(), true)
    }

    /// Puts `queued` in the queue. Queued even after a failed write: the
    /// writer retries with it, which is how it notices that the sink is back.
    fn enqueue(&self, queued: Queued) -> Result<(), Unqueued> {
        match &self.queue {
            Some(queue) => queue.try_send(queued).map_err(|error| match error {
                TrySendError::Full(_) => Unqueued::Full,
                TrySendError::Disconnected(_) => Unqueued::Stopped,
            }),
            None => Err(Unqueued::Stopped),
        }
    }

    /// Whether a decision must be denied, and why, when its record could
    /// not be queued (`unqueued`) or was (`None`). A record nobody waits for
    /// may be dropped under `drop-and-count` (`droppable`); one that must be
    /// durable never is.
    fn refusal(&self, unqueued: Option<Unqueued>, droppable: bool) -> Result<(), AuditRefusal> {
        let refusal = match (unqueued, self.failure()) {
            (Some(Unqueued::Stopped), _) => AuditRefusal::Stopped,
            // A queued record that must be durable waits for the retry.
            (None, Some(_)) if !droppable => return Ok(()),
            (_, Some(failure)) => AuditRefusal::Failing(failure),
            (Some(Unqueued::Full), None) => AuditRefusal::FallingBehind,
            (None, None) => return Ok(()),
        };
        match self.backpressure {
            Backpressure::DropAndCount if droppable => {
                // A queued record is not dropped: it is written, or counted
                // as a write failure, so counting it here would count it twice.
                if unqueued.is_some() {
                    self.shared.dropped.increment(1);
                }
                Ok(())
            }
            _ => Err(refusal),
        }
    }

    /// Why the sink's last write failed, if it did.
    fn failure(&self) -> Option<WriteFailure> {
        if self.shared.failed.load(Ordering::Acquire) {
            self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
        } else {
            None
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it and stop.
        self.queue = None;
        let finished = self.finished.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(CLOSE_TIMEOUT) {
            tracing::error!(
                log = %self.description,
                "the decision log writer did not finish within {} s; records still queued were not written",
                CLOSE_TIMEOUT.as_secs()
            );
        }
    }
}

/// Drains the queue into the sink until every handle is gone.
fn write(mut sink: AuditSink, receiver: &Receiver<Queued>, shared: &Shared) {
    while let Ok(first) = receiver.recv() {
        // Sleep out the window instead of waiting on the queue: a writer
        // waiting on it must be woken for every record, which costs each
        // decision a futex call and a context switch. Not when a decision
        // waits for this record, though: its answer is held until the batch
        // is durable, and the records queued while the previous batch was
        // written make this batch (group commit).
        if first.written.is_none() {
            std::thread::sleep(BATCH_WINDOW);
        }
        let (batch, waiting): (Vec<AuditEntry>, Vec<_>) = std::iter::once(first)
            .chain(receiver.try_iter().take(MAX_BATCH - 1))
            .map(|queued| (queued.entry, queued.written))
            .unzip();
        let count = batch.len();
        let written = match sink.append(batch) {
            Ok(_) => {
                shared.written.increment(u64::try_from(count).unwrap_or(u64::MAX));
                if shared.failed.load(Ordering::Acquire) {
                    *shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    shared.failed.store(false, Ordering::Release);
                    shared.failing.set(0.0);
                }
                Ok(())
            }
            Err(error) => {
                shared.failing.set(1.0);
                shared.lost.increment(u64::try_from(count).unwrap_or(u64::MAX));
                tracing::error!(%error, records = count, "audit records could not be written");
                let failure = WriteFailure::new(error);
                *shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure.clone());
                shared.failed.store(true, Ordering::Release);
                Err(failure)
            }
        };
        // Only now, with the log's state up to date for `/readyz` and the
        // metrics, may the decisions waiting on this batch be answered.
        for waiter in waiting.into_iter().flatten() {
            // A decision that stopped waiting (its request was cancelled) is no error.
            let _ = waiter.send(written.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{ChainLine, ChainedChange};
    use crate::audit::change::{ChangeEntry, ChangeKind};
    use crate::audit::jsonl::JsonlSink;
    use crate::audit::record::fixtures::read_by_weber;

    fn log_in(dir: &std::path::Path, durability: Durability) -> AuditLog {
        log_with(dir, durability, Backpressure::FailClosed)
    }

    fn log_with(dir: &std::path::Path, durability: Durability, backpressure: Backpressure) -> AuditLog {
        let sink = AuditSink::Jsonl(JsonlSink::open(dir, u64::MAX).unwrap());
        AuditLog::start(sink, "test".to_owned(), 16, backpressure, durability).unwrap()
    }

    fn lines_in(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|file| std::fs::read_to_string(file.unwrap().path()).unwrap().lines().count())
            .sum()
    }

    #[tokio::test]
    async fn a_priority_record_is_written_before_its_decision_may_be_answered() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path(), Durability::BreakGlass);
        log.record(read_by_weber(1, "2026-05-01T10:00:00Z", &["p-1"]), true)
            .unwrap()
            .durable()
            .await
            .unwrap();
        assert_eq!(lines_in(dir.path()), 1);
    }

    #[tokio::test]
    async fn with_sync_every_record_is_written_before_its_decision_may_be_answered() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path(), Durability::Sync);
        for n in 1..=3 {
            log.record(read_by_weber(n, "2026-05-01T10:00:00Z", &["p-1"]), false)
                .unwrap()
                .durable()
                .await
                .unwrap();
            assert_eq!(lines_in(dir.path()), usize::try_from(n).unwrap());
        }
    }

    #[tokio::test]
    async fn a_change_is_written_before_it_may_be_acknowledged_even_under_drop_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), Durability::BreakGlass, Backpressure::DropAndCount);
        let change = ChangeEntry::now(ChangeKind::Consent, "consent-app", "c-1/v3")
            .with_reason(Some("patient request"))
            .unwrap();
        log.record_change(change.clone()).unwrap().durable().await.unwrap();
        assert_eq!(lines_in(dir.path()), 1);
        let text = std::fs::read_to_string(dir.path().join("decisions-000001.jsonl")).unwrap();
        let ChainLine::Change(ChainedChange { seq: 0, change: written, .. }) =
            ChainLine::parse(text.trim_end()).unwrap()
        else {
            panic!("{text}");
        };
        assert_eq!(written, change);
    }

    #[tokio::test]
    async fn a_change_the_log_cannot_take_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with(dir.path(), Durability::BreakGlass, Backpressure::DropAndCount);
        // A stopped writer, as after shutdown began.
        log.queue = None;
        let refused = log.record_change(ChangeEntry::now(ChangeKind::Plugins, "consentry", "h")).unwrap_err();
        assert!(matches!(refused, NotDurable::Refused(AuditRefusal::Stopped)), "{refused:?}");
        assert_eq!(refused.code(), "audit_stopped");
        assert_eq!(refused.to_string(), "audit unavailable: the audit writer has stopped");
    }
}
