//! What travels through the repartition topic besides events, and how a shard derives its
//! watermark from it.
//!
//! Every record forwarded by the ingest carries `vigil.src` = `topic/partition/offset` of the
//! input record it copies. The ingest also writes *marks* (records with no value and a
//! `vigil.marks` header) to every partition, a few times a second: for every partition of the
//! input topics, the largest event time forwarded from it and, when it has been at its end
//! for `idle_timeout`, the watermark it allows. All of this is in the shard's log, so a replay
//! from a checkpoint computes the same watermarks at the same records: time driven by the
//! wall clock (idleness) enters the log as data.

use serde::{Deserialize, Serialize};
use vigil_actors::shard::Upstream;
use vigil_actors::time::{Millis, MIN_TIME};

pub const SOURCE_HEADER: &str = "vigil.src";
pub const MARKS_HEADER: &str = "vigil.marks";
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// What the ingest says about one input partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// `topic/partition`.
    pub src: String,
    /// The largest event time forwarded from it (`None`: nothing yet, or not owned by the
    /// writer of the mark: then the mark only says the partition exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Millis>,
    /// Set while the partition is at its end: the watermark it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Millis>,
    /// Whether the writer owns (reads) the partition.
    pub owned: bool,
}

/// Splits `topic/partition/offset`.
pub fn parse_source(header: &str) -> Option<(&str, i64)> {
    let (src, offset) = header.rsplit_once('/')?;
    Some((src, offset.parse().ok()?))
}

fn entry<'a>(upstream: &'a mut Vec<Upstream>, src: &str) -> &'a mut Upstream {
    match upstream.iter().position(|u| u.name == src) {
        Some(i) => &mut upstream[i],
        None => {
            upstream.push(Upstream {
                name: src.to_owned(),
                ..Upstream::default()
            });
            upstream.last_mut().expect("pushed")
        }
    }
}

/// Applies marks to a shard's view of its upstream partitions.
pub fn apply_marks(upstream: &mut Vec<Upstream>, marks: &[Mark]) {
    for mark in marks {
        let u = entry(upstream, &mark.src);
        if let Some(max) = mark.max {
            u.max_event_time = Some(u.max_event_time.map_or(max, |m| m.max(max)));
        }
        if mark.owned {
            // An owner that has read nothing of the partition yet cannot know its largest
            // event time; the shard may (from the previous owner).
            u.idle_watermark = mark
                .idle
                .map(|idle| idle.max(u.max_event_time.unwrap_or(MIN_TIME)));
        }
    }
}

/// A forwarded record from `src` at `offset` with event time `time`: `false` if the shard
/// already has it (the ingest forwarded it again after a crash or a rebalance).
pub fn take_record(
    upstream: &mut Vec<Upstream>,
    src: &str,
    offset: i64,
    time: Option<Millis>,
) -> bool {
    let u = entry(upstream, src);
    if offset < u.next_offset {
        return false;
    }
    u.next_offset = offset + 1;
    if let Some(time) = time {
        u.max_event_time = Some(u.max_event_time.map_or(time, |m| m.max(time)));
    }
    u.idle_watermark = None;
    true
}

/// The watermark the upstream partitions allow: the smallest of `largest event time - bound`
/// over the partitions that are not idle (one that never had data holds it at the start);
/// when every partition is idle, the largest watermark they allow.
pub fn watermark(upstream: &[Upstream], bound: Millis) -> Millis {
    if upstream.is_empty() {
        return MIN_TIME;
    }
    let active = upstream
        .iter()
        .filter(|u| u.idle_watermark.is_none())
        .map(|u| {
            u.max_event_time
                .map_or(MIN_TIME, |m| m.saturating_sub(bound))
        })
        .min();
    match active {
        Some(min) => min,
        None => upstream
            .iter()
            .filter_map(|u| u.idle_watermark)
            .max()
            .unwrap_or(MIN_TIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(src: &str, max: Option<Millis>, idle: Option<Millis>) -> Mark {
        Mark {
            src: src.into(),
            max,
            idle,
            owned: true,
        }
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut up = Vec::new();
        apply_marks(
            &mut up,
            &[mark("a/0", Some(1_000), None), mark("a/1", None, None)],
        );
        assert_eq!(watermark(&up, 100), MIN_TIME, "a/1 has had no data yet");
        assert!(take_record(&mut up, "a/1", 0, Some(500)));
        assert_eq!(watermark(&up, 100), 400);
        apply_marks(&mut up, &[mark("a/1", Some(500), Some(500))]);
        assert_eq!(watermark(&up, 100), 900, "a/1 is idle: a/0 decides");
        apply_marks(&mut up, &[mark("a/0", Some(1_000), Some(1_200))]);
        assert_eq!(watermark(&up, 100), 1_200, "all idle: the largest allowed");
        // New data on a/1 makes it active again.
        assert!(take_record(&mut up, "a/1", 1, Some(700)));
        assert_eq!(watermark(&up, 100), 600);
    }

    #[test]
    fn records_forwarded_again_are_recognised() {
        let mut up = Vec::new();
        assert!(take_record(&mut up, "t/3", 10, Some(5)));
        assert!(take_record(&mut up, "t/3", 11, Some(6)));
        assert!(!take_record(&mut up, "t/3", 10, Some(5)));
        assert!(!take_record(&mut up, "t/3", 11, Some(6)));
        assert!(take_record(&mut up, "t/3", 12, Some(7)));
        assert!(take_record(&mut up, "t/4", 0, Some(7)), "another partition");
    }

    #[test]
    fn a_mark_of_a_partition_not_owned_only_announces_it() {
        let mut up = Vec::new();
        take_record(&mut up, "a/0", 0, Some(1_000));
        apply_marks(
            &mut up,
            &[Mark {
                src: "a/1".into(),
                max: None,
                idle: None,
                owned: false,
            }],
        );
        assert_eq!(watermark(&up, 0), MIN_TIME);
        assert_eq!(parse_source("orders.v1/2/77"), Some(("orders.v1/2", 77)));
    }
}
