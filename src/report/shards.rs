//! Sharded clients' records: the JSON of one client run (what a shard
//! uploads, and what the report's `client_run_group.test_runs` holds), the
//! shard routes' answers, and the merge of every shard's runs into one
//! test that the report path verifies and writes like a single client's.

use crate::event::clock::{wall_i64, Nanos, WallAnchor};
use crate::problem::Problem;
use crate::run::{BodyPlan, ClientRun, DriverOutcome, Failure, ListedRun, Nanos32, Numbering};
use crate::time::Rfc3339;
use crate::wire::data_bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

/// One run as the client saw it: an entry of the report's
/// `client_run_group.test_runs` without the group and the remote, and what
/// a shard uploads for each run it sent. `error` is `kind: detail`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientRunFields<'a> {
    pub run_count: u64,
    /// When the run was due to leave.
    pub time: Rfc3339,
    #[serde(default)]
    pub data: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_start: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_end: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_duration_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_connect_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A raw (tcp or udp) run's echoes, uploaded by a shard only: how many
    /// came, how the first that differed from what was sent differed, and
    /// the order its first echo arrived in among the shard's echoes (from
    /// 0), so the whole group's report tells each direction apart as the
    /// shard's own did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echoes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_order: Option<u32>,
}

/// `GET /test-groups/{id}/status`'s list of the shards that uploaded.
#[derive(Debug, Default, Deserialize)]
pub struct ShardsStatus {
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardStatus {
    pub shard: u64,
    pub shards: u64,
    pub runs: u64,
    pub complete: bool,
}

/// `GET /test-groups/{id}/shards/{I}`: a shard's uploaded runs, read one
/// at a time into compact runs.
#[derive(Debug)]
pub struct ShardRecord {
    pub shard: u64,
    pub shards: u64,
    pub complete: bool,
    pub runs: LoadedRuns,
}

impl<'de> Deserialize<'de> for ShardRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Record;
        impl<'de> serde::de::Visitor<'de> for Record {
            type Value = ShardRecord;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a shard's record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ShardRecord, A::Error> {
                let (mut shard, mut shards, mut complete, mut runs) = (None, None, None, None);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "shard" => shard = Some(map.next_value()?),
                        "shards" => shards = Some(map.next_value()?),
                        "complete" => complete = Some(map.next_value()?),
                        "runs" => runs = Some(map.next_value::<LoadedRuns>()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let missing = serde::de::Error::missing_field;
                Ok(ShardRecord {
                    shard: shard.ok_or_else(|| missing("shard"))?,
                    shards: shards.ok_or_else(|| missing("shards"))?,
                    complete: complete.ok_or_else(|| missing("complete"))?,
                    runs: runs.ok_or_else(|| missing("runs"))?,
                })
            }
        }
        d.deserialize_map(Record)
    }
}

/// One uploaded run, compact: its count, when it was due (on
/// [`MERGE_ANCHOR`]'s clock), the run and its body.
#[derive(Debug)]
pub struct LoadedRun {
    pub count: u64,
    pub due: Nanos,
    pub run: ClientRun,
    pub data: Arc<[u8]>,
    /// A raw run's echoes, when its shard uploaded them.
    pub echo: Option<Box<LoadedEcho>>,
}

/// What a shard saw of a raw run's echoes (the upload's `echoes`,
/// `echo_error` and `echo_order`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEcho {
    pub echoes: u32,
    pub error: Option<Box<str>>,
    /// The order its first echo arrived in among its shard's echoes.
    pub order: Option<u32>,
}

#[derive(Debug, Default)]
pub struct LoadedRuns(pub Vec<LoadedRun>);

impl<'de> Deserialize<'de> for LoadedRuns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Runs;
        impl<'de> serde::de::Visitor<'de> for Runs {
            type Value = LoadedRuns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of client runs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LoadedRuns, A::Error> {
                let mut runs: Vec<LoadedRun> = Vec::new();
                while let Some(json) = seq.next_element::<ClientRunFields<'_>>()? {
                    let run = load(json, runs.last().map(|r| &r.data))
                        .map_err(serde::de::Error::custom)?;
                    runs.push(run);
                }
                Ok(LoadedRuns(runs))
            }
        }
        d.deserialize_seq(Runs)
    }
}

/// The clock merged runs are put on: monotonic instants are wall-clock
/// nanoseconds shifted by 2^63, so every time since 1677 is above 0
/// ("never").
pub const MERGE_ANCHOR: WallAnchor = WallAnchor::fixed(1 << 63, 0);

fn mono(time: Rfc3339) -> Nanos {
    (wall_i64(time.0) as i128 + (1i128 << 63)) as Nanos
}

