//! Bingzhouxing replies (`{"code","msg","data"}` inside HTTP 200, or any status) through the
//! adapter's `classify` for each of its endpoints: never a panic, bounded reasons, and a
//! per-record rejection only where a request can hold several records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lotbridge::vendors::bingzhouxing::{build, BingzhouxingAdapter, Config, CAR_IN_OUT, HEARTBEAT, PARK_SPACE};
use lotbridge::vendors::{Adapter, Verdict};
use lotbridge_fuzz::{check_verdict, config, context, frame};
use std::sync::OnceLock;

fn adapter() -> &'static BingzhouxingAdapter {
    static ADAPTER: OnceLock<BingzhouxingAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let cfg: Config = config(r#"base_url = "http://127.0.0.1:9""#);
        build(&cfg, &context("bzx", 100, Some("fuzz-lot-token"))).unwrap_or_else(|e| panic!("fuzz adapter: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let framed = frame(data);
    for endpoint in [HEARTBEAT, PARK_SPACE, CAR_IN_OUT] {
        let verdict = adapter().classify(&endpoint, &framed.response);
        check_verdict(&framed.response, &verdict);
        if let Verdict::Reject { per_record: true, .. } = verdict {
            assert!(endpoint.max_records > 1, "per-record rejection on single-record endpoint {}", endpoint.name);
        }
    }
});
