//! `lotbridge demo` as a library call: a short run of a small city reaches a final outcome
//! for every produced record at every sink, with and without the injected faults.

use lotbridge::demo::{run, Options};
use std::time::Duration;

fn options(faults: bool) -> Options {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    Options {
        lots: 12,
        duration: Duration::from_secs(6),
        rate: 150,
        faults,
        metrics_addr: None,
        config_out: Some(dir.join("demo.toml")),
        progress: false,
        settle_timeout: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_city_is_delivered_completely_and_the_config_can_be_reused() {
    let opts = options(false);
    let path = opts.config_out.clone().expect("path");
    let report = run(opts).await.expect("demo runs");
    println!("{report}");
    assert!(report.complete(), "every record has a final outcome at every sink");
    assert!(report.nothing_missing(), "every vehicle, coupon and lookup reached its vendor");
    assert!(report.sinks.iter().all(|s| s.expected > 0 && s.dead_letters == 0), "{:?}", report.sinks);
    assert!(report.dead_letter_reasons.is_empty());
    let text = std::fs::read_to_string(&path).expect("config written");
    assert!(text.contains("[[sinks]]") && text.contains("city.events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_cause_retries_and_dead_letters_but_nothing_is_left_undone() {
    let report = run(options(true)).await.expect("demo runs");
    println!("{report}");
    assert!(report.complete(), "every record has a final outcome at every sink");
    assert!(report.nothing_missing(), "outage and expired tokens lose nothing");
    let bzx = &report.sinks[0];
    assert!(bzx.retries > 0, "the outage was retried");
    let stages: Vec<&str> = report.dead_letter_reasons.keys().map(|(_, stage, _)| stage.as_str()).collect();
    assert!(stages.contains(&"decode") && stages.contains(&"map"), "{:?}", report.dead_letter_reasons);
    assert!(report.sinks.iter().all(|s| s.dead_letters > 0), "every sink dead-letters the invalid records");
}
