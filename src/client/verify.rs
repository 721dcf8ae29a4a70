//! Compares what the client sent with what the server recorded, run by run.
//!
//! Every client run yields one result; so does every server record whose
//! count the client never sent. A result's `error` is set only when
//! something is wrong: a client-side failure, or a discrepancy (missing,
//! corrupted, duplicated, unexpected).

use super::driver::{BodyPlan, ClientRun};
use crate::report::problem::Problem;
use std::collections::HashMap;

/// What the comparison needs of one server record.
pub struct ServerRecord<'a> {
    pub run_count: u64,
    pub data: &'a [u8],
    /// The error the server recorded for its upstream request, if any.
    pub upstream_error: Option<&'a str>,
}

/// The verdict on one run: its problems, and which server record (index)
/// it was matched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub run_count: u64,
    pub server_index: Option<usize>,
    pub problems: Vec<(Problem, String)>,
}

/// Verdicts for client runs 1..=run_count in order, then one for each
/// server record of a count never sent.
///
/// `server` is None when the server's record could not be fetched: then only
/// the client's own failures are reported.
pub fn compare(
    run_count: u64,
    client: &[ClientRun],
    body: &BodyPlan,
    server: Option<&[ServerRecord<'_>]>,
) -> Vec<Verdict> {
    let verified = server.is_some();
    let server = server.unwrap_or(&[]);
    let mut by_count: HashMap<u64, Vec<usize>> = HashMap::with_capacity(server.len());
    for (i, record) in server.iter().enumerate() {
        by_count.entry(record.run_count).or_default().push(i);
    }
    let mut verdicts = Vec::with_capacity(run_count as usize);
    let mut uuid_text = [0u8; 36];
    for n in 1..=run_count {
        let mut problems = Vec::new();
        let matches = by_count.get(&n).map(Vec::as_slice).unwrap_or(&[]);
        let run = client.get(n as usize - 1);
        match run {
            None => problems.push((
                Problem::Interrupted,
                "not sent: the test was interrupted".to_owned(),
            )),
            Some(run) => {
                if let Some(f) = &run.failure {
                    problems.push((f.problem, f.detail.to_string()));
                }
            }
        }
        let sent: Option<&[u8]> = run.map(|run| match (body, run.body_uuid) {
            (BodyPlan::Fixed(bytes), _) => bytes.as_slice(),
            (BodyPlan::Uuid, Some(uuid)) => {
                uuid.hyphenated().encode_lower(&mut uuid_text).as_bytes()
            }
            (BodyPlan::Uuid, None) => b"",
        });
        let answered = run.is_some_and(|r| r.failure.is_none());
        if verified && matches.is_empty() && answered {
            problems.push((
                Problem::Missing,
                "missing on the server: answered 200 but not recorded".to_owned(),
            ));
        }
        if let Some(sent) = sent {
            for &i in matches {
                if let Some(why) = difference(sent, server[i].data) {
                    problems.push((Problem::Corrupted, format!("data differs: {why}")));
                    break;
                }
            }
        }
        if let Some(e) = matches.first().and_then(|&i| server[i].upstream_error) {
            problems.push((Problem::Upstream, e.to_owned()));
        }
        if matches.len() > 1 {
            problems.push((
                Problem::Duplicated,
                format!("recorded {} times by the server", matches.len()),
            ));
        }
        verdicts.push(Verdict {
            run_count: n,
            server_index: matches.first().copied(),
            problems,
        });
    }
    let mut unexpected: Vec<usize> = server
        .iter()
        .enumerate()
        .filter(|(_, r)| r.run_count == 0 || r.run_count > run_count)
        .map(|(i, _)| i)
        .collect();
    unexpected.sort_by_key(|&i| (server[i].run_count, i));
    for i in unexpected {
        verdicts.push(Verdict {
            run_count: server[i].run_count,
            server_index: Some(i),
            problems: vec![(
                Problem::Unexpected,
                format!(
                    "the server recorded run {} which this client never sent",
                    server[i].run_count
                ),
            )],
        });
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
    use crate::client::driver::Failure;

    fn run(failure: Option<Problem>) -> ClientRun {
        ClientRun {
            due: 1,
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

    fn kinds(v: &Verdict) -> Vec<Problem> {
        v.problems.iter().map(|p| p.0).collect()
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
            ServerRecord {
                run_count: 1,
                data: b"hello",
                upstream_error: None,
            },
            ServerRecord {
                run_count: 3,
                data: b"hellp",
                upstream_error: None,
            },
            ServerRecord {
                run_count: 5,
                data: b"hello",
                upstream_error: None,
            },
            ServerRecord {
                run_count: 5,
                data: b"hello",
                upstream_error: None,
            },
            ServerRecord {
                run_count: 9,
                data: b"hello",
                upstream_error: None,
            },
        ];
        let v = compare(5, &client, &body, Some(&server));
        assert_eq!(v.len(), 6);
        assert!(kinds(&v[0]).is_empty());
        assert_eq!(kinds(&v[1]), vec![Problem::Missing]);
        assert_eq!(kinds(&v[2]), vec![Problem::Corrupted]);
        assert!(v[2].problems[0].1.contains("byte 4"));
        assert_eq!(
            kinds(&v[3]),
            vec![Problem::Timeout],
            "a failed run is not also missing"
        );
        assert_eq!(kinds(&v[4]), vec![Problem::Duplicated]);
        assert_eq!(
            (v[5].run_count, kinds(&v[5])),
            (9, vec![Problem::Unexpected])
        );
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
        let server = [
            ServerRecord {
                run_count: 1,
                data: tb.as_bytes(),
                upstream_error: None,
            },
            ServerRecord {
                run_count: 2,
                data: ta.as_bytes(),
                upstream_error: None,
            },
        ];
        let v = compare(2, &[a.clone(), b.clone()], &BodyPlan::Uuid, Some(&server));
        assert_eq!(kinds(&v[0]), vec![Problem::Corrupted]);
        assert_eq!(kinds(&v[1]), vec![Problem::Corrupted]);
        let server = [
            ServerRecord {
                run_count: 1,
                data: ta.as_bytes(),
                upstream_error: None,
            },
            ServerRecord {
                run_count: 2,
                data: tb.as_bytes(),
                upstream_error: None,
            },
        ];
        assert!(compare(2, &[a, b], &BodyPlan::Uuid, Some(&server))
            .iter()
            .all(|v| v.problems.is_empty()));
    }

    #[test]
    fn without_the_server_record_only_client_failures_count() {
        let v = compare(
            2,
            &[run(None), run(Some(Problem::Refused))],
            &BodyPlan::Uuid,
            None,
        );
        assert!(v[0].problems.is_empty());
        assert_eq!(kinds(&v[1]), vec![Problem::Refused]);
    }

    #[test]
    fn upstream_errors_fail_the_run() {
        let server = [ServerRecord {
            run_count: 1,
            data: b"",
            upstream_error: Some("connect failed: refused"),
        }];
        let v = compare(1, &[run(None)], &BodyPlan::Fixed(Vec::new()), Some(&server));
        assert_eq!(kinds(&v[0]), vec![Problem::Upstream]);
    }

    #[test]
    fn unsent_runs_are_reported_as_interrupted() {
        let v = compare(
            2,
            &[run(None)],
            &BodyPlan::Uuid,
            Some(&[ServerRecord {
                run_count: 1,
                data: b"",
                upstream_error: None,
            }]),
        );
        assert_eq!(kinds(&v[1]), vec![Problem::Interrupted]);
    }
}
