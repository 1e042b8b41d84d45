//! `dlq replay`: re-publishes selected dead letters (original key and bytes) to their
//! original topic or a chosen one, waiting for every acknowledgement.

use super::read::{client_config, Letter, Reader};
use super::{headers, DlqError, Selection};
use crate::config::KafkaConfig;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Most records awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 10_000;

/// What to replay and where.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The dead-letter topic to read.
    pub from: String,
    /// Which dead letters.
    pub selection: Selection,
    /// Publish every selected record to this topic instead of its original one.
    pub to: Option<String>,
    /// Count what would be replayed and write nothing.
    pub dry_run: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub scanned: u64,
    /// Dead letters the selection took.
    pub selected: u64,
    /// Records published and acknowledged (or that would be, in a dry run).
    pub replayed: u64,
    /// Selected but not replayed: only the start of the value was kept.
    pub skipped_truncated: u64,
    /// Selected but not replayed: no original topic header and no `--to`.
    pub skipped_no_topic: u64,
    /// Replayed records per target topic.
    pub by_topic: BTreeMap<String, u64>,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scanned {}, selected {}, replayed {}", self.scanned, self.selected, self.replayed)?;
        for (topic, n) in &self.by_topic {
            write!(f, "\n  {n} to {topic}")?;
        }
        if self.skipped_truncated > 0 {
            write!(f, "\n  {} skipped: value truncated in the dead letter", self.skipped_truncated)?;
        }
        if self.skipped_no_topic > 0 {
            write!(f, "\n  {} skipped: no original topic (use --to)", self.skipped_no_topic)?;
        }
        Ok(())
    }
}

/// A progress bar on stderr for [`replay`] (hidden when stderr is not a terminal).
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let template = "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} dead letters read, {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Reads `options.from` once and re-publishes the selected dead letters; `progress` counts
/// dead letters read. Stops at the first record the cluster refuses: running it again
/// replays the same selection (at least once).
pub async fn replay(
    kafka: &KafkaConfig,
    options: &ReplayOptions,
    progress: &ProgressBar,
) -> Result<ReplaySummary, DlqError> {
    options.selection.check()?;
    if options.to.as_deref() == Some(options.from.as_str()) {
        return Err(DlqError::Invalid("--to must not be the dead-letter topic read from".into()));
    }
    let mut reader = Reader::open(kafka, &options.from)?;
    progress.set_length(reader.total());
    let mut writer = if options.dry_run { None } else { Some(Writer::new(kafka)?) };
    let mut summary = ReplaySummary::default();
    while let Some(letter) = reader.next().await? {
        summary.scanned += 1;
        progress.inc(1);
        if !options.selection.matches(&letter) {
            continue;
        }
        summary.selected += 1;
        let Some(target) = target(options, &letter, &mut summary) else { continue };
        if let Some(w) = writer.as_mut() {
            w.send(&target, &letter, &options.from).await?;
        }
        summary.replayed += 1;
        *summary.by_topic.entry(target).or_default() += 1;
        progress.set_message(format!("{} replayed", summary.replayed));
    }
    if let Some(w) = writer.as_mut() {
        w.finish().await?;
    }
    progress.finish_with_message(format!("{} replayed", summary.replayed));
    Ok(summary)
}

/// Where a selected letter goes, or why it cannot be replayed (counted in `summary`).
fn target(options: &ReplayOptions, letter: &Letter, summary: &mut ReplaySummary) -> Option<String> {
    if letter.truncated {
        summary.skipped_truncated += 1;
        return None;
    }
    let target = options.to.clone().or_else(|| letter.original_topic.clone());
    if target.is_none() {
        summary.skipped_no_topic += 1;
    }
    target
}

/// The producer of replayed records, with the acknowledgements it still waits for.
struct Writer {
    producer: FutureProducer,
    partitions: HashMap<String, i32>,
    pending: VecDeque<DeliveryFuture>,
}

impl Writer {
    fn new(kafka: &KafkaConfig) -> Result<Writer, DlqError> {
        let producer = client_config(kafka)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Kafka's Java default: a key lands where a Java producer would put it.
            .set("partitioner", "murmur2_random")
            .set("message.max.bytes", (kafka.max_record_bytes + 1024 * 1024).to_string())
            .create()?;
        Ok(Writer { producer, partitions: HashMap::new(), pending: VecDeque::new() })
    }

    /// Queues one record; waits for older acknowledgements when the queue is full.
    async fn send(&mut self, topic: &str, letter: &Letter, from: &str) -> Result<(), DlqError> {
        let partition = self.partition(topic, letter)?;
        let of = format!("{from}/{}/{}", letter.partition, letter.offset);
        let sink = letter.sink.as_deref().unwrap_or("");
        let h = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: headers::REPLAY_SINK, value: Some(sink) })
            .insert(Header { key: headers::REPLAY_OF, value: Some(of.as_str()) });
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&letter.value).headers(h.clone());
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => break self.pending.push_back(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => self.await_oldest().await?,
                Err((e, _)) => return Err(e.into()),
            }
        }
        if self.pending.len() >= IN_FLIGHT {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// The original partition when replaying into the original topic and it still exists,
    /// so a lot's records stay on the partition its other events are on; otherwise the
    /// partitioner decides from the key.
    fn partition(&mut self, topic: &str, letter: &Letter) -> Result<Option<i32>, DlqError> {
        let (Some(p), Some(orig)) = (letter.original_partition, &letter.original_topic) else { return Ok(None) };
        if orig != topic {
            return Ok(None);
        }
        let count = match self.partitions.get(topic) {
            Some(n) => *n,
            None => {
                let n = partition_count(&self.producer, topic)?;
                self.partitions.insert(topic.to_string(), n);
                n
            }
        };
        Ok((p >= 0 && p < count).then_some(p))
    }

    async fn await_oldest(&mut self) -> Result<(), DlqError> {
        let Some(delivery) = self.pending.pop_front() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(());
        };
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(DlqError::Kafka(KafkaError::Canceled)),
        }
    }

    async fn finish(&mut self) -> Result<(), DlqError> {
        while !self.pending.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }
}

fn partition_count(producer: &FutureProducer, topic: &str) -> Result<i32, DlqError> {
    use rdkafka::producer::Producer;
    let md = producer.client().fetch_metadata(Some(topic), Duration::from_secs(10))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        _ => Err(DlqError::NoSuchTopic(topic.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(to: Option<&str>) -> ReplayOptions {
        ReplayOptions { from: "dlq".into(), selection: Selection::default(), to: to.map(Into::into), dry_run: true }
    }

    #[test]
    fn a_truncated_value_is_never_replayed() {
        let mut summary = ReplaySummary::default();
        let letter = Letter { truncated: true, original_topic: Some("in".into()), ..Letter::default() };
        assert_eq!(target(&options(None), &letter, &mut summary), None);
        assert_eq!(summary.skipped_truncated, 1);
    }

    #[test]
    fn to_overrides_the_original_topic_and_is_needed_without_one() {
        let mut summary = ReplaySummary::default();
        let with = Letter { original_topic: Some("in".into()), ..Letter::default() };
        assert_eq!(target(&options(None), &with, &mut summary).as_deref(), Some("in"));
        assert_eq!(target(&options(Some("other")), &with, &mut summary).as_deref(), Some("other"));
        assert_eq!(target(&options(None), &Letter::default(), &mut summary), None);
        assert_eq!(summary.skipped_no_topic, 1);
    }
}
