//! Serving one listener with bounds: a connection cap, a header-read (and
//! keep-alive idle) timeout, a cap on header bytes, and the descriptor
//! budget that keeps Git and the providers able to open sockets while a
//! client floods the HTTP port.
//!
//! # Guarantees
//! - At most `max_connections` connections of one listener are open at
//!   once. At the cap the loop stops calling `accept` (it does not accept
//!   and drop): further clients wait in the kernel's backlog, and no
//!   descriptor is spent on them.
//! - A connection that has not sent a whole request head within
//!   `header_read_timeout` (the first one, or the next one on a kept-alive
//!   connection) is closed by hyper.
//! - A request head larger than [`MAX_HEAD_BYTES`] is refused.
//!
//! # Descriptors
//! [`descriptor_budget`] raises the soft `RLIMIT_NOFILE` to the hard one
//! and checks that both listeners' caps leave [`RESERVED_DESCRIPTORS`]
//! free for Git (packs, sockets), the Kubernetes and EC2 clients, state
//! files and the runtime.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::Error;

/// Descriptors kept free for everything but the HTTP listeners.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The most bytes a request head (request line and headers) may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Default cap on the API listener's connections (lowered to fit the
/// descriptor budget when the limit is small).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; at the cap the listener stops accepting.
    pub max_connections: usize,
    /// Time a client has to send a whole request head; also how long a
    /// kept-alive connection may sit idle between requests.
    pub header_read_timeout: Duration,
}

/// Raises the soft descriptor limit to the hard one and returns the API
/// listener's connection cap: `requested`, or the default lowered to what
/// fits. An explicit `requested` that does not fit is an error.
pub fn descriptor_budget(requested: Option<usize>, probe_max: usize) -> Result<usize, Error> {
    let soft = rlimit::increase_nofile_limit(u64::MAX).map_err(Error::Rlimit)?;
    budget(soft, requested, probe_max)
}

/// [`descriptor_budget`] at a given soft limit.
fn budget(soft: u64, requested: Option<usize>, probe_max: usize) -> Result<usize, Error> {
    let fits = soft
        .saturating_sub(RESERVED_DESCRIPTORS)
        .saturating_sub(probe_max as u64);
    let cap = match requested {
        Some(n) => n as u64,
        None => fits.min(DEFAULT_MAX_CONNECTIONS as u64),
    };
    if cap == 0 || cap > fits {
        return Err(Error::Descriptors {
            soft,
            api: cap,
            probe: probe_max as u64,
            reserved: RESERVED_DESCRIPTORS,
        });
    }
    Ok(cap as usize)
}

/// Serves `router` on `listener` within `limits` until `stop` turns true;
/// then stops accepting, asks open connections to finish their request in
/// flight and close, and waits for them at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    name: &'static str,
    stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    loop {
        // A permit first: at the cap nothing is accepted.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(stop.clone()) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => break,
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|r: http::Request<Incoming>| r.map(axum::body::Body::new)),
        );
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let stop = stopped(stop.clone());
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, error = %e, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, permits.acquire_many(all)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_fits_the_descriptor_limit() {
        assert_eq!(budget(1_048_576, None, 32).unwrap(), 512);
        // 1024 - 256 reserved - 32 probe = 736: the default 512 fits.
        assert_eq!(budget(1024, None, 32).unwrap(), 512);
        // 512 - 256 - 32 = 224.
        assert_eq!(budget(512, None, 32).unwrap(), 224);
        assert_eq!(budget(1024, Some(736), 32).unwrap(), 736);
    }

    #[test]
    fn a_cap_that_leaves_no_reserve_is_refused() {
        let e = budget(1024, Some(737), 32).unwrap_err().to_string();
        assert!(e.contains("1024") && e.contains("737"), "{e}");
        assert!(budget(280, None, 32).is_err(), "nothing left for the API");
    }
}
