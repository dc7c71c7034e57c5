//! The bounded, asynchronous audit writer.
//!
//! Decisions hand their records to a queue of fixed capacity and go on; one
//! thread drains it into the sink in batches, one fsync per batch, so the
//! request path never waits for the disk. The queue's bound is what keeps a
//! slow or failed sink from growing memory: when it is full, or the sink's
//! last write failed, the configured [`Backpressure`] decides.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::{Counter, counter};

use super::record::DecisionEntry;
use super::sink::AuditSink;

/// Records written per batch at most, so one fsync covers a burst.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers records after the first before it writes
/// them: under load, one fsync then covers many decisions instead of one.
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

/// The handle decisions submit their records through.
#[derive(Debug)]
pub struct AuditLog {
    queue: SyncSender<DecisionEntry>,
    shared: Arc<Shared>,
    backpressure: Backpressure,
}

#[derive(Debug)]
struct Shared {
    /// Why the sink's last write failed; cleared by the next success.
    failure: Mutex<Option<String>>,
    dropped: Counter,
    lost: Counter,
}

impl AuditLog {
    /// Starts the writer thread over `sink`, with a queue of `capacity` records.
    pub fn start(sink: AuditSink, capacity: usize, backpressure: Backpressure) -> std::io::Result<Self> {
        crate::metrics::handle();
        let (queue, receiver) = sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            failure: Mutex::new(None),
            dropped: counter!("consentry_audit_dropped_total"),
            lost: counter!("consentry_audit_write_failures_total"),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || write(sink, &receiver, &writer))?;
        Ok(Self { queue, shared, backpressure })
    }

    /// Queues `entry`. `Err` carries the reason the decision must be
    /// denied instead; with `drop-and-count` that never happens.
    pub fn submit(&self, entry: DecisionEntry) -> Result<(), String> {
        let failure = self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let refused = match (failure, self.queue.try_send(entry)) {
            (_, Err(TrySendError::Disconnected(_))) => Some("the audit writer has stopped".to_owned()),
            (Some(failure), _) => Some(format!("the audit log cannot be written: {failure}")),
            (None, Err(TrySendError::Full(_))) => Some("the audit log is falling behind".to_owned()),
            (None, Ok(())) => None,
        };
        match (refused, self.backpressure) {
            (None, _) => Ok(()),
            (Some(_), Backpressure::DropAndCount) => {
                self.shared.dropped.increment(1);
                Ok(())
            }
            (Some(reason), Backpressure::FailClosed) => Err(format!("audit unavailable: {reason}")),
        }
    }
}

/// Drains the queue into the sink until every handle is gone.
fn write(mut sink: AuditSink, receiver: &Receiver<DecisionEntry>, shared: &Shared) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        let count = batch.len();
        let outcome = sink.append(batch);
        let mut failure = shared.failure.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(_) => *failure = None,
            Err(error) => {
                shared.lost.increment(u64::try_from(count).unwrap_or(u64::MAX));
                tracing::error!(%error, records = count, "audit records could not be written");
                *failure = Some(error.to_string());
            }
        }
    }
}
