//! Vendor simulators: the four platforms served on 127.0.0.1 as strictly as their specs
//! allow, for tests, the demo and users who want to try a configuration.
//!
//! This module holds what every simulator shares: scriptable faults, the record of what
//! was accepted, issued tokens, and a server that can refuse connections for a while.
//! Each vendor's endpoints, checks and codes live in `sim/<vendor>.rs`.
//!
//! Every simulator also serves `GET /_sim/records`, `GET /_sim/requests` and
//! `POST /_sim/faults` (a [`FaultRequest`] as JSON) so the demo and a user with `curl`
//! can watch and script it.

pub mod barrier;
pub mod bingzhouxing;
pub mod isp;
pub mod zvcms;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A failure to inject into the next calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Answer with this HTTP status (the vendor's usual error body).
    Status(u16),
    /// Answer HTTP 200 with this vendor code in the body.
    Code(String),
}

/// What a handler must do instead of its normal work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// Answer with this failure.
    Fail(Failure),
    /// Answer 429 with `Retry-After` in seconds.
    Throttle(u64),
}

/// One record the simulator accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Endpoint label (`carInOut`, `park/spot-num`, ...).
    pub endpoint: String,
    /// Vendor-side lot code the record was sent for.
    pub lot: String,
    /// The record as the vendor received it.
    pub record: serde_json::Value,
}

/// One request the simulator answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Endpoint label.
    pub endpoint: String,
    /// HTTP status sent back.
    pub status: u16,
    /// Vendor code sent back, if any.
    pub code: Option<String>,
    /// Records in the request (accepted or not).
    pub records: usize,
    /// When it was answered (Unix milliseconds), so tests can check waits between attempts.
    #[serde(default)]
    pub at_ms: i64,
}

/// A fault script as accepted by `POST /_sim/faults`; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Fail the next `n` calls with a status or code.
    pub fail_next: Option<FailNext>,
    /// Add this latency to every call from now on (0 to clear).
    pub latency_ms: Option<u64>,
    /// Answer the next `n` calls with 429 and `Retry-After`.
    pub throttle: Option<Throttle>,
    /// Refuse connections for this many seconds.
    pub refuse_secs: Option<u64>,
    /// Expire every issued token now.
    #[serde(default)]
    pub expire_tokens: bool,
    /// Revoke the client credentials for this many seconds: every token expires and the
    /// token endpoint answers `invalid_client` until the period ends (a rotated secret).
    pub revoke_credentials_secs: Option<u64>,
}

/// `fail_next` of a [`FaultRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailNext {
    /// How many calls.
    pub n: usize,
    /// With what.
    pub failure: Failure,
}

/// `throttle` of a [`FaultRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// How many calls.
    pub n: usize,
    /// `Retry-After` seconds.
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
struct FaultState {
    failures: VecDeque<Failure>,
    throttles: VecDeque<u64>,
    latency: Duration,
    refuse: Option<Duration>,
    revoked_until: Option<Instant>,
}

/// Shared state of one simulator: faults, recorded records and requests, tokens.
#[derive(Debug, Default)]
pub struct Control {
    faults: Mutex<FaultState>,
    records: Mutex<Vec<Recorded>>,
    requests: Mutex<Vec<RequestLog>>,
    envelopes: Mutex<Vec<String>>,
    /// Keys of records received again after they were accepted (platforms that know a
    /// record's identity: Bingzhouxing's `carInOut`).
    again: Mutex<std::collections::HashSet<String>>,
    tokens: Mutex<HashMap<String, Instant>>,
    refuse: Notify,
    /// Seconds added to the `Date` header of every answer (a vendor with a wrong clock).
    date_offset_secs: std::sync::atomic::AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Control {
    /// A fresh control.
    pub fn new() -> Arc<Self> {
        Arc::new(Control::default())
    }

    /// Fails the next `n` calls with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        lock(&self.faults).failures.extend(std::iter::repeat_n(failure, n));
    }

    /// Drops every queued failure and throttle (the fault is fixed).
    pub fn clear_faults(&self) {
        let mut faults = lock(&self.faults);
        faults.failures.clear();
        faults.throttles.clear();
    }

