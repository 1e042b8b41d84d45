//! zvcms member-coupon replies through `classify` of two adapters (a business refusal read
//! as an empty list, and as a rejection), and every answer turned into the
//! `member.coupons.listed` results record as the engine publishes it: never a panic,
//! bounded reasons, normalized values and RFC 3339 dates in the record.

#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use lotbridge::event::{decode, encode_listed, CouponsListed, ListedCoupon};
use lotbridge::vendors::zvcms::{build, Config, ZvcmsAdapter, USER_COUPON_LIST};
use lotbridge::vendors::{Adapter, Verdict};
use lotbridge_fuzz::{check_verdict, config, context, frame};
use std::sync::OnceLock;

const BASE: &str = "base_url = \"http://127.0.0.1:9/\"\nopen_id = \"fuzz-open-id\"\n\
    grant_code = { value = \"fuzz-grant-code\" }\nsecret_key = { value = \"fuzz-secret-key\" }\n";

fn adapters() -> &'static [ZvcmsAdapter; 2] {
    static ADAPTERS: OnceLock<[ZvcmsAdapter; 2]> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let one = |extra: &str| {
            let cfg: Config = config(&format!("{BASE}{extra}"));
            build(&cfg, &context("member", 100, None)).unwrap_or_else(|e| panic!("fuzz adapter: {e}"))
        };
        [one(""), one("business_error = \"reject\"\n")]
    })
}

fuzz_target!(|data: &[u8]| {
    let framed = frame(data);
    for adapter in adapters() {
        let verdict = adapter.classify(&USER_COUPON_LIST, &framed.response);
        check_verdict(&framed.response, &verdict);
        if let Verdict::Answered(coupons) = verdict {
            coupons.iter().for_each(check_coupon);
            check_results_record(coupons);
        }
    }
});

fn check_coupon(c: &ListedCoupon) {
    assert!(["amount", "discount", "unknown"].contains(&c.kind.as_str()), "kind {:?}", c.kind);
    assert!(["usable", "used", "expired", "unknown"].contains(&c.status.as_str()), "status {:?}", c.status);
    for date in [&c.valid_from, &c.valid_until].into_iter().flatten() {
        assert!(DateTime::parse_from_rfc3339(date).is_ok(), "coupon date {date:?} is not RFC 3339");
    }
}

/// The record the engine publishes on the results topic: JSON that keeps every coupon, and
/// that lotbridge itself refuses to take as an input.
fn check_results_record(coupons: Vec<ListedCoupon>) {
    let n = coupons.len();
    let data = CouponsListed { in_reply_to: "q-1".into(), member_id: "1003".into(), coupons };
    let at = chrono::Utc::now().fixed_offset();
    let record = encode_listed("P001", "q-1.listed", at, &data);
    let json: serde_json::Value = match serde_json::from_slice(&record) {
        Ok(v) => v,
        Err(e) => panic!("results record is not JSON: {e}"),
    };
    assert_eq!(json["data"]["coupons"].as_array().map(Vec::len), Some(n), "coupons lost in the record");
    assert!(decode(&record).is_err(), "an output record was accepted as input");
}
