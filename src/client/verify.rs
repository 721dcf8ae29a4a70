//! Compares what the client sent with what the server recorded, run by run.
//!
//! Every client run yields one verdict; so does every server record whose
//! count the client never sent. A verdict's problems are empty when all is
//! well: otherwise a client-side failure, an upstream error the server
//! recorded, or a discrepancy (missing, corrupted, duplicated, unexpected).
//! The server's records are indexed by a sorted array of positions (4 bytes
//! a run) and walked in run order, so a million runs cost no hash map.

use crate::problem::Problem;
use crate::run::{BodyPlan, ClientRun, RunVerdict};
use crate::wire::RecordedRun;

/// Verdicts for the runs sent, `client[n - 1]` being run `n`, in order,
/// then one for each server record of a count never sent. Runs an interrupt
/// kept from being sent get no verdict: the summary counts them.
///
/// `server` is None when the server's record could not be fetched: then only
/// the client's own failures are reported.
pub fn compare(
    client: &[ClientRun],
    body: &BodyPlan,
    server: Option<&[RecordedRun]>,
) -> Vec<RunVerdict> {
    let verified = server.is_some();
    let server = server.unwrap_or(&[]);
    // Server records by run count, then arrival.
    let mut order: Vec<u32> = (0..server.len() as u32).collect();
    order.sort_unstable_by_key(|&i| (server[i as usize].run_count, i));
    let mut cursor = order.partition_point(|&i| server[i as usize].run_count < 1);
    let run_count = client.len() as u64;
    let mut verdicts = Vec::with_capacity(client.len() + 1);
    let mut uuid_text = [0u8; 36];
    for (run, n) in client.iter().zip(1u64..) {
        let first = cursor;
        while cursor < order.len() && server[order[cursor] as usize].run_count == n {
            cursor += 1;
        }
        let matches = &order[first..cursor];
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
        let sent: &[u8] = match (body, run.body_uuid) {
            (BodyPlan::Fixed(bytes), _) => bytes,
            (BodyPlan::Uuid, Some(uuid)) => {
                uuid.hyphenated().encode_lower(&mut uuid_text).as_bytes()
            }
            (BodyPlan::Uuid, None) => b"",
        };
        if let Some(why) = matches
            .iter()
            .find_map(|&i| difference(sent, &server[i as usize].data))
        {
            problems.push((Problem::Corrupted, format!("data differs: {why}")));
        }
        let upstream = matches
            .first()
            .and_then(|&i| server[i as usize].upstream.as_deref());
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
        if matches.len() > 1 {
            problems.push((
                Problem::Duplicated,
                format!("recorded {} times by the server", matches.len()),
            ));
        }
        verdicts.push(RunVerdict::new(n, matches.first().copied(), problems));
    }
    // Whatever the walk did not reach was never sent: count 0 sorts first,
    // counts past run_count last.
    let never_sent = order.iter().filter(|&&i| {
        let count = server[i as usize].run_count;
        count == 0 || count > run_count
    });
    for &i in never_sent {
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
    use crate::run::Failure;
    use crate::wire::UpstreamOutcome;
    use std::sync::Arc;

    fn run(failure: Option<Problem>) -> ClientRun {
        ClientRun {
            start: 2,
            end: 3,
            connect_ns: None,
            tls_ns: None,
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
            upstream: None,
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
        let v = compare(&client, &body, Some(&server));
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
        let v = compare(&[a.clone(), b.clone()], &BodyPlan::Uuid, Some(&server));
        assert_eq!(kinds(&v[0]), vec![Problem::Corrupted]);
        assert_eq!(kinds(&v[1]), vec![Problem::Corrupted]);
        let server = [record(1, ta.as_bytes()), record(2, tb.as_bytes())];
        assert!(compare(&[a, b], &BodyPlan::Uuid, Some(&server))
            .iter()
            .all(RunVerdict::is_ok));
    }

    #[test]
    fn upstream_errors_fail_the_run() {
        let mut r = record(1, b"");
        r.upstream = Some(Box::new(UpstreamOutcome {
            code: 0,
            time_ns: 5,
            dns_ns: None,
            connect_ns: None,
            tls_ns: None,
            error: Some("connect failed: refused".into()),
        }));
        let v = compare(&[run(None)], &BodyPlan::Fixed(Vec::new()), Some(&[r]));
        assert_eq!(kinds(&v[0]), vec![Problem::Upstream]);
    }

    #[test]
    fn upstream_answers_outside_200_to_399_fail_the_run_by_status() {
        let outcome = |code: u16, error: Option<&str>| {
            let mut r = record(1, b"");
            r.upstream = Some(Box::new(UpstreamOutcome {
                code,
                time_ns: 5,
                dns_ns: None,
                connect_ns: None,
                tls_ns: None,
                error: error.map(Into::into),
            }));
            let v = compare(&[run(None)], &BodyPlan::Fixed(Vec::new()), Some(&[r]));
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
        let v = compare(
            &[run(None), run(Some(Problem::Refused))],
            &BodyPlan::Uuid,
            None,
        );
        assert!(v[0].is_ok());
        assert_eq!(kinds(&v[1]), vec![Problem::Refused]);
    }

    #[test]
    fn unsent_runs_get_no_verdict_and_their_records_are_unexpected() {
        let v = compare(&[run(None)], &BodyPlan::Uuid, Some(&[record(2, b"")]));
        assert_eq!(v.len(), 2);
        assert_eq!(kinds(&v[1]), vec![Problem::Unexpected]);
    }

    #[test]
    fn a_verdict_is_small() {
        assert_eq!(std::mem::size_of::<RunVerdict>(), 24);
        assert!(std::mem::size_of::<ClientRun>() <= 64);
    }
}
