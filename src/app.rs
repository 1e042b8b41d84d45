//! Wiring of a running lotbridge: metrics and health endpoints, the engine,
//! and the shutdown signal.
//!
//! `/readyz` is ready when every sink owns partitions (or is a standby member of its group)
//! and its credentials passed the last background check, and stops being ready when
//! draining starts.

use crate::config::Loaded;
use crate::engine::sink::Sink;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::vendors::PrepareError;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often each sink's credentials are checked in the background (readiness).
const AUTH_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The longest one credential check may take before it counts as failed.
const AUTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Health as `/readyz` reports it.
#[derive(Default)]
pub struct Health {
    /// False while draining.
    pub serving: AtomicBool,
}

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Arc<Health>,
    engine_ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl ServerState {
    fn ready(&self) -> bool {
        let ready = self.health.serving.load(Ordering::Relaxed) && (self.engine_ready)();
        self.metrics.ready.set(i64::from(ready));
        ready
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn health_router(metrics: Metrics, health: Arc<Health>, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Router {
    async fn metrics_text(State(s): State<ServerState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        s.ready(); // keeps the `ready` gauge current for every scrape
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
    }
    async fn healthz() -> &'static str {
        "ok\n"
    }
    async fn readyz(State(s): State<ServerState>) -> (StatusCode, &'static str) {
        if s.ready() {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health, engine_ready: ready })
}

/// Serves the health router on `addr`.
pub async fn serve_health(addr: &str, router: Router) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(serve_on(bind(addr).await?, router))
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))
}

fn serve_on(listener: tokio::net::TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}

/// Whether every sink can do its work: it owns partitions (or is a standby member of its
/// group, which has none to give it) and its vendor accepts its credentials.
pub struct Readiness {
    sinks: Vec<Arc<Sink>>,
    auth_ok: Vec<AtomicBool>,
    metrics: Metrics,
    last: AtomicBool,
}

impl Readiness {
    /// Readiness of `sinks`; credentials count as unchecked (not ready) until the first check.
    pub fn new(sinks: Vec<Arc<Sink>>, metrics: Metrics) -> Arc<Readiness> {
        let auth_ok = sinks.iter().map(|_| AtomicBool::new(false)).collect();
        Arc::new(Readiness { sinks, auth_ok, metrics, last: AtomicBool::new(false) })
    }

    /// True when every sink has partitions (or joined its group) and working credentials.
    /// Logs when the answer changes, with the first sink that holds readiness back.
    pub fn is_ready(&self) -> bool {
        let blocker = self.sinks.iter().zip(&self.auth_ok).find_map(|(sink, auth)| self.blocker(sink, auth));
        let ready = blocker.is_none();
        if self.last.swap(ready, Ordering::Relaxed) != ready {
            match blocker {
                None => tracing::info!("ready"),
                Some((sink, why)) => tracing::info!(sink, why, "not ready"),
            }
        }
        ready
    }

