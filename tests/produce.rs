//! `lotbridge produce` writes the synthetic city into a cluster: lots first, then valid
//! contract events keyed by lot.

mod common;

use common::Kafka;
use rdkafka::Message;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_the_opening_then_valid_events_keyed_by_lot() {
    let kafka = Kafka::new();
    kafka.topic("city", 2);
    let opts = lotbridge::produce::Options {
        brokers: kafka.brokers.clone(),
        topic: "city".into(),
        lots: 5,
        coupon_lots: Some(2..=3),
        rate: 100,
        seed: 7,
        duration: Some(Duration::from_secs(2)),
    };
    let sent = lotbridge::produce::run(opts, std::future::pending()).await.expect("produce");
    let records = kafka.read_all("city");
    assert_eq!(records.len() as u64, sent);
    assert!(sent > 50, "about 100 events a second for 2 s, got {sent}");
    let mut upserted = HashSet::new();
    for m in &records {
        let event = lotbridge::event::decode(m.payload().unwrap()).expect("every record is a valid event");
        assert_eq!(m.key(), Some(event.lot.as_bytes()), "keyed by lot");
        if event.event_type().as_str() == "lot.upserted" {
            upserted.insert(event.lot);
        }
    }
    let want: HashSet<String> = (0..5).map(|i| format!("L{i:04}")).collect();
    assert_eq!(upserted, want, "every lot is announced");
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_error() {
    let opts = lotbridge::produce::Options {
        brokers: "127.0.0.1:1".into(),
        topic: "city".into(),
        lots: 1,
        coupon_lots: None,
        rate: 1,
        seed: 1,
        duration: Some(Duration::from_secs(1)),
    };
    let err = lotbridge::produce::run(opts, std::future::pending()).await.unwrap_err();
    assert!(format!("{err:#}").contains("do not answer"), "{err:#}");
}
