//! `lotbridge produce`: the demo's synthetic city, produced into a real Kafka cluster (the
//! compose sandbox's traffic source). Every lot's `lot.upserted` goes first, then the city's
//! events at a steady rate, keyed by lot, with `acks=all` and idempotence.

use crate::demo::city::City;
use anyhow::Context as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;
use tokio::time::Instant;

/// What to produce, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic of contract events.
    pub topic: String,
    /// Number of lots (codes `L0000`...).
    pub lots: usize,
    /// Lots (by index) that take coupons.
    pub coupon_lots: Option<RangeInclusive<usize>>,
    /// Events per second.
    pub rate: u32,
    /// Random seed of the city.
    pub seed: u64,
    /// Stop after this long (default: until the shutdown signal).
    pub duration: Option<Duration>,
}

/// Parses `20-29` (or a single index `7`).
pub fn parse_range(text: &str) -> Result<RangeInclusive<usize>, String> {
    let parse = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{text:?} is not a range like 20-29"));
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("{text:?}: the start is after the end"));
            }
            Ok(a..=b)
        }
        None => parse(text).map(|n| n..=n),
    }
}

/// Produces until `shutdown` completes or the duration passes; returns how many records
/// the cluster acknowledged.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<u64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        // Kafka's default partitioner (the Java client's murmur2): lotbridge finds which
        // replica owns a lot's heartbeats and daily push the same way.
        .set("partitioner", "murmur2_random")
        .create()
        .context("cannot create the Kafka producer")?;
    producer
        .client()
        .fetch_metadata(Some(&opts.topic), Duration::from_secs(10))
        .with_context(|| format!("the brokers {} do not answer", opts.brokers))?;
    let coupons = opts.coupon_lots.clone();
    let mut city = City::new(opts.lots, opts.seed, move |i| coupons.as_ref().is_some_and(|r| r.contains(&i)));
    let mut sent = send_all(&producer, &opts.topic, city.opening()).await?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    let mut report = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        sent += send_all(&producer, &opts.topic, city.step()).await?;
        if report.elapsed() >= Duration::from_secs(10) {
            println!("produced {sent} records to {}", opts.topic);
            report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(30)).context("flush")?;
    println!("produced {sent} records to {} in total", opts.topic);
    Ok(sent)
}

async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<crate::demo::city::Record>,
) -> anyhow::Result<u64> {
    let mut acked = 0;
    for r in records {
        let record = FutureRecord::to(topic).key(&r.key).payload(&r.value);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).context("produce")?;
        acked += 1;
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("20-29"), Ok(20..=29));
        assert_eq!(parse_range("7"), Ok(7..=7));
        assert!(parse_range("9-1").is_err());
        assert!(parse_range("a-b").is_err());
    }
}