    /// Why `sink` holds readiness back, if it does.
    fn blocker<'a>(&self, sink: &'a Sink, auth: &AtomicBool) -> Option<(&'a str, &'static str)> {
        if !auth.load(Ordering::Relaxed) {
            Some((sink.name(), "credentials not checked or not accepted"))
        } else if !self.placed(sink) {
            Some((sink.name(), "no partitions and not in its consumer group yet"))
        } else {
            None
        }
    }

    /// Partitions assigned, or a member of a group that has none to give (more replicas
    /// than partitions): such a standby replica is ready and takes over on the next rebalance.
    fn placed(&self, sink: &Sink) -> bool {
        let joined = self.metrics.group_joined.get_metric_with_label_values(&[sink.name()]).is_ok_and(|g| g.get() == 1);
        joined || !sink.partitions.assigned().is_empty()
    }

    /// Checks every sink's credentials once (concurrently) and records the results.
    pub async fn check_auth(&self) {
        let results = futures::future::join_all(self.sinks.iter().map(|sink| check_one(sink))).await;
        for ((sink, auth), result) in self.sinks.iter().zip(&self.auth_ok).zip(results) {
            self.record(sink, auth, result);
        }
    }

    fn record(&self, sink: &Sink, auth: &AtomicBool, result: AuthCheck) {
        let name = sink.name();
        let ok = result == AuthCheck::Ok;
        auth.store(ok, Ordering::Relaxed);
        self.metrics.auth_checks.with_label_values(&[name, result.as_str()]).inc();
        self.metrics.auth_ok.with_label_values(&[name]).set(i64::from(ok));
        // The engine raises this gauge on a refused token; only a good check lowers it again.
        if result != AuthCheck::Unavailable {
            self.metrics.credentials_rejected.with_label_values(&[name]).set(i64::from(!ok));
        }
    }

    /// Checks credentials every 30 s, forever (abort the task to stop).
    pub async fn run_auth_checks(self: Arc<Self>) {
        let mut tick = tokio::time::interval(AUTH_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_auth().await;
        }
    }
}

/// The result of one credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthCheck {
    /// A token (or nothing) was needed and obtained.
    Ok,
    /// The token endpoint failed or did not answer in time: maybe temporary.
    Unavailable,
    /// The vendor refused the credentials: an operator must act.
    Rejected,
}

impl AuthCheck {
    fn as_str(self) -> &'static str {
        match self {
            AuthCheck::Ok => "ok",
            AuthCheck::Unavailable => "unavailable",
            AuthCheck::Rejected => "rejected",
        }
    }
}

async fn check_one(sink: &Sink) -> AuthCheck {
    match tokio::time::timeout(AUTH_CHECK_TIMEOUT, sink.adapter.check_auth()).await {
        Ok(Ok(())) => AuthCheck::Ok,
        Ok(Err(PrepareError::AuthRejected(_))) => AuthCheck::Rejected,
        Ok(Err(e)) => {
            tracing::warn!(sink = sink.name(), error = %e, "credential check failed");
            AuthCheck::Unavailable
        }
        Err(_) => {
            tracing::warn!(sink = sink.name(), "credential check timed out");
            AuthCheck::Unavailable
        }
    }
}

/// The running health endpoints of an engine and its background credential checks;
/// stops both when dropped.
pub struct HealthServer {
    /// Set `serving` to false when draining starts.
    pub health: Arc<Health>,
    /// What `/readyz` reports.
    pub readiness: Arc<Readiness>,
    /// Where it listens (the real port when asked for port 0).
    pub addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HealthServer {
    /// Serves `/metrics`, `/healthz` and `/readyz` for `sinks` on `addr`.
    pub async fn start(addr: &str, metrics: Metrics, sinks: Vec<Arc<Sink>>) -> anyhow::Result<HealthServer> {
        sinks.iter().for_each(|s| metrics.init_sink(s.name()));
        let health = Arc::new(Health { serving: AtomicBool::new(true) });
        let readiness = Readiness::new(sinks, metrics.clone());
        let probe = readiness.clone();
        let router = health_router(metrics, health.clone(), Arc::new(move || probe.is_ready()));
        let listener = bind(addr).await?;
        let addr = listener.local_addr().context("metrics listener address")?;
        let server = serve_on(listener, router);
        let checks = tokio::spawn(readiness.clone().run_auth_checks());
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(HealthServer { health, readiness, addr, tasks: vec![server, checks] })
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Runs the engine of a loaded configuration until `shutdown`.
pub async fn run(loaded: Loaded, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("metrics")?;
    let listen = loaded.config.metrics.listen.clone();
    let engine = Engine::new(loaded, metrics.clone())?;
    let server = HealthServer::start(&listen, metrics, engine.sinks().to_vec()).await?;
    let draining = server.health.clone();
    engine
        .run(async move {
            shutdown.await;
            draining.serving.store(false, Ordering::Relaxed);
        })
        .await?;
    drop(server);
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
