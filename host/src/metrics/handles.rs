//! Each thread's handles of the labelled metrics that every request moves.
//!
//! `counter!(NAME, labels…)` builds a key (a vector of labels), hashes it
//! and looks it up in the recorder's registry at every call, several times
//! per request. The label sets here are small and fixed: an API and an
//! outcome, a cache, a route template with its method and status. So each
//! thread keeps the handles it has used, found by a cheap hash, and asks
//! the registry once per label set. Handles are kept only once the
//! recorder is installed: one taken from the no-op recorder before that
//! would stay a no-op.

use std::cell::RefCell;
use std::collections::HashMap;

use foldhash::fast::FixedState;
use metrics::{Counter, Histogram, counter, histogram};

use super::{
    Api, CACHE_HITS, CACHE_MISSES, Cache, DECISION_DURATION, DECISIONS, HTTP_DURATION, HTTP_REQUESTS,
};

/// A counter whose labels are all fixed names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Counted {
    /// A decision under an API, by outcome.
    Decision(Api, &'static str),
    /// Hits of a cache.
    CacheHits(Cache),
    /// Misses of a cache.
    CacheMisses(Cache),
}

/// The handles of one route: its duration, and its answers by method and status.
struct RouteHandles {
    duration: Histogram,
    answers: Vec<(&'static str, u16, Counter)>,
}

thread_local! {
    static COUNTERS: RefCell<HashMap<Counted, Counter, FixedState>> = RefCell::default();
    static DECISION_DURATIONS: RefCell<HashMap<Api, Histogram, FixedState>> = RefCell::default();
    static ROUTES: RefCell<HashMap<Box<str>, RouteHandles, FixedState>> = RefCell::default();
}

fn installed() -> bool {
    matches!(super::HANDLE.get(), Some(Some(_)))
}

impl Counted {
    fn register(self) -> Counter {
        match self {
            Self::Decision(api, outcome) => counter!(DECISIONS, "api" => api.name(), "outcome" => outcome),
            Self::CacheHits(cache) => counter!(CACHE_HITS, "cache" => cache.name()),
            Self::CacheMisses(cache) => counter!(CACHE_MISSES, "cache" => cache.name()),
        }
    }

    /// Adds `by` to the counter.
    pub(super) fn increment(self, by: u64) {
        if !installed() {
            return self.register().increment(by);
        }
        COUNTERS.with_borrow_mut(|counters| {
            counters.entry(self).or_insert_with(|| self.register()).increment(by)
        });
    }
}

/// Records how long a decision request under `api` took, in seconds.
pub(super) fn decision_duration(api: Api, seconds: f64) {
    let register = || histogram!(DECISION_DURATION, "api" => api.name());
    if !installed() {
        return register().record(seconds);
    }
    DECISION_DURATIONS
        .with_borrow_mut(|durations| durations.entry(api).or_insert_with(register).record(seconds));
}

/// Counts one answer of `route` and records its duration, in seconds.
pub(super) fn http_request(route: &str, method: &'static str, status: u16, seconds: f64) {
    let answered = || counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string());
    if !installed() {
        answered().increment(1);
        histogram!(HTTP_DURATION, "route" => route.to_owned()).record(seconds);
        return;
    }
    ROUTES.with_borrow_mut(|routes| {
        if !routes.contains_key(route) {
            let duration = histogram!(HTTP_DURATION, "route" => route.to_owned());
            routes.insert(route.into(), RouteHandles { duration, answers: Vec::new() });
        }
        let Some(handles) = routes.get_mut(route) else { return };
        handles.duration.record(seconds);
        match handles.answers.iter().find(|(m, s, _)| *m == method && *s == status) {
            Some((_, _, counter)) => counter.increment(1),
            None => {
                let counter = answered();
                counter.increment(1);
                handles.answers.push((method, status, counter));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find(|line| line.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
    }

    #[test]
    fn kept_handles_count_each_label_set_apart() {
        assert!(super::super::handle().is_some());
        for status in [200, 200, 404] {
            http_request("/handles-test/{id}", "GET", status, 0.001);
        }
        http_request("/handles-test/{id}", "POST", 200, 0.001);
        Counted::CacheHits(Cache::Tokens).increment(2);
        Counted::CacheHits(Cache::Tokens).increment(3);
        let text = super::super::render();
        let answers = |method: &str, status: u16| {
            let labels = format!(r#"route="/handles-test/{{id}}",method="{method}",status="{status}""#);
            value(&text, &format!("{HTTP_REQUESTS}{{{labels}}}"))
        };
        assert_eq!(answers("GET", 200), Some(2.0), "{text}");
        assert_eq!(answers("GET", 404), Some(1.0), "{text}");
        assert_eq!(answers("POST", 200), Some(1.0), "{text}");
        let count = format!(r#"{HTTP_DURATION}_count{{route="/handles-test/{{id}}"}}"#);
        assert_eq!(value(&text, &count), Some(4.0), "{text}");
        assert!(
            value(&text, &format!(r#"{CACHE_HITS}{{cache="tokens"}}"#)).is_some_and(|v| v >= 5.0),
            "{text}"
        );
    }
}
