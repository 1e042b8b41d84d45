//! The Bingzhouxing city parking cloud (Taiyuan): heartbeats, free-space counts and vehicle
//! in/out reports, each lot signing with its own `lotCode` and token.
//!
//! | event | endpoint (cmd) | batching |
//! |---|---|---|
//! | `lot.heartbeat` | `/park/heartbeat` (`heartbeat`) | one per minute per lot |
//! | `spaces.changed` | `/dataSync/parkSpace` (`parkSpace`) | newest count only |
//! | `vehicle.entered`, `vehicle.exited` | `/dataSync/carInOut` (`carInOut`) | up to 100, in order |
//!
//! Every attempt gets a fresh `ts` and `auth` ([`sign`]): the platform refuses a `ts`
//! older than 10 s. Replies are classified by [`codes`]. Other event types are skipped.

pub mod codes;
pub mod config;
pub mod mapping;
pub mod sign;

pub use config::{Config, DataEncoding, TsUnit};

use super::SinkContext;
use crate::config::ConfigError;
use crate::event::{Event, EventData, Vehicle};
use crate::photo::{self, PhotoPolicy};
use crate::vendors::{
    Adapter, Coalesce, Endpoint, HttpRequest, HttpResponse, MapError, Mapped, Mapping, PrepareError, SkipReason,
    VendorKind, Verdict,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use config::{LotCredentials, Settings};
use mapping::Direction;
use std::collections::HashMap;
use std::time::Duration;

/// How often the platform wants a heartbeat from each lot.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);

/// The heartbeat endpoint: at most one per lot per minute.
pub const HEARTBEAT: Endpoint =
    Endpoint { name: "heartbeat", max_records: 1, coalesce: Coalesce::Throttle(HEARTBEAT_EVERY) };

/// The space-count endpoint: only the newest count of a lot matters.
pub const PARK_SPACE: Endpoint = Endpoint { name: "parkSpace", max_records: 1, coalesce: Coalesce::Latest };

/// The vehicle in/out endpoint at the platform's batch limit (the adapter's own copy is
/// capped by the sink's `batch.max_records`).
pub const CAR_IN_OUT: Endpoint =
    Endpoint { name: "carInOut", max_records: mapping::MAX_BATCH, coalesce: Coalesce::Ordered };

/// The platform's commands; each endpoint label is its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Heartbeat,
    ParkSpace,
    CarInOut,
}

impl Command {
    fn of(endpoint: &Endpoint) -> Option<Command> {
        match endpoint.name {
            name if name == HEARTBEAT.name => Some(Command::Heartbeat),
            name if name == PARK_SPACE.name => Some(Command::ParkSpace),
            name if name == CAR_IN_OUT.name => Some(Command::CarInOut),
            _ => None,
        }
    }

    fn cmd(self) -> &'static str {
        match self {
            Command::Heartbeat => HEARTBEAT.name,
            Command::ParkSpace => PARK_SPACE.name,
            Command::CarInOut => CAR_IN_OUT.name,
        }
    }
}

/// The adapter of one `[sinks.bingzhouxing]` sink.
#[derive(Debug)]
pub struct BingzhouxingAdapter {
    settings: Settings,
    /// By platform lot code.
    lots: HashMap<String, LotCredentials>,
    photo: PhotoPolicy,
    car_in_out: Endpoint,
    /// Wall clock for `ts` (replaced in tests to prove every attempt is re-stamped).
    clock: fn() -> DateTime<Utc>,
    adjustments: crate::vendors::adjust::Adjustments,
}

/// Builds the adapter of one sink: checks the settings and that every bound lot has a token.
pub fn build(cfg: &Config, ctx: &SinkContext<'_>) -> Result<BingzhouxingAdapter, ConfigError> {
    let settings = cfg.validate(ctx.name)?;
    let lots = config::credentials(ctx.name, &ctx.bindings)?;
    let car_in_out = Endpoint { max_records: ctx.max_records.clamp(1, mapping::MAX_BATCH), ..CAR_IN_OUT };
    let adjustments = crate::vendors::adjust::Adjustments::new(ctx.name);
    Ok(BingzhouxingAdapter { settings, lots, photo: ctx.photo, car_in_out, clock: Utc::now, adjustments })
}

