//! serve's side facing the network: it runs for months on every host of a
//! fleet, reachable by anyone who can reach the port, so no client may hold
//! more than a share of it. Connections are counted and capped, a client
//! has a deadline for each request's headers (which closes idle and
//! slowloris connections alike), each connection's buffer is small, and
//! running out of descriptors makes it refuse connections for a while,
//! never exit: the feed needs descriptors too, and goes on.
use std::{io, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, time::sleep};

use crate::commands::output;

/// What one client may take of serve.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections held at once.
    pub connections: usize,
    /// From connecting, or from the last response, to a request's last
    /// header line.
    pub header_timeout: Duration,
}

/// The read buffer a connection may grow to: a scrape's request is a few
/// hundred bytes; hyper answers longer headers with 431. (Its default is
/// about 400 kB, which 5,000 half-sent requests turned into 90 MB.)
const READ_BUFFER_MAX: usize = 16 * 1024;
/// Headers per request; Prometheus sends about five.
const HEADERS_MAX: usize = 32;
/// The longest a connection lives, whatever it does (a body sent a byte at
/// a time, a response never read): a scraper opens a new one.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long accepting pauses when the process or the system is out of
/// descriptors or memory: connections wait in the backlog meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Answers `router`'s routes on `listener` until dropped; it never ends on
/// its own.
pub async fn answer(listener: TcpListener, router: Router, limits: ConnectionLimits) {
    let held = Arc::new(Semaphore::new(limits.connections));
    let mut said_full = false;
    let mut said_exhausted = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) if out_of_resources(&error) => {
                if !std::mem::replace(&mut said_exhausted, true) {
                    output::note(&format!(
                        "cannot accept connections ({error}): refusing them until some close; \
                         the metrics are still kept up to date"
                    ));
                }
                sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            // The client's own failure (ECONNABORTED, a firewall's EPERM).
            Err(_) => continue,
        };
        let Ok(permit) = held.clone().try_acquire_owned() else {
            if !std::mem::replace(&mut said_full, true) {
                output::note(&format!(
                    "{} connections open (--max-connections): closing new ones until some end",
                    limits.connections
                ));
            }
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(READ_BUFFER_MAX)
                .max_headers(HEADERS_MAX)
                .serve_connection(TokioIo::new(stream), service);
            // A client that broke the rules is simply gone: nothing to say.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

/// Errors of the process or the system, not of the client: accepting again
/// at once would spin.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