/// A run from its JSON; its body shares `previous`'s when equal.
fn load(json: ClientRunFields<'_>, previous: Option<&Arc<[u8]>>) -> Result<LoadedRun, String> {
    let failure = match &json.error {
        None => None,
        Some(text) => {
            let (kind, detail) = text.split_once(": ").unwrap_or((text, ""));
            let problem = Problem::from_name(kind)
                .ok_or_else(|| format!("run {}: unknown error kind '{kind}'", json.run_count))?;
            Some(Box::new(Failure {
                problem,
                detail: detail.into(),
            }))
        }
    };
    let bytes = data_bytes(Some(&json.data), json.data_base64.as_deref())
        .map_err(|e| format!("run {}: {e}", json.run_count))?;
    let data = match previous {
        Some(p) if **p == *bytes => Arc::clone(p),
        _ => Arc::from(bytes),
    };
    let echo = json.echoes.map(|echoes| {
        Box::new(LoadedEcho {
            echoes,
            error: json.echo_error.map(Into::into),
            order: json.echo_order,
        })
    });
    Ok(LoadedRun {
        echo,
        count: json.run_count,
        due: mono(json.time),
        run: ClientRun {
            start: json.client_start.map_or(0, mono),
            end: json.client_end.map_or(0, mono),
            connect_ns: json.connect_ns.and_then(NonZeroU64::new),
            tls_ns: json.tls_handshake_ns.and_then(NonZeroU64::new),
            proxy_connect_ns: json.proxy_connect_ns.and_then(Nanos32::new),
            status: json.status.unwrap_or(0),
            body_uuid: None,
            failure,
        },
        data,
    })
}

/// Every shard's runs merged as one test.
pub struct Merged {
    pub outcome: DriverOutcome,
    pub body: BodyPlan,
    /// Each run's echoes as its shard uploaded them (raw runs), in
    /// `outcome.runs` order.
    pub echoes: Vec<Option<Box<LoadedEcho>>>,
}

/// Every shard's runs as one test, in count order (a count two shards sent
/// comes twice, in shard order), with the body each carried. Wall time
/// runs from the first run due to the last answer.
pub fn merge(records: Vec<ShardRecord>, client_delay: Nanos) -> Merged {
    let mut all: Vec<(u32, LoadedRun)> = records
        .into_iter()
        .flat_map(|r| {
            let shard = r.shard as u32;
            r.runs.0.into_iter().map(move |run| (shard, run))
        })
        .collect();
    all.sort_by_key(|(shard, run)| (run.count, *shard));
    let started = all.iter().map(|(_, r)| r.due).min().unwrap_or(0);
    let finished = all
        .iter()
        .map(|(_, r)| r.run.end.max(r.due))
        .max()
        .unwrap_or(started);
    let same_body = all
        .windows(2)
        .all(|w| Arc::ptr_eq(&w[0].1.data, &w[1].1.data) || w[0].1.data == w[1].1.data);
    let body = match all.first() {
        Some((_, first)) if same_body => BodyPlan::Fixed(first.data.to_vec()),
        None => BodyPlan::Fixed(Vec::new()),
        Some(_) => BodyPlan::PerRun(all.iter().map(|(_, r)| Arc::clone(&r.data)).collect()),
    };
    let listed = all
        .iter()
        .map(|(shard, r)| ListedRun {
            count: r.count,
            due: r.due,
            shard: *shard,
        })
        .collect();
    let (runs, echoes): (Vec<ClientRun>, Vec<_>) =
        all.into_iter().map(|(_, r)| (r.run, r.echo)).unzip();
    let outcome = DriverOutcome {
        connections_opened: runs.iter().filter(|r| r.connect_ns.is_some()).count() as u64,
        tls: None,
        runs,
        started,
        finished,
        client_delay,
        anchor: MERGE_ANCHOR,
        interrupted: false,
        numbering: Numbering::Listed(listed),
    };
    Merged {
        outcome,
        body,
        echoes,
    }
}

/// Which shards reported, from the status route's list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShardCoverage {
    /// The number of shards (the largest any shard gave).
    pub shards: u64,
    /// Shards whose upload is complete.
    pub complete: Vec<u64>,
    /// Shards that uploaded part of their record.
    pub incomplete: Vec<u64>,
    /// Shards that never uploaded.
    pub absent: Vec<u64>,
    /// Numbers of shards the shards gave, when they disagree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disagree: Vec<u64>,
}

impl ShardCoverage {
    pub fn of(status: &[ShardStatus]) -> ShardCoverage {
        let shards = status.iter().map(|s| s.shards).max().unwrap_or(0);
        let mut counts: Vec<u64> = status.iter().map(|s| s.shards).collect();
        counts.sort_unstable();
        counts.dedup();
        let listed = |i: u64| status.iter().any(|s| s.shard == i);
        let of_kind = |complete: bool| -> Vec<u64> {
            let mut v: Vec<u64> = status
                .iter()
                .filter(|s| s.complete == complete)
                .map(|s| s.shard)
                .collect();
            v.sort_unstable();
            v
        };
        ShardCoverage {
            shards,
            complete: of_kind(true),
            incomplete: of_kind(false),
            absent: (0..shards).filter(|&i| !listed(i)).collect(),
            disagree: if counts.len() > 1 { counts } else { Vec::new() },
        }
    }