impl BingzhouxingAdapter {
    fn url(&self, command: Command) -> &str {
        match command {
            Command::Heartbeat => &self.settings.heartbeat_url,
            Command::ParkSpace => &self.settings.park_space_url,
            Command::CarInOut => &self.settings.car_in_out_url,
        }
    }

    fn vehicle(&self, event: &Event, vehicle: &Vehicle, direction: Direction) -> Result<Mapping, MapError> {
        let fitted = vehicle.photo.as_ref().map(|p| photo::fit(&p.jpeg_base64, self.settings.photo_limit, self.photo));
        let (text, outcome) = match fitted {
            Some((text, outcome)) => (text, Some(outcome)),
            None => (None, None),
        };
        let mut filled = None;
        let img_data = match text.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => text,
            None => {
                let (fill, adjusted) = self.settings.missing_photo.fill("Bingzhouxing", "imgData")?;
                filled = Some(adjusted);
                fill
            }
        };
        let (record, mut adjusted) = mapping::car_in_out(event, vehicle, direction, img_data)?;
        adjusted.extend(filled);
        self.adjustments.record(&event.lot, &adjusted);
        Ok(Mapping::Record(Mapped { endpoint: self.car_in_out, record, photo: outcome }))
    }

    fn body(&self, command: Command, creds: &LotCredentials, data: &[u8]) -> Bytes {
        let ts = sign::timestamp((self.clock)(), self.settings.ts_unit);
        let envelope = sign::Envelope {
            cmd: command.cmd(),
            lot_code: &creds.lot_code,
            ts: &ts,
            // The spec's heartbeat example has no data key at all.
            data: (command != Command::Heartbeat).then_some(data),
            encoding: self.settings.data_encoding,
        };
        Bytes::from(envelope.to_body(&creds.token))
    }
}

#[async_trait::async_trait]
impl Adapter for BingzhouxingAdapter {
    fn kind(&self) -> VendorKind {
        VendorKind::Bingzhouxing
    }

    fn map(&self, event: &Event) -> Result<Mapping, MapError> {
        let handled = matches!(
            event.data,
            EventData::LotHeartbeat
                | EventData::SpacesChanged(_)
                | EventData::VehicleEntered(_)
                | EventData::VehicleExited(_)
        );
        if !handled {
            return Ok(Mapping::Skip(SkipReason::TypeNotHandled));
        }
        if !self.lots.contains_key(&event.lot) {
            return Ok(Mapping::Skip(SkipReason::LotNotBound));
        }
        let record = |endpoint, record| Ok(Mapping::Record(Mapped { endpoint, record, photo: None }));
        match &event.data {
            EventData::LotHeartbeat => record(HEARTBEAT, mapping::heartbeat()),
            EventData::SpacesChanged(spaces) => record(PARK_SPACE, mapping::park_space(spaces)),
            EventData::VehicleEntered(v) => self.vehicle(event, v, Direction::In),
            EventData::VehicleExited(x) => self.vehicle(event, &x.vehicle, Direction::Out),
            _ => Ok(Mapping::Skip(SkipReason::TypeNotHandled)),
        }
    }

    fn assemble(&self, endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        match Command::of(endpoint) {
            Some(Command::CarInOut) | None => crate::vendors::json_array(records),
            // One record per request; should the engine ever pass more, the newest wins,
            // as it would under `Coalesce::Latest`.
            Some(_) => records.last().map_or_else(mapping::heartbeat, |r| Bytes::copy_from_slice(r)),
        }
    }