    /// Answers the next `n` calls with 429 and `Retry-After: secs`.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        lock(&self.faults).throttles.extend(std::iter::repeat_n(retry_after_secs, n));
    }

    /// Shifts the `Date` header of every answer by `secs` (negative: behind), as a vendor
    /// whose clock is off would send it; 0 restores the true time.
    pub fn set_date_offset(&self, secs: i64) {
        self.date_offset_secs.store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds `latency` to every call from now on.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.faults).latency = latency;
    }

    /// Closes the listener for `period`: clients get "connection refused".
    pub fn refuse_for(&self, period: Duration) {
        lock(&self.faults).refuse = Some(period);
        self.refuse.notify_one();
    }

    /// Applies a fault script.
    pub fn apply(&self, req: &FaultRequest) {
        if let Some(f) = &req.fail_next {
            self.fail_next(f.n, f.failure.clone());
        }
        if let Some(ms) = req.latency_ms {
            self.set_latency(Duration::from_millis(ms));
        }
        if let Some(t) = &req.throttle {
            self.throttle_next(t.n, t.retry_after_secs);
        }
        if let Some(secs) = req.refuse_secs {
            self.refuse_for(Duration::from_secs(secs));
        }
        if req.expire_tokens {
            self.expire_tokens();
        }
        if let Some(secs) = req.revoke_credentials_secs {
            self.revoke_credentials_for(Duration::from_secs(secs));
        }
    }

    /// Expires every token and refuses the credentials (`invalid_client`) for `period`.
    pub fn revoke_credentials_for(&self, period: Duration) {
        self.expire_tokens();
        lock(&self.faults).revoked_until = Some(Instant::now() + period);
    }

    /// Whether the token endpoint must refuse even correct credentials now.
    pub fn credentials_revoked(&self) -> bool {
        lock(&self.faults).revoked_until.is_some_and(|until| Instant::now() < until)
    }

    /// Called first by every vendor handler: waits the scripted latency, then says whether
    /// to answer with an injected failure instead.
    pub async fn before(&self) -> Option<Injected> {
        let latency = lock(&self.faults).latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut faults = lock(&self.faults);
        if let Some(secs) = faults.throttles.pop_front() {
            return Some(Injected::Throttle(secs));
        }
        faults.failures.pop_front().map(Injected::Fail)
    }

    /// Issues a token valid for `lifetime`.
    pub fn issue_token(&self, lifetime: Duration) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        lock(&self.tokens).insert(token.clone(), Instant::now() + lifetime);
        token
    }

    /// Whether `token` was issued here and has not expired.
    pub fn token_valid(&self, token: &str) -> bool {
        lock(&self.tokens).get(token).is_some_and(|exp| Instant::now() < *exp)
    }

    /// Expires every issued token.
    pub fn expire_tokens(&self) {
        lock(&self.tokens).clear();
    }

    /// Records an accepted record.
    pub fn record(&self, endpoint: &str, lot: &str, record: serde_json::Value) {
        lock(&self.records).push(Recorded { endpoint: endpoint.to_string(), lot: lot.to_string(), record });
    }

    /// Logs an answered request.
    pub fn log_request(&self, endpoint: &str, status: u16, code: Option<&str>, records: usize) {
        lock(&self.requests).push(RequestLog {
            endpoint: endpoint.to_string(),
            status,
            code: code.map(str::to_string),
            records,
            at_ms: now_millis(),
        });
    }

    /// Notes the signing envelope of a request as received (e.g. Bingzhouxing `ts` and
    /// `auth`), whatever the answer, so tests can check each attempt was signed anew.
    pub fn note_envelope(&self, envelope: String) {
        lock(&self.envelopes).push(envelope);
    }

    /// The envelopes noted so far, in arrival order.
    pub fn envelopes(&self) -> Vec<String> {
        lock(&self.envelopes).clone()
    }

    /// Notes a record received again after it was accepted, by its identity.
    pub fn note_received_again(&self, key: &str) {
        lock(&self.again).insert(key.to_string());
    }

    /// How many distinct accepted records were received again (however often, and
    /// whatever the answer: a strict platform refuses a batch holding one with `1004`).
    pub fn received_again(&self) -> usize {
        lock(&self.again).len()
    }

    /// Every accepted record so far.
    pub fn records(&self) -> Vec<Recorded> {
        lock(&self.records).clone()
    }

    /// Accepted records of one endpoint.
    pub fn records_for(&self, endpoint: &str) -> Vec<Recorded> {
        lock(&self.records).iter().filter(|r| r.endpoint == endpoint).cloned().collect()
    }

    /// Every answered request so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.requests).clone()
    }
}

