//! Inspur ISP replies through the adapter's `classify` for each endpoint, and token-endpoint
//! answers through `read_token_answer`: never a panic, bounded reasons, a per-record
//! rejection only on batching endpoints, token lifetimes that fit a clock and token errors
//! that never quote the token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lotbridge::vendors::isp::token::read_token_answer;
use lotbridge::vendors::isp::{build, Config, IspAdapter};
use lotbridge::vendors::{Adapter, Verdict};
use lotbridge_fuzz::{check_token_result, check_verdict, config, context, frame};
use std::sync::OnceLock;

fn adapter() -> &'static IspAdapter {
    static ADAPTER: OnceLock<IspAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let cfg: Config = config(
            "base_url = \"http://127.0.0.1:9\"\nclient_id = \"id\"\nclient_secret = { value = \"fuzz-secret\" }",
        );
        build(&cfg, &context("isp", 50, None)).unwrap_or_else(|e| panic!("fuzz adapter: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let framed = frame(data);
    let e = adapter().endpoints();
    for endpoint in [e.spot, e.spot_delete, e.spot_num, e.entrance, e.departure] {
        let verdict = adapter().classify(&endpoint, &framed.response);
        check_verdict(&framed.response, &verdict);
        if let Verdict::Reject { per_record: true, .. } = verdict {
            assert!(endpoint.max_records > 1, "per-record rejection on single-record endpoint {}", endpoint.name);
        }
    }
    let body = &framed.response.body;
    let token = read_token_answer(framed.response.status, body);
    check_token_result(body, &token, |t| t.expires_in);
});
