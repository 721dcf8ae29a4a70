//! Compares what the client sent with what the server recorded, run by run.
//!
//! Every client run yields one verdict; so does every server record whose
//! count the client never sent. A verdict's problems are empty when all is
//! well: otherwise a client-side failure, an upstream error the server
//! recorded, or a discrepancy (missing, corrupted, duplicated, unexpected).
//! The server's records are indexed by a sorted array of positions (4 bytes
//! a run) and walked in run order, so a million runs cost no hash map.

use crate::problem::Problem;
use crate::run::{BodyPlan, DriverOutcome, Numbering, RunVerdict};
use crate::wire::RecordedRun;

/// Verdicts for the runs sent, one each in `outcome.runs` order; then,
/// when every count of the group's `run_count` is expected (merged
/// shards), one for each count no run carries (missing); then one for each
/// server record of a count never sent (unexpected). Runs an interrupt kept
/// from being sent get no verdict: the summary counts them. Server records
/// of counts `outcome` does not own (another shard's) are not looked at.
///
/// `server` is None when the server's record could not be fetched: then only
/// the client's own failures are reported.
pub fn compare(
    outcome: &DriverOutcome,
    body: &BodyPlan,
    server: Option<&[RecordedRun]>,
    run_count: u64,
) -> Vec<RunVerdict> {
    let client = &outcome.runs;
    let verified = server.is_some();
    let server = server.unwrap_or(&[]);
    // This test's server records by run count, then arrival.
    let mut order: Vec<u32> = (0..server.len() as u32)
        .filter(|&i| outcome.owns(server[i as usize].run_count))
        .collect();
    order.sort_unstable_by_key(|&i| (server[i as usize].run_count, i));
    let count_at = |k: usize| server[order[k] as usize].run_count;
    // Positions in `order` of records no run sent matched, in count order.
    let mut unmatched: Vec<usize> = Vec::new();
    let mut cursor = 0;
    let mut matched = 0..0;
    let mut verdicts = Vec::with_capacity(client.len() + 1);
    let mut uuid_text = [0u8; 36];
    for (i, run) in client.iter().enumerate() {
        let n = outcome.count(i);
        if !outcome.is_repeat(i) {
            while cursor < order.len() && count_at(cursor) < n {
                unmatched.push(cursor);
                cursor += 1;
            }
            let first = cursor;
            while cursor < order.len() && count_at(cursor) == n {
                cursor += 1;
            }
            matched = first..cursor;
        }
        let matches = &order[matched.clone()];
        let copies = copies_of(outcome, i);
        let mut problems = Vec::new();
        if let Some(f) = &run.failure {
            problems.push((f.problem, f.detail.to_string()));
        }
        let answered = run.failure.is_none();
        if verified && matches.is_empty() && answered {
            problems.push((
                Problem::Missing,
                "missing on the server: answered 200 but not recorded".to_owned(),
            ));
        }
        let sent = body.bytes(i, run, &mut uuid_text);
        // One copy must equal every record of its count; of copies that
        // several shards sent, each must equal one of the records.
        let differs = |&k: &u32| difference(sent, &server[k as usize].data);
        let corrupted = match copies.len() {
            1 => matches.iter().find_map(differs),
            _ if matches.iter().any(|k| differs(k).is_none()) => None,
            _ => matches.first().and_then(differs),
        };
        if let Some(why) = corrupted {
            problems.push((Problem::Corrupted, format!("data differs: {why}")));
        }
        let upstream = matches.first().and_then(|&k| server[k as usize].upstream());
        if let Some(u) = upstream {
            // An answer outside 200-399 is a status problem; anything else
            // the server recorded (no answer, a bad one) an upstream error.
            let status = (100..600).contains(&u.code) && !(200..400).contains(&u.code);
            match (&u.error, status) {
                (Some(e), true) => problems.push((Problem::UpstreamStatus, e.to_string())),
                (None, true) => problems.push((
                    Problem::UpstreamStatus,
                    format!("upstream answered {} (outside 200-399)", u.code),
                )),
                (Some(e), false) => problems.push((Problem::Upstream, e.to_string())),
                (None, false) => {}
            }
        }
        if copies.len() > 1 {
            problems.push((
                Problem::Duplicated,
                format!(
                    "run {n} was sent by {}",
                    shards_text(outcome, copies.clone())
                ),
            ));
        }
        if matches.len() > copies.len() {
            problems.push((
                Problem::Duplicated,
                format!("recorded {} times by the server", matches.len()),
            ));
        }
        verdicts.push(RunVerdict::new(n, matches.first().copied(), problems));
    }
    unmatched.extend(cursor..order.len());
    // Counts no run carried, where every count is expected: missing, with
    // the server's records of them (if any) attached. Those records are in
    // `unmatched`, in count order.
    let expected =
        |k: &usize| outcome.expects_every_count() && (1..=run_count).contains(&count_at(*k));
    let (attached, unexpected): (Vec<usize>, Vec<usize>) =
        unmatched.into_iter().partition(expected);
    if outcome.expects_every_count() {
        let mut attached = attached.into_iter().peekable();
        let mut sent = (0..client.len()).map(|i| outcome.count(i)).peekable();
        for n in 1..=run_count {
            if sent.next_if_eq(&n).is_some() {
                while sent.next_if_eq(&n).is_some() {}
                continue;
            }
            let mut recorded = Vec::new();
            while let Some(k) = attached.next_if(|&k| count_at(k) == n) {
                recorded.push(order[k]);
            }
            let why = match recorded.len() {
                0 => format!("no shard sent run {n}"),
                times => format!("no shard sent run {n}, yet the server recorded it {times} times"),
            };
            verdicts.push(RunVerdict::new(
                n,
                recorded.first().copied(),
                vec![(Problem::Missing, why)],
            ));
        }
    }
    // What is left was never sent: count 0 sorts first, counts past the
    // last sent (or past run_count) last.
    for k in unexpected {
        let i = order[k];
        let count = server[i as usize].run_count;
        let why = format!("the server recorded run {count} which this client never sent");
        verdicts.push(RunVerdict::new(
            count,
            Some(i),
            vec![(Problem::Unexpected, why)],
        ));
    }
    verdicts
}