/// The admin routes every simulator serves.
pub fn admin_routes(control: Arc<Control>) -> Router {
    async fn records(State(c): State<Arc<Control>>) -> Json<Vec<Recorded>> {
        Json(c.records())
    }
    async fn requests(State(c): State<Arc<Control>>) -> Json<Vec<RequestLog>> {
        Json(c.requests())
    }
    async fn faults(State(c): State<Arc<Control>>, Json(req): Json<FaultRequest>) -> Json<FaultRequest> {
        c.apply(&req);
        Json(req)
    }
    Router::new()
        .route("/_sim/records", get(records))
        .route("/_sim/requests", get(requests))
        .route("/_sim/faults", post(faults))
        .with_state(control)
}

/// A running simulator.
pub struct SimServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its faults and records.
    pub control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Serves `router` (plus the admin routes) on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr, router: Router, control: Arc<Control>) -> std::io::Result<SimServer> {
        let app = router
            .merge(admin_routes(control.clone()))
            .layer(axum::middleware::map_response_with_state(control.clone(), shifted_date));
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve_loop(listener, addr, app, control.clone()));
        Ok(SimServer { addr, control, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets a shifted `Date` header when [`Control::set_date_offset`] asked for one (hyper adds
/// the true date to answers without one).
async fn shifted_date(
    State(control): State<Arc<Control>>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let offset = control.date_offset_secs.load(std::sync::atomic::Ordering::Relaxed);
    if offset != 0 {
        let date = chrono::Utc::now() + chrono::Duration::seconds(offset);
        let text = date.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().insert(http::header::DATE, value);
        }
    }
    response
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves until a refusal is scripted, then closes the listener and every open connection
/// for the period (clients see refused and reset connections), then binds again.
async fn serve_loop(mut listener: tokio::net::TcpListener, addr: SocketAddr, app: Router, control: Arc<Control>) {
    loop {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(serve_connection(stream, app.clone()));
                    }
                }
                _ = control.refuse.notified() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        drop(connections); // aborts every open connection
        let period = lock(&control.faults).refuse.take().unwrap_or_default();
        tokio::time::sleep(period).await;
        listener = loop {
            match bind(addr) {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, app: Router) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
}

/// Milliseconds since the Unix epoch, from the wall clock (signature freshness checks).
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Starts a simulator for every sink of a configuration, listening on the host and port of
/// its `base_url` (port 0 picks a free one). Returns (sink name, server) pairs.
pub async fn start_for_config(loaded: &crate::load::Loaded) -> anyhow::Result<Vec<(String, SimServer)>> {
    use anyhow::Context as _;
    let mut servers = Vec::new();
    let base = std::path::Path::new(".");
    for sink in &loaded.sinks {
        let c = &sink.config;
        let (url, server) = if let Some(v) = &c.bingzhouxing {
            let addr = listen_addr(&v.base_url)?;
            (&v.base_url, bingzhouxing::Simulator::from_config(v, &sink.bindings, base)?.start(addr).await)
        } else if let Some(v) = &c.inspur_isp {
            let addr = listen_addr(&v.base_url)?;
            (&v.base_url, isp::Simulator::from_config(v, &sink.bindings, base)?.start(addr).await)
        } else if let Some(v) = &c.barrier_coupon {
            let addr = listen_addr(&v.base_url)?;
            (&v.base_url, barrier::Simulator::from_config(v, &sink.bindings, base)?.start(addr).await)
        } else if let Some(v) = &c.zvcms {
            let addr = listen_addr(&v.base_url)?;
            (&v.base_url, zvcms::Simulator::from_config(v, &sink.bindings, base)?.start(addr).await)
        } else {
            continue;
        };
        let server = server.with_context(|| format!("sink {}: cannot listen for {url}", c.name))?;
        servers.push((c.name.clone(), server));
    }
    Ok(servers)
}

/// The socket address of an `http://127.0.0.1:PORT/...` base URL (simulators serve loopback only).
fn listen_addr(base_url: &str) -> anyhow::Result<SocketAddr> {
    let rest =
        base_url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{base_url}: simulators speak http://"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = host_port.parse().map_err(|_| anyhow::anyhow!("{base_url}: write http://127.0.0.1:PORT"))?;
    if !addr.ip().is_loopback() {
        anyhow::bail!("{base_url}: simulators listen on loopback addresses only");
    }
    Ok(addr)
}
