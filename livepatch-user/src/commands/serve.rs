//! `klpscope serve`: watch's live feed and state, with an HTTP server beside
//! them that answers Prometheus's scrapes of `/metrics`. The feed keeps
//! running between scrapes, so that a transition that comes and goes, or a
//! reversal, is counted even when no scrape saw it.
use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

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
    analysis::{
        fleet_metrics::{FleetMetrics, LiveExport},
        transition_tracker::TransitionEvent,
    },
    cli::ServeArgs,
    commands::{
        live_driver::{LiveDriver, Stop, StoppingRule, block_on},
        live_output::LiveOutput,
        metrics_listener::{self, ConnectionLimits},
        output,
        stop_signals::StopSignals,
    },
    exit_code,
    kernel::read_kernel,
    views::exposition,
};

/// The latest metrics; None until the feed's first round is in.
type Exported = watch::Receiver<Option<Arc<FleetMetrics>>>;

pub fn run(root: &Path, args: &ServeArgs) -> Result<ExitCode> {
    block_on(serve(root, args))
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
    let limits = ConnectionLimits {
        connections: usize::from(args.max_connections),
        header_timeout: Duration::from_secs_f64(args.header_timeout),
    };
    let server = metrics_listener::answer(listener, router, limits);
    tokio::pin!(server);
    output::note(&format!("serving metrics on http://{address}/metrics"));
    if !address.ip().is_loopback() {
        output::note(&format!(
            "{address} is reachable beyond this host, without TLS or authentication: \
             anyone who can connect reads the metrics (see Fleet metrics in the README \
             for a reverse proxy)"
        ));
    }

    let kernel = read_kernel(root);
    if !kernel.livepatch.is_supported() {
        // No transition can ever come: the support metric is the news.
        let unsupported = FleetMetrics::without_transition(&kernel, None, &[]);
        publish.send_replace(Some(Arc::new(unsupported)));
        let mut signals = StopSignals::new().context("installing signal handlers")?;
        tokio::select! {
            () = &mut server => {}
            _ = signals.recv() => {}
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut driver = LiveDriver::start(root, args.no_ebpf)?;
    let capabilities = driver.capabilities().clone();
    let mut output = LiveOutput::metrics(LiveExport::new(kernel), publish, capabilities);
    let mut rule = UntilStopped;
    tokio::select! {
        code = driver.run(&mut rule, &mut output) => Ok(ExitCode::from(code?)),
        () = &mut server => Ok(ExitCode::SUCCESS),
    }
}

/// serve runs until a signal: a service stopped the usual way, not a
/// failure.
struct UntilStopped;

impl StoppingRule for UntilStopped {
    async fn on_events(
        &mut self,
        _events: &[TransitionEvent],
        _output: &mut LiveOutput,
    ) -> Result<Option<u8>> {
        Ok(None)
    }

    async fn on_stop(&mut self, _stop: Stop, _output: &mut LiveOutput) -> Result<Option<u8>> {
        Ok(Some(exit_code::SUCCESS))
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
