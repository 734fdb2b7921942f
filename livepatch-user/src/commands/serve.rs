//! `klpscope serve`: watch's live feed and state, with an HTTP server beside
//! them that answers Prometheus's scrapes of `/metrics`. The feed keeps
//! running between scrapes, so that a transition that comes and goes, or a
//! reversal, is counted even when no scrape saw it.
use std::{future::IntoFuture, path::Path, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    analysis::fleet_metrics::{FleetMetrics, LiveExport},
    cli::ServeArgs,
    commands::{output, stop_signals::StopSignals},
    feed::{feed_thread::FeedThread, transition_feed::TransitionFeed},
    kernel::read_kernel,
    views::exposition,
};

/// The latest metrics; None until the feed's first round is in.
type Exported = watch::Receiver<Option<Arc<FleetMetrics>>>;

pub fn run(root: &Path, args: &ServeArgs) -> Result<ExitCode> {
    super::block_on(serve(root, args))
}

async fn serve(root: &Path, args: &ServeArgs) -> Result<ExitCode> {
    // A small, sparse heap for long: with transparent huge pages each
    // touched 2 MB of it would count whole. Not worth failing for.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    let (publish, exported) = watch::channel(None);
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(exported);
    let server = axum::serve(listener, router).into_future();
    tokio::pin!(server);
    let mut signals = StopSignals::new().context("installing signal handlers")?;
    output::note(&format!("serving metrics on http://{address}/metrics"));

    let kernel = read_kernel(root);
    if !kernel.livepatch_supported {
        // No transition can ever come: the support metric is the news.
        let unsupported = FleetMetrics::without_transition(&kernel, None, &[]);
        publish.send_replace(Some(Arc::new(unsupported)));
        return tokio::select! {
            result = &mut server => result.context("serving HTTP"),
            _ = signals.recv() => Ok(()),
        }
        .map(|()| ExitCode::SUCCESS);
    }

    let mut feed = FeedThread::start(TransitionFeed::open(root, args.no_ebpf)?)?;
    if let Some(reason) = &feed.capabilities.polling {
        output::note(&format!(
            "eBPF unavailable ({reason}): following transitions by polling /proc and /sys"
        ));
    }
    let mut export = LiveExport::new(kernel);
    loop {
        tokio::select! {
            round = feed.next() => {
                export.apply(round?);
                publish.send_replace(Some(Arc::new(export.metrics(&feed.capabilities))));
            }
            result = &mut server => {
                result.context("serving HTTP")?;
                return Ok(ExitCode::SUCCESS);
            }
            // A service stopped the usual way: not a failure.
            _ = signals.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn scrape(State(exported): State<Exported>) -> Response {
    let Some(metrics) = exported.borrow().clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "klpscope serve: the first poll is not done yet\n",
        )
            .into_response();
    };
    match exposition::render(&metrics, env!("CARGO_PKG_VERSION")) {
        Ok(text) => ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("klpscope serve: cannot encode the metrics: {error}\n"),
        )
            .into_response(),
    }
}