    /// What is wrong with the shards' reports, in words; None when every
    /// shard reported in full.
    pub fn problem(&self) -> Option<String> {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if self.shards == 0 {
            parts.push("no shard has uploaded its record".to_owned());
        }
        if !self.absent.is_empty() {
            parts.push(format!(
                "shards never reported: {} (of {})",
                list(&self.absent),
                self.shards
            ));
        }
        if !self.incomplete.is_empty() {
            parts.push(format!(
                "shards with an unfinished upload: {}",
                list(&self.incomplete)
            ));
        }
        if !self.disagree.is_empty() {
            parts.push(format!(
                "the shards disagree on their number: {}",
                list(&self.disagree)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shard: u64, shards: u64, runs: &str) -> ShardRecord {
        serde_json::from_str(&format!(
            r#"{{"shard": {shard}, "shards": {shards}, "complete": true, "runs": [{runs}]}}"#
        ))
        .unwrap()
    }

    fn run(count: u64, due_s: u32, data: &str, error: Option<&str>) -> String {
        let error = error.map_or(String::new(), |e| format!(r#", "error": "{e}""#));
        format!(
            r#"{{"run_count": {count}, "time": "2026-01-01T00:00:{due_s:02}Z", "data": "{data}",
                "client_start": "2026-01-01T00:00:{due_s:02}.000001Z",
                "client_end": "2026-01-01T00:00:{due_s:02}.000051Z", "client_duration_ns": 50000,
                "status": 200{error}}}"#
        )
    }

    #[test]
    fn runs_round_trip_through_their_json() {
        let r = record(
            0,
            1,
            &run(1, 5, "x", Some("timeout: no answer within 5 ms")),
        );
        let loaded = &r.runs.0[0];
        assert_eq!(loaded.count, 1);
        assert_eq!(loaded.run.end - loaded.run.start, 50_000);
        assert_eq!(loaded.run.start - loaded.due, 1_000);
        let failure = loaded.run.failure.as_deref().unwrap();
        assert_eq!(failure.problem, Problem::Timeout);
        assert_eq!(&*failure.detail, "no answer within 5 ms");
        assert_eq!(
            MERGE_ANCHOR.wall(loaded.due),
            crate::time::parse_rfc3339("2026-01-01T00:00:05Z").unwrap()
        );
        let bad: Result<ShardRecord, _> = serde_json::from_str(
            r#"{"shard": 0, "shards": 1, "complete": true, "runs": [{"run_count": 1,
                "time": "2026-01-01T00:00:00Z", "error": "gremlins: yes"}]}"#,
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown error kind 'gremlins'"));
    }

    #[test]
    fn merging_orders_by_count_and_keeps_each_shards_schedule() {
        let shard0 = record(
            0,
            2,
            &[run(1, 10, "a", None), run(3, 12, "a", None)].join(","),
        );
        let shard1 = record(
            1,
            2,
            &[run(2, 3, "a", None), run(3, 4, "a", None)].join(","),
        );
        let Merged { outcome, body, .. } = merge(vec![shard1, shard0], 7);
        let counts: Vec<u64> = (0..4).map(|i| outcome.count(i)).collect();
        assert_eq!(counts, [1, 2, 3, 3]);
        let Numbering::Listed(listed) = &outcome.numbering else {
            panic!("listed")
        };
        assert_eq!(
            listed[2].shard, 0,
            "a count two shards sent: in shard order"
        );
        assert_eq!(listed[3].shard, 1);
        assert!(outcome.is_repeat(3) && !outcome.is_repeat(2));
        assert_eq!(outcome.started, listed[1].due, "the first run due");
        assert_eq!(
            outcome.due(0) - outcome.due(1),
            7 * crate::event::clock::SECOND
        );
        assert!(matches!(body, BodyPlan::Fixed(ref b) if b == b"a"));
        assert_eq!(outcome.covers(5), 5);
        let Merged { body, .. } = merge(
            vec![record(
                0,
                1,
                &[run(1, 1, "a", None), run(2, 2, "b", None)].join(","),
            )],
            0,
        );
        let BodyPlan::PerRun(bodies) = body else {
            panic!("per run")
        };
        assert_eq!(&*bodies[1], b"b");
    }

    #[test]
    fn coverage_names_absent_and_unfinished_shards() {
        let status = |shard, shards, complete| ShardStatus {
            shard,
            shards,
            runs: 1,
            complete,
        };
        let all = ShardCoverage::of(&[status(1, 3, true), status(0, 3, true), status(2, 3, true)]);
        assert_eq!(all.problem(), None);
        assert_eq!(all.complete, [0, 1, 2]);
        let some = ShardCoverage::of(&[status(0, 3, true), status(2, 3, false)]);
        assert_eq!(some.absent, [1]);
        assert_eq!(
            some.problem().unwrap(),
            "shards never reported: 1 (of 3); shards with an unfinished upload: 2"
        );
        let odd = ShardCoverage::of(&[status(0, 2, true), status(1, 2, true), status(0, 3, true)]);
        assert_eq!(odd.absent, [2]);
        assert!(odd
            .problem()
            .unwrap()
            .contains("disagree on their number: 2, 3"));
        assert!(ShardCoverage::of(&[])
            .problem()
            .unwrap()
            .contains("no shard"));
    }
}
