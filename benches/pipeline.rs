//! Micro-benchmarks of the pure hot path, vendor by vendor: decode + validate, mapping,
//! batch assembly (100 records, with and without photos) and preparing one attempt
//! (stamp, sign, token from the cache). Adapters come from the demo's generated
//! configuration, against the demo's simulators (token vendors fetch once, then cache).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lotbridge::demo::city::City;
use lotbridge::demo::setup;
use lotbridge::event::{decode, Event, EventType};
use lotbridge::vendors::{Adapter, Mapping};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

/// One valid event of each type the city makes, plus a vehicle without photo.
fn samples() -> HashMap<&'static str, Vec<u8>> {
    let mut city = City::new(40, 5, setup::coupon_lot);
    let mut out = HashMap::new();
    while out.len() < 4 {
        for r in city.step() {
            let Ok(e) = decode(&r.value) else { continue };
            let lot: usize = e.lot[1..].parse().unwrap_or(0);
            let name = match e.event_type() {
                EventType::VehicleEntered if setup::bzx_lot(lot) && setup::isp_lot(lot) => "vehicle_photo",
                EventType::CouponGranted => "coupon",
                EventType::MemberCouponsRequested => "member",
                EventType::SpacesChanged => "spaces",
                _ => continue,
            };
            out.entry(name).or_insert(r.value.clone());
        }
    }
    let mut v: serde_json::Value = serde_json::from_slice(&out["vehicle_photo"]).unwrap();
    v["data"].as_object_mut().unwrap().remove("photo");
    out.insert("vehicle_small", v.to_string().into_bytes());
    out
}

struct World {
    _rt: tokio::runtime::Runtime,
    handle: tokio::runtime::Handle,
    adapters: HashMap<String, Arc<dyn Adapter>>,
    _sims: HashMap<String, lotbridge::sim::SimServer>,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("lotbridge-bench-{}", std::process::id()));
    let (loaded, sims) =
        rt.block_on(setup::simulators_and_config("127.0.0.1:9", 40, &dir.join("bench.toml"))).expect("simulators");
    let adapters = loaded.sinks.into_iter().map(|s| (s.config.name.clone(), s.adapter)).collect();
    World { handle: rt.handle().clone(), _rt: rt, adapters, _sims: sims }
}

fn decode_bench(c: &mut Criterion, s: &HashMap<&str, Vec<u8>>) {
    let mut g = c.benchmark_group("decode");
    for name in ["vehicle_small", "vehicle_photo", "coupon"] {
        g.throughput(Throughput::Bytes(s[name].len() as u64));
        g.bench_function(name, |b| b.iter(|| decode(black_box(&s[name])).unwrap()));
    }
    g.finish();
}

fn event(s: &HashMap<&str, Vec<u8>>, name: &str) -> Event {
    decode(&s[name]).unwrap()
}

fn map_bench(c: &mut Criterion, w: &World, s: &HashMap<&str, Vec<u8>>) {
    let mut g = c.benchmark_group("map");
    let cases = [
        ("bzx", "vehicle_small"),
        ("bzx", "vehicle_photo"),
        ("isp", "vehicle_small"),
        ("isp", "vehicle_photo"),
        ("coupons", "coupon"),
        ("members", "member"),
    ];
    for (sink, name) in cases {
        let e = event(s, name);
        let a = &w.adapters[sink];
        assert!(matches!(a.map(&e), Ok(Mapping::Record(_))), "{sink} maps {name}");
        g.bench_function(format!("{sink}/{name}"), |b| b.iter(|| a.map(black_box(&e)).unwrap()));
    }
    g.finish();
}

fn mapped(w: &World, sink: &str, e: &Event) -> lotbridge::vendors::Mapped {
    match w.adapters[sink].map(e) {
        Ok(Mapping::Record(m)) => m,
        other => panic!("{sink}: {other:?}"),
    }
}

fn assemble_bench(c: &mut Criterion, w: &World, s: &HashMap<&str, Vec<u8>>) {
    let mut g = c.benchmark_group("assemble_100");
    for (sink, name) in [("bzx", "vehicle_small"), ("bzx", "vehicle_photo"), ("isp", "vehicle_photo")] {
        let m = mapped(w, sink, &event(s, name));
        let records: Vec<&[u8]> = (0..100).map(|_| &m.record[..]).collect();
        g.throughput(Throughput::Bytes(m.record.len() as u64 * 100));
        let a = &w.adapters[sink];
        g.bench_function(format!("{sink}/{name}"), |b| b.iter(|| a.assemble(&m.endpoint, black_box(&records))));
    }
    g.finish();
}

fn prepare_bench(c: &mut Criterion, w: &World, s: &HashMap<&str, Vec<u8>>) {
    let mut g = c.benchmark_group("prepare");
    let cases = [
        ("bzx", "vehicle_photo", 100),
        ("isp", "vehicle_photo", 100),
        ("coupons", "coupon", 1),
        ("members", "member", 1),
    ];
    for (sink, name, n) in cases {
        let e = event(s, name);
        let m = mapped(w, sink, &e);
        let a = w.adapters[sink].clone();
        let records: Vec<&[u8]> = (0..n.min(m.endpoint.max_records)).map(|_| &m.record[..]).collect();
        let data = a.assemble(&m.endpoint, &records);
        let lot = e.lot.clone();
        w.handle.block_on(a.prepare(&lot, &m.endpoint, &data)).expect("first prepare fetches the token");
        g.bench_function(format!("{sink}/{name}x{}", records.len()), |b| {
            b.iter_batched(
                || data.clone(),
                |d| w.handle.block_on(a.prepare(&lot, &m.endpoint, &d)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    let s = samples();
    let w = world();
    decode_bench(c, &s);
    map_bench(c, &w, &s);
    assemble_bench(c, &w, &s);
    prepare_bench(c, &w, &s);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = all
}
criterion_main!(benches);
