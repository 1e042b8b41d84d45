//! Barrier-gate coupon platform answers to `sendCoupon` through the adapter's `classify`,
//! and token answers through `parse_answer`: never a panic, bounded reasons, token lifetimes
//! that fit a clock and token errors that never quote the token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lotbridge::vendors::barrier::token::parse_answer;
use lotbridge::vendors::barrier::{build, BarrierAdapter, Config, SEND_COUPON};
use lotbridge::vendors::Adapter;
use lotbridge_fuzz::{check_token_result, check_verdict, config, context, frame};
use std::sync::OnceLock;
use std::time::Duration;

fn adapter() -> &'static BarrierAdapter {
    static ADAPTER: OnceLock<BarrierAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let cfg: Config = config(
            "base_url = \"http://127.0.0.1:9/artemis\"\nclient_id = \"244221\"\nclient_secret = { value = \"fuzz-secret\" }",
        );
        build(&cfg, &context("coupons", 100, None)).unwrap_or_else(|e| panic!("fuzz adapter: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let framed = frame(data);
    let verdict = adapter().classify(&SEND_COUPON, &framed.response);
    check_verdict(&framed.response, &verdict);
    let body = &framed.response.body;
    let fallback = Duration::from_secs(7_200);
    let token = parse_answer(framed.response.status, body, fallback);
    check_token_result(body, &token, |t| t.token.expires_in);
    if let Ok(issued) = &token {
        assert!(issued.lifetime_from_vendor || issued.token.expires_in == fallback, "fallback lifetime not used");
    }
});