    async fn prepare(&self, lot: &str, endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError> {
        let Some(command) = Command::of(endpoint) else {
            // Only this adapter's endpoints reach here; anything else is an engine bug, and
            // no retry can fix it.
            return Err(PrepareError::Internal(format!("{} is not a Bingzhouxing endpoint", endpoint.name)));
        };
        let creds = self.lots.get(lot).ok_or(PrepareError::Unbound)?;
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json;charset=UTF-8"));
        Ok(HttpRequest {
            method: http::Method::POST,
            url: self.url(command).to_string(),
            headers,
            body: self.body(command, creds, data),
        })
    }

    fn classify(&self, endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
        codes::classify(response, endpoint.max_records > 1)
    }

    fn adjustments(&self) -> Option<&crate::vendors::adjust::Adjustments> {
        Some(&self.adjustments)
    }

    fn bound_lots(&self) -> Vec<String> {
        let mut lots: Vec<String> = self.lots.keys().cloned().collect();
        lots.sort();
        lots
    }

    fn heartbeat_every(&self) -> Option<Duration> {
        Some(HEARTBEAT_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Binding, Bindings};
    use crate::photo::{DropReason, PhotoOutcome};
    use crate::secret::Secret;
    use md5::{Digest, Md5};
    use serde_json::{json, Value};
    use std::path::Path;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn ctx(bindings: Vec<Binding>, max_records: usize, photo: PhotoPolicy) -> SinkContext<'static> {
        SinkContext {
            name: "bzx",
            bindings: Arc::new(Bindings::from_list(bindings)),
            photo,
            max_records,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        }
    }

    fn bound() -> Vec<Binding> {
        vec![Binding { lot: "P001".into(), vendor_lot: "350".into(), token: Some(Secret::new("tok-350")) }]
    }

    fn cfg() -> Config {
        toml::from_str(r#"base_url = "http://127.0.0.1:9""#).unwrap()
    }

    fn adapter() -> BingzhouxingAdapter {
        build(&cfg(), &ctx(bound(), 100, PhotoPolicy::Recompress)).unwrap()
    }

    fn event(ty: &str, lot: &str, data: Value) -> Event {
        let json = json!({"v": 1, "id": "e1", "type": ty, "lot": lot, "at": "2026-03-01T00:00:00Z", "data": data});
        crate::event::decode(json.to_string().as_bytes()).unwrap()
    }

    fn record(m: Mapping) -> Mapped {
        match m {
            Mapping::Record(r) => r,
            Mapping::Skip(s) => panic!("skipped: {s:?}"),
        }
    }

    #[test]
    fn endpoints_by_event_type() {
        let a = adapter();
        let hb = record(a.map(&event("lot.heartbeat", "P001", json!({}))).unwrap());
        assert_eq!(hb.endpoint, HEARTBEAT);
        assert_eq!(hb.endpoint.coalesce, Coalesce::Throttle(Duration::from_secs(60)));
        let sp = record(a.map(&event("spaces.changed", "P001", json!({"total": 10, "free": 3}))).unwrap());
        assert_eq!((sp.endpoint, &sp.record[..]), (PARK_SPACE, &br#"{"totalSpace":10,"surplusSpace":3}"#[..]));
        let car = json!({"plate": "京Q8K271", "vehicle_type": "small", "gate": "East"});
        let v = record(a.map(&event("vehicle.entered", "P001", car)).unwrap());
        assert_eq!(
            (v.endpoint.name, v.endpoint.max_records, v.endpoint.coalesce),
            ("carInOut", 100, Coalesce::Ordered)
        );
        assert_eq!(a.heartbeat_every(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn skips_other_types_and_unbound_lots() {
        let a = adapter();
        let upsert = event("lot.upserted", "P001", json!({"coordinate_system": "WGS84"}));
        assert_eq!(a.map(&upsert).unwrap(), Mapping::Skip(SkipReason::TypeNotHandled));
        assert_eq!(a.map(&event("lot.deleted", "P001", json!({}))).unwrap(), Mapping::Skip(SkipReason::TypeNotHandled));
        let spaces = event("spaces.changed", "P999", json!({"total": 10, "free": 3}));
        assert_eq!(a.map(&spaces).unwrap(), Mapping::Skip(SkipReason::LotNotBound));
        assert_eq!(a.bound_lots(), vec!["P001".to_string()]);
    }

    #[test]
    fn batch_limit_is_capped_at_the_platforms() {
        let car = json!({"plate": "A", "vehicle_type": "small", "gate": "g"});
        for (configured, expected) in [(500, 100), (20, 20)] {
            let a = build(&cfg(), &ctx(bound(), configured, PhotoPolicy::Recompress)).unwrap();
            let m = record(a.map(&event("vehicle.entered", "P001", car.clone())).unwrap());
            assert_eq!(m.endpoint.max_records, expected);
        }
    }

    #[test]
    fn photos_follow_the_policy() {
        let big = format!("/9j/{}", "A".repeat(60_000));
        let car = json!({"plate": "A", "vehicle_type": "small", "gate": "g", "photo": {"jpeg_base64": big}});
        let dropping = build(&cfg(), &ctx(bound(), 100, PhotoPolicy::Drop)).unwrap();
        let m = record(dropping.map(&event("vehicle.entered", "P001", car.clone())).unwrap());
        assert_eq!(m.photo, Some(PhotoOutcome::Dropped(DropReason::TooLarge)));
        let sent: Value = serde_json::from_slice(&m.record).unwrap();
        assert_eq!(sent["imgData"], crate::vendors::missing_photo::placeholder_base64(), "the default stand-in");
        let totals = dropping.adjustments().unwrap().totals();
        assert_eq!(totals, [("imgData", crate::vendors::adjust::Change::Placeholder, 1)]);
        let as_is = build(&cfg(), &ctx(bound(), 100, PhotoPolicy::AsIs)).unwrap();
        let m = record(as_is.map(&event("vehicle.entered", "P001", car)).unwrap());
        let sent: Value = serde_json::from_slice(&m.record).unwrap();
        assert_eq!((m.photo, sent["imgData"].as_str().map(str::len)), (Some(PhotoOutcome::Unchanged), Some(60_004)));
    }

    #[test]
    fn assemble_joins_car_records_and_passes_single_ones() {
        let a = adapter();
        assert_eq!(&a.assemble(&CAR_IN_OUT, &[b"{\"a\":1}", b"{\"b\":2}"])[..], b"[{\"a\":1},{\"b\":2}]");
        assert_eq!(
            &a.assemble(&PARK_SPACE, &[b"{\"totalSpace\":1,\"surplusSpace\":0}"])[..],
            b"{\"totalSpace\":1,\"surplusSpace\":0}"
        );
    }

    static TICK: AtomicI64 = AtomicI64::new(1_700_000_000_000);

    fn ticking() -> DateTime<Utc> {
        let ms = TICK.fetch_add(1_500, Ordering::SeqCst);
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    fn md5_hex(text: &str) -> String {
        Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test]
    async fn every_attempt_is_restamped_and_resigned() {
        let mut a = adapter();
        a.clock = ticking;
        let data = Bytes::from_static(br#"{"totalSpace":10,"surplusSpace":3}"#);
        let first: Value = serde_json::from_slice(&a.prepare("P001", &PARK_SPACE, &data).await.unwrap().body).unwrap();
        let second: Value = serde_json::from_slice(&a.prepare("P001", &PARK_SPACE, &data).await.unwrap().body).unwrap();
        assert_ne!(first["ts"], second["ts"]);
        for body in [&first, &second] {
            let ts = body["ts"].as_str().unwrap();
            assert_eq!(body["auth"], json!(md5_hex(&format!("parkSpace350{ts}tok-350"))));
            assert_eq!(body["data"], json!({"totalSpace": 10, "surplusSpace": 3}));
        }
    }

    #[tokio::test]
    async fn requests_go_to_the_commands_path() {
        let a = adapter();
        let req = a.prepare("P001", &HEARTBEAT, &mapping::heartbeat()).await.unwrap();
        assert_eq!((req.method, req.url.as_str()), (http::Method::POST, "http://127.0.0.1:9/park/heartbeat"));
        assert_eq!(req.headers[http::header::CONTENT_TYPE], "application/json;charset=UTF-8");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["cmd"], "heartbeat");
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(a.prepare("P404", &HEARTBEAT, &mapping::heartbeat()).await.unwrap_err(), PrepareError::Unbound);
    }

    #[test]
    fn tokens_never_print() {
        let a = adapter();
        assert!(!format!("{a:?}").contains("tok-350"));
    }

    #[test]
    fn a_lot_without_token_fails_the_build() {
        let mut lots = bound();
        lots.push(Binding { lot: "P002".into(), vendor_lot: "351".into(), token: None });
        let err = build(&cfg(), &ctx(lots, 100, PhotoPolicy::Recompress)).unwrap_err().to_string();
        assert!(err.contains("sink \"bzx\"") && err.contains("\"P002\"") && err.contains("no token"), "{err}");
    }
}
