//! The open connections, over all listeners: how many there may be, which
//! are idle, and which to close to make room.
//!
//! A connection is idle while no request on it is being answered. Idle
//! connections cost a file each and nothing else, so when the cap is
//! reached the one idle the longest is closed to make room for the new one:
//! clients that open connections and send nothing, or half a request, can
//! then never lock out the clients that ask for decisions. Only when every
//! connection is busy is a new one refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The open connections and the cap on them.
#[derive(Debug)]
pub struct Connections {
    limit: usize,
    /// What activity times are measured from.
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// What one connection is doing, shared by its task, its I/O and the registry.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Set once the connection was chosen to make room, so that it is not chosen twice.
    evicting: AtomicBool,
    /// Woken when the connection must close to make room.
    evict: Notify,
}

/// A connection's place in the registry, given up when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    /// What the connection is doing.
    pub activity: Arc<Activity>,
}

/// Counts a request as being answered while it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Connections {
    /// A registry that admits up to `limit` connections at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap on open connections.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Admits a new connection, closing the connection idle the longest if
    /// the cap is reached; `None` when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.lock();
        let evicting = open.values().filter(|a| a.evicting.load(Ordering::Acquire)).count();
        if open.len() - evicting >= self.limit && !Self::evict_longest_idle(&open) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        });
        activity.touch();
        open.insert(id, Arc::clone(&activity));
        Some(Slot { connections: Arc::clone(self), id, activity })
    }

    /// Closes the connection idle the longest, to free its file when the
    /// process has none left; whether there was one.
    pub fn evict_one_idle(&self) -> bool {
        Self::evict_longest_idle(&self.lock())
    }

    fn evict_longest_idle(open: &HashMap<u64, Arc<Activity>>) -> bool {
        let victim = open
            .values()
            .filter(|a| a.in_flight.load(Ordering::Acquire) == 0 && !a.evicting.load(Ordering::Acquire))
            .min_by_key(|a| a.last.load(Ordering::Relaxed));
        let Some(victim) = victim else { return false };
        victim.evicting.store(true, Ordering::Release);
        victim.evict.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Activity {
    /// Notes that a byte was read or written now.
    pub fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Counts a request as being answered until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// When the connection will have been idle for `timeout`, if nothing
    /// happens meanwhile: a busy connection is looked at again after `timeout`.
    pub fn idle_deadline(&self, timeout: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return now + timeout;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        let idle_for = self.epoch.elapsed().saturating_sub(last);
        now + timeout.saturating_sub(idle_for)
    }

    /// Whether no request is being answered and nothing was read or written
    /// for `timeout`.
    pub fn is_idle_for(&self, timeout: Duration) -> bool {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Acquire) == 0 && self.epoch.elapsed().saturating_sub(last) >= timeout
    }

    /// Resolves when the connection must close to make room for another.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_connection_idle_the_longest_makes_room() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = connections.admit().unwrap();
        let _third = connections.admit().unwrap();
        assert!(first.activity.evicting.load(Ordering::Acquire), "the oldest idle one is closed");
        assert!(!second.activity.evicting.load(Ordering::Acquire));
        drop(first);
        assert_eq!(connections.open(), 2);
    }

    #[test]
    fn when_every_connection_is_busy_a_new_one_is_refused() {
        let connections = Connections::new(1);
        let busy = connections.admit().unwrap();
        let _request = busy.activity.begin_request();
        assert!(connections.admit().is_none());
        assert!(!connections.evict_one_idle());
    }

    #[test]
    fn a_connection_is_idle_only_without_requests() {
        let connections = Connections::new(1);
        let slot = connections.admit().unwrap();
        let request = slot.activity.begin_request();
        assert!(!slot.activity.is_idle_for(Duration::ZERO));
        drop(request);
        assert!(slot.activity.is_idle_for(Duration::ZERO));
        assert!(!slot.activity.is_idle_for(Duration::from_secs(60)));
    }
}
