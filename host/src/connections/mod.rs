//! Serving connections: how long a client may take, how many connections
//! may be open, and what happens when the process runs out of files.
//!
//! `axum::serve` accepts every connection and keeps it for as long as the
//! client likes, so clients that open connections and send nothing, or
//! half a request, used to hold a file each until the process had none
//! left and every decision timed out (issue 13, finding 11). Here each
//! connection has a deadline for its request head (`listen.header_timeout`,
//! the TLS handshake included), for each request body
//! (`listen.body_timeout`) and for idling between requests
//! (`listen.idle_timeout`). The number of connections is capped
//! (`listen.max_connections`, lowered to what the open-file limit allows):
//! at the cap the connection idle the longest is closed to make room, so
//! idle connections can never lock out a client that asks for a decision.
//! An accept that fails for lack of files frees one the same way and backs
//! off, with a warning at most every few seconds, instead of spinning.

pub mod io;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics::counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use self::io::{DeadlineBody, Tracked};
pub use self::registry::Connections;
use self::registry::Slot;
use crate::config::ListenConfig;

/// How long a connection asked to close (idle, or making room) may take
/// to finish before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The first and the longest pause after an accept that failed for lack of
/// files or memory.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the same warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The time limits of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// For the request head, and for the TLS handshake.
    pub header: Duration,
    /// For each request body, from the end of its head.
    pub body: Duration,
    /// For idling between requests.
    pub idle: Duration,
}

impl From<&ListenConfig> for Deadlines {
    fn from(listen: &ListenConfig) -> Self {
        Self { header: listen.header_timeout, body: listen.body_timeout, idle: listen.idle_timeout }
    }
}

/// Marks a request that came over TLS, for what the server says about its
/// own URL (the AuthZEN metadata without `--public-url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverTls;

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Nothing was asked of it for `listen.idle_timeout`.
    Idle,
    /// It was idle the longest when the cap was reached or files ran out.
    Evicted,
    /// The server is stopping.
    Stopping,
}

impl Close {
    fn reason(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Evicted => "evicted",
            Self::Stopping => "stopping",
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stopped` turns
/// true, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    connections: Arc<Connections>,
    deadlines: Deadlines,
    mut stopped: watch::Receiver<bool>,
) {
    // Every connection task holds a sender; `recv` returns once all are gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut backoff = FIRST_BACKOFF;
    let mut warning = Warning::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = FIRST_BACKOFF;
                stream
            }
            Err(error) if is_about_one_connection(&error) => continue,
            Err(error) => {
                // Out of files (EMFILE) most often: closing the connection
                // idle the longest frees one for the clients still waiting.
                let evicted = connections.evict_one_idle();
                warning.log(|suppressed| {
                    tracing::warn!(%error, evicted, suppressed, "cannot accept connections; backing off");
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(slot) = connections.admit() else {
            counter!("consentry_connections_refused_total").increment(1);
            warning.log(|suppressed| {
                tracing::warn!(
                    limit = connections.limit(),
                    suppressed,
                    "every connection is answering a request; refusing new ones (`listen.max_connections`)"
                );
            });
            continue;
        };
        // Decisions are small answers; waiting to fill a segment only adds latency.
        let _ = stream.set_nodelay(true);
        let task = connection(stream, app.clone(), tls.clone(), slot, deadlines, stopped.clone());
        let alive = alive.clone();
        tokio::spawn(async move {
            task.await;
            drop(alive);
        });
    }
    drop(alive);
    let _ = all_closed.recv().await;
}

/// Serves one connection, after its TLS handshake if there is one.
async fn connection(
    stream: TcpStream,
    app: Router,
    tls: Option<TlsAcceptor>,
    slot: Slot,
    deadlines: Deadlines,
    stopped: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else { return serve_io(stream, false, app, slot, deadlines, stopped).await };
    // A client that never finishes its handshake holds a file as long as
    // one that never sends its headers, so it has the same deadline.
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(deadlines.header, acceptor.accept(stream)) => handshake,
        () = slot.activity.evicted() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_io(stream, true, app, slot, deadlines, stopped).await,
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake not finished within `listen.header_timeout`"),
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io` (a TLS stream if `over_tls`) until
/// the client closes it, it idles too long, it must make room, or the
/// server stops.
async fn serve_io<T>(
    io: T,
    over_tls: bool,
    app: Router,
    slot: Slot,
    deadlines: Deadlines,
    mut stopped: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&slot.activity);
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.begin_request();
            let mut request =
                request.map(|body| axum::body::Body::new(DeadlineBody::new(body, deadlines.body)));
            if over_tls {
                request.extensions_mut().insert(OverTls);
            }
            let answered = app.clone().oneshot(request);
            async move {
                let response = answered.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(deadlines.header);
    builder.http2().timer(TokioTimer::new());
    let served = builder.serve_connection(TokioIo::new(Tracked::new(io, Arc::clone(&activity))), service);
    tokio::pin!(served);
    let close = loop {
        let idle = tokio::time::sleep_until(activity.idle_deadline(deadlines.idle));
        tokio::select! {
            outcome = served.as_mut() => {
                if let Err(error) = outcome {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.evicted() => break Close::Evicted,
            () = idle => if activity.is_idle_for(deadlines.idle) { break Close::Idle },
            _ = stopped.wait_for(|stop| *stop) => break Close::Stopping,
        }
    };
    counter!("consentry_connections_closed_total", "reason" => close.reason()).increment(1);
    served.as_mut().graceful_shutdown();
    if close == Close::Stopping {
        // Open requests finish, however long they take, as before.
        let _ = served.await;
    } else {
        let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
    }
    drop(slot);
}

/// Whether an accept error concerns only the connection being accepted,
/// so the next accept may be tried at once.
fn is_about_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
    )
}

/// A warning logged at most every [`WARN_EVERY`], with the number of times
/// it was suppressed since: a flood must not also flood the log.
#[derive(Debug, Default)]
struct Warning {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warning {
    fn log(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| last.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.suppressed = 0;
        self.last = Some(Instant::now());
    }
}