/// The indexes of the runs that carry the same count as run `index`.
fn copies_of(outcome: &DriverOutcome, index: usize) -> std::ops::Range<usize> {
    // One client or one shard sends each count once.
    if let Numbering::Stride { .. } = outcome.numbering {
        return index..index + 1;
    }
    let n = outcome.count(index);
    let mut first = index;
    while first > 0 && outcome.count(first - 1) == n {
        first -= 1;
    }
    let mut end = index + 1;
    while end < outcome.runs.len() && outcome.count(end) == n {
        end += 1;
    }
    first..end
}

/// "shards 0 and 2", for copies of one count.
fn shards_text(outcome: &DriverOutcome, copies: std::ops::Range<usize>) -> String {
    let Numbering::Listed(runs) = &outcome.numbering else {
        return format!("{} clients", copies.len());
    };
    let names: Vec<String> = copies
        .filter_map(|i| runs.get(i).map(|r| r.shard.to_string()))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("shards {} and {last}", rest.join(", ")),
        _ => format!("shard {}", names.join("")),
    }
}

/// Where two bodies first differ, in words; None when equal.
fn difference(sent: &[u8], recorded: &[u8]) -> Option<String> {
    if sent == recorded {
        return None;
    }
    let at = sent
        .iter()
        .zip(recorded)
        .take_while(|(a, b)| a == b)
        .count();
    Some(format!(
        "first difference at byte {at} (sent {} bytes, server recorded {})",
        sent.len(),
        recorded.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{ClientRun, Failure, ListedRun};
    use crate::wire::{RunExtra, UpstreamOutcome};
    use std::sync::Arc;

    fn run(failure: Option<Problem>) -> ClientRun {
        ClientRun {
            start: 2,
            end: 3,
            connect_ns: None,
            tls_ns: None,
            proxy_connect_ns: None,
            status: 200,
            body_uuid: None,
            failure: failure.map(|problem| {
                Box::new(Failure {
                    problem,
                    detail: "x".into(),
                })
            }),
        }
    }

    fn record(run_count: u64, data: &[u8]) -> RecordedRun {
        RecordedRun {
            run_id: uuid::Uuid::nil(),
            run_count,
            server_start: 1,
            server_end: 2,
            data: Arc::from(data),
            extra: None,
        }
    }

    /// One client's runs, in order, compared.
    fn check(
        client: &[ClientRun],
        body: &BodyPlan,
        server: Option<&[RecordedRun]>,
    ) -> Vec<RunVerdict> {
        let outcome = outcome(client.to_vec(), Numbering::ALL);
        compare(&outcome, body, server, client.len() as u64)
    }

    fn outcome(runs: Vec<ClientRun>, numbering: Numbering) -> DriverOutcome {
        DriverOutcome {
            runs,
            started: 1,
            finished: 9,
            client_delay: 0,
            anchor: crate::event::clock::WallAnchor::fixed(0, 0),
            interrupted: false,
            connections_opened: 1,
            tls: None,
            numbering,
        }
    }

    fn kinds(v: &RunVerdict) -> Vec<Problem> {
        v.problems().iter().map(|p| p.0).collect()
    }

    #[test]
    fn finds_each_discrepancy() {
        let body = BodyPlan::Fixed(b"hello".to_vec());
        let client = vec![
            run(None),
            run(None),
            run(None),
            run(Some(Problem::Timeout)),
            run(None),
        ];
        let server = [
            record(5, b"hello"),
            record(9, b"hello"),
            record(1, b"hello"),
            record(3, b"hellp"),
            record(5, b"hello"),
            record(0, b"hello"),
        ];
        let v = check(&client, &body, Some(&server));
        assert_eq!(v.len(), 7);
        assert!(v[0].is_ok());
        assert_eq!(v[0].server_index, Some(2));
        assert_eq!(kinds(&v[1]), vec![Problem::Missing]);
        assert_eq!(kinds(&v[2]), vec![Problem::Corrupted]);
        assert!(v[2].problems()[0].1.contains("byte 4"));
        assert_eq!(
            kinds(&v[3]),
            vec![Problem::Timeout],
            "a failed run is not also missing"
        );
        assert_eq!(kinds(&v[4]), vec![Problem::Duplicated]);
        assert_eq!(v[4].server_index, Some(0), "matched with the first arrival");
        assert_eq!(
            (v[5].run_count, kinds(&v[5])),
            (0, vec![Problem::Unexpected])
        );
        assert_eq!(
            (v[6].run_count, kinds(&v[6])),
            (9, vec![Problem::Unexpected])
        );
        assert!(v[6].is_unexpected());
    }

    #[test]
    fn uuid_bodies_are_compared_per_run() {
        let mut ids = crate::ids::IdGen::new();
        let mut a = run(None);
        a.body_uuid = Some(ids.uuid());
        let mut b = run(None);
        b.body_uuid = Some(ids.uuid());
        let text = |r: &ClientRun| r.body_uuid.map(|u| u.to_string()).unwrap_or_default();
        let (ta, tb) = (text(&a), text(&b));
        // The server swapped the two bodies: both runs are corrupted.
        let server = [record(1, tb.as_bytes()), record(2, ta.as_bytes())];
        let v = check(&[a.clone(), b.clone()], &BodyPlan::Uuid, Some(&server));
        assert_eq!(kinds(&v[0]), vec![Problem::Corrupted]);
        assert_eq!(kinds(&v[1]), vec![Problem::Corrupted]);
        let server = [record(1, ta.as_bytes()), record(2, tb.as_bytes())];
        assert!(check(&[a, b], &BodyPlan::Uuid, Some(&server))
            .iter()
            .all(RunVerdict::is_ok));
    }

    #[test]
    fn upstream_errors_fail_the_run() {
        let mut r = record(1, b"");
        r.extra = Some(Box::new(RunExtra {
            upstream: Some(UpstreamOutcome {
                code: 0,
                time_ns: 5,
                dns_ns: None,
                connect_ns: None,
                tls_ns: None,
                error: Some("connect failed: refused".into()),
            }),
            ..RunExtra::default()
        }));
        let v = check(&[run(None)], &BodyPlan::Fixed(Vec::new()), Some(&[r]));
        assert_eq!(kinds(&v[0]), vec![Problem::Upstream]);
    }

    #[test]
    fn upstream_answers_outside_200_to_399_fail_the_run_by_status() {
        let outcome = |code: u16, error: Option<&str>| {
            let mut r = record(1, b"");
            r.extra = Some(Box::new(RunExtra {
                upstream: Some(UpstreamOutcome {
                    code,
                    time_ns: 5,
                    dns_ns: None,
                    connect_ns: None,
                    tls_ns: None,
                    error: error.map(Into::into),
                }),
                ..RunExtra::default()
            }));
            let v = check(&[run(None)], &BodyPlan::Fixed(Vec::new()), Some(&[r]));
            kinds(&v[0])
        };
        let answered = "upstream answered 503 Service Unavailable (outside 200-399)";
        assert_eq!(outcome(503, Some(answered)), vec![Problem::UpstreamStatus]);
        // A record from a server that did not call it an error.
        assert_eq!(outcome(404, None), vec![Problem::UpstreamStatus]);
        assert_eq!(outcome(200, None), vec![]);
        assert_eq!(outcome(302, None), vec![]);
        let too_big = "upstream response body (status 200) larger than 1 bytes";
        assert_eq!(outcome(200, Some(too_big)), vec![Problem::Upstream]);
    }

    #[test]
    fn without_the_server_record_only_client_failures_count() {
        let v = check(
            &[run(None), run(Some(Problem::Refused))],
            &BodyPlan::Uuid,
            None,
        );
        assert!(v[0].is_ok());
        assert_eq!(kinds(&v[1]), vec![Problem::Refused]);
    }

    #[test]
    fn unsent_runs_get_no_verdict_and_their_records_are_unexpected() {
        let v = check(&[run(None)], &BodyPlan::Uuid, Some(&[record(2, b"")]));
        assert_eq!(v.len(), 2);
        assert_eq!(kinds(&v[1]), vec![Problem::Unexpected]);
    }

    #[test]
    fn a_shard_verifies_only_its_own_counts() {
        // Shard 1 of 3 sent runs 2 and 5.
        let shard = outcome(
            vec![run(None), run(None)],
            Numbering::Stride {
                first: 2,
                stride: 3,
            },
        );
        assert_eq!(
            (shard.count(1), shard.covers(7), shard.covers(1)),
            (5, 2, 0)
        );
        let body = BodyPlan::Fixed(b"a".to_vec());
        let server = [1, 2, 3, 5, 8, 5, 0].map(|n| record(n, b"a"));
        let v = compare(&shard, &body, Some(&server), 7);
        let found: Vec<(u64, Option<u32>, Vec<Problem>)> = v
            .iter()
            .map(|v| (v.run_count, v.server_index, kinds(v)))
            .collect();
        assert_eq!(
            found,
            [
                (2, Some(1), vec![]),
                (5, Some(3), vec![Problem::Duplicated]),
                (8, Some(4), vec![Problem::Unexpected]),
            ],
            "runs 1, 3 and 0 are not this shard's"
        );
    }

    #[test]
    fn merged_shards_must_send_every_count_once() {
        let listed = |count, shard| ListedRun {
            count,
            due: 1,
            shard,
        };
        // Runs 1, 2 (by shards 1 and 2) and 4 of 5; 3 and 5 never sent.
        let merged = outcome(
            vec![run(None), run(None), run(None), run(None)],
            Numbering::Listed(vec![listed(1, 0), listed(2, 1), listed(2, 2), listed(4, 0)]),
        );
        let body = BodyPlan::PerRun(
            [b"a", b"b", b"c", b"d"]
                .iter()
                .map(|b| std::sync::Arc::from(&b[..]))
                .collect(),
        );
        let server = [(1, "a"), (2, "c"), (2, "b"), (3, "x"), (4, "d"), (7, "a")]
            .map(|(n, data)| record(n, data.as_bytes()));
        let v = compare(&merged, &body, Some(&server), 5);
        let summary: Vec<(u64, Vec<Problem>)> = v.iter().map(|v| (v.run_count, kinds(v))).collect();
        assert_eq!(
            summary,
            [
                (1, vec![]),
                (2, vec![Problem::Duplicated]),
                (2, vec![Problem::Duplicated]),
                (4, vec![]),
                (3, vec![Problem::Missing]),
                (5, vec![Problem::Missing]),
                (7, vec![Problem::Unexpected]),
            ],
            "each copy matches one of its count's records: neither is corrupted"
        );
        assert_eq!(v[1].problems()[0].1, "run 2 was sent by shards 1 and 2");
        assert_eq!(
            (v[4].server_index, v[4].problems()[0].1.as_str()),
            (
                Some(3),
                "no shard sent run 3, yet the server recorded it 1 times"
            )
        );
        assert_eq!(v[5].problems()[0].1, "no shard sent run 5");
        assert!(merged.is_repeat(2) && !merged.is_repeat(1));
    }

    #[test]
    fn a_verdict_is_small() {
        assert_eq!(std::mem::size_of::<RunVerdict>(), 24);
        assert!(std::mem::size_of::<ClientRun>() <= 64);
    }
}
