//! Sharded clients: `conntest client --shard I/N` sends the runs of shard I
//! of N (run n is shard (n - 1) mod N's), paced and with a concurrency so
//! that the N shards together hold the group's, then uploads what it saw
//! to the server in pages (`POST /test-groups/{id}/shards/{I}`), from which
//! `conntest report` builds the whole group's report.

use super::fetch::{error_message, Endpoint};
use super::l4::L4Facts;
use crate::event::clock::Nanos;
use crate::http::Method;
use crate::report::client_run_fields;
use crate::report::shards::ShardsStatus;
use crate::run::{BodyPlan, DriverOutcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Shard `index` of `count` (0-based, index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// Where each part of a shard's identity came from, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardArgs<'a> {
    /// `--shard I/N` or `--shard I`.
    pub shard: Option<&'a str>,
    /// `--shards N`.
    pub shards: Option<&'a str>,
    /// `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job's).
    pub env_index: Option<&'a str>,
    /// `CONNTEST_SHARDS`.
    pub env_shards: Option<&'a str>,
}

impl Shard {
    /// One client sending every run: shard 0 of 1.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The shard the flags and the environment name; None for one client
    /// (no number of shards given anywhere). Errors name the flag or the
    /// variable.
    pub fn from_args(args: ShardArgs<'_>) -> Result<Option<Shard>, String> {
        // Empty variables count as unset.
        let env_index = args.env_index.filter(|v| !v.is_empty());
        let env_shards = args.env_shards.filter(|v| !v.is_empty());
        let (index, of) = match args.shard.map(|s| (s, s.split_once('/'))) {
            Some((given, Some((i, n)))) => (
                Some(("--shard", number("--shard", given, i)?)),
                Some(("--shard", number("--shard", given, n)?)),
            ),
            Some((given, None)) => (Some(("--shard", number("--shard", given, given)?)), None),
            None => (
                env_index
                    .map(|v| number("JOB_COMPLETION_INDEX", v, v))
                    .transpose()?
                    .map(|i| ("JOB_COMPLETION_INDEX", i)),
                None,
            ),
        };
        let flag = args.shards.map(|v| number("--shards", v, v)).transpose()?;
        let count = match (of, flag) {
            (Some((_, n)), Some(m)) if n != m => {
                return Err(format!(
                    "--shard {} and --shards {m} disagree on the number of shards",
                    args.shard.unwrap_or_default()
                ))
            }
            (Some((_, n)), _) => Some(("--shard", n)),
            (None, Some(m)) => Some(("--shards", m)),
            (None, None) => env_shards
                .map(|v| number("CONNTEST_SHARDS", v, v))
                .transpose()?
                .map(|n| ("CONNTEST_SHARDS", n)),
        };
        match (index, count) {
            (None, None) => Ok(None),
            // An Indexed Job's index alone says nothing of the number.
            (Some(("JOB_COMPLETION_INDEX", _)), None) => Ok(None),
            (Some((from, _)), None) => Err(format!(
                "{from}: the number of shards is missing (--shard I/N, --shards N or CONNTEST_SHARDS)"
            )),
            (None, Some((from, n))) => Err(format!(
                "{from} {n}: which shard this is is missing (--shard I or JOB_COMPLETION_INDEX)"
            )),
            (Some(_), Some((from, 0))) => Err(format!("{from}: the number of shards must be at least 1")),
            (Some((from, i)), Some((_, n))) if i >= n => Err(format!(
                "{from}: shard {i} of {n} does not exist (shards are numbered 0 to {})",
                n - 1
            )),
            (Some((_, index)), Some((_, count))) => Ok(Some(Shard { index, count })),
        }
    }

    /// A group of `run_count` runs can be split this way: each shard must
    /// have a run.
    pub fn check(&self, run_count: u64) -> Result<(), String> {
        if self.count > run_count {
            return Err(format!(
                "--shard {}/{}: {} shards for a group of {run_count} runs (at most one shard per run)",
                self.index, self.count, self.count
            ));
        }
        Ok(())
    }

    /// The first run count this shard sends; the next are `count` apart.
    pub fn first_count(&self) -> u64 {
        self.index + 1
    }

    /// How many of the group's runs are this shard's.
    pub fn runs(&self, run_count: u64) -> u64 {
        run_count.saturating_sub(self.index).div_ceil(self.count)
    }

    /// This shard's share of the group's concurrency `c`: c / N each, the
    /// first c mod N shards one more; at least 1 (so with more shards than
    /// `c`, N connections are in flight in all).
    pub fn concurrency(&self, c: usize) -> usize {
        let n = self.count as usize;
        let extra = usize::from((self.index as usize) < c % n);
        (c / n + extra).max(1)
    }

    /// This shard's pace: N shards each N x `client_delay_ns` apart hold
    /// the group's pace together.
    pub fn delay(&self, client_delay: Nanos) -> Nanos {
        client_delay.saturating_mul(self.count)
    }

    /// `I/N`, as the flag is written.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

/// `what`'s `part` of the value `given`, a whole number.
fn number(what: &str, given: &str, part: &str) -> Result<u64, String> {
    part.trim().parse::<u64>().map_err(|_| {
        let form = if what == "--shard" {
            " (I/N or I: whole numbers)"
        } else {
            ""
        };
        format!(
            "{what}: '{}' is not a whole number{form}",
            given.escape_debug()
        )
    })
}

/// Largest page of runs uploaded at once, in bytes of JSON: under half the
/// server's default body limit (1 MiB).
pub const PAGE_BYTES: usize = 512 * 1024 - 1024;

/// Attempts at one page when the connection fails or the store is down
/// (503), 100 ms apart and doubling: about 6 s in all.
const PAGE_ATTEMPTS: u32 = 7;

/// Says so on stderr when the server already holds a record of this shard
/// (the shard is run again: its runs are recorded twice, and the record
/// first uploaded is the one kept).
pub fn warn_if_reported(endpoint: &Endpoint, group: &str, shard: Shard, timeout: Duration) {
    let route = format!("/test-groups/{group}/status");
    let Ok(Ok(status)) = endpoint.get_json::<ShardsStatus>(&route, timeout) else {
        return;
    };
    if let Some(earlier) = status.shards.iter().find(|s| s.shard == shard.index) {
        eprintln!(
            "conntest: warning: shard {} already uploaded a record of {} runs to this group: this run's runs are recorded a second time (duplicated in the group's report) and the first record is kept",
            shard.label(),
            earlier.runs
        );
    }
}

/// Uploads the shard's runs in pages (a raw test's with what it saw of
/// each run's echoes). Each page names the index of its first run
/// (`from`), so a page sent again after a lost answer changes nothing.
#[allow(clippy::too_many_arguments)]
pub fn upload(
    endpoint: &Endpoint,
    group: &str,
    shard: Shard,
    outcome: &DriverOutcome,
    body: &BodyPlan,
    l4: Option<&L4Facts>,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let route = format!("/test-groups/{group}/shards/{}", shard.index);
    let mut uuid = [0u8; 36];
    let mut runs: Vec<u8> = Vec::with_capacity(PAGE_BYTES);
    let mut one: Vec<u8> = Vec::new();
    let (mut from, mut in_page) = (0usize, 0usize);
    for i in 0..=outcome.runs.len() {
        let last = i == outcome.runs.len();
        if !last {
            one.clear();
            let mut fields = client_run_fields(outcome, i, body, &mut uuid);
            if let Some(echo) = l4.and_then(|f| f.runs.get(i)) {
                fields.echoes = Some(echo.echoes);
                fields.echo_error = echo.echo_error.as_deref().map(Into::into);
                fields.echo_order = (echo.arrival != u32::MAX).then_some(echo.arrival);
            }
            serde_json::to_writer(&mut one, &fields)
                .map_err(|e| format!("run {}: {e}", outcome.count(i)))?;
            if in_page == 0 || runs.len() + one.len() < PAGE_BYTES {
                if in_page > 0 {
                    runs.push(b',');
                }
                runs.extend_from_slice(&one);
                in_page += 1;
                continue;
            }
        }
        let mut page =
            format!("{{\"shards\":{},\"from\":{from},\"runs\":[", shard.count).into_bytes();
        page.extend_from_slice(&runs);
        page.extend_from_slice(format!("],\"last\":{last}}}").as_bytes());
        post_page(endpoint, &route, &page, timeout, stop)?;
        from += in_page;
        runs.clear();
        in_page = 0;
        if !last {
            runs.extend_from_slice(&one);
            in_page = 1;
        }
    }
    Ok(())
}

/// Posts one page, again on a connection error or a 503 (bounded).
fn post_page(
    endpoint: &Endpoint,
    route: &str,
    page: &[u8],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let why = match endpoint.request(Method::Post, route, page, timeout) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) if r.status == 503 => format!("server answered 503: {}", error_message(&r)),
            Ok(r) => {
                return Err(format!(
                    "POST {route}: server answered {}: {}",
                    r.status,
                    error_message(&r)
                ))
            }
            Err(e) => e,
        };
        if attempt == PAGE_ATTEMPTS || stop.load(Ordering::Relaxed) {
            return Err(format!("{why} (after {attempt} attempts)"));
        }
        crate::debug!("uploading a page failed ({why}); trying again in {pause:?}");
        std::thread::sleep(pause);
        pause *= 2;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        shard: Option<&str>,
        shards: Option<&str>,
        env: (Option<&str>, Option<&str>),
    ) -> Result<Option<Shard>, String> {
        Shard::from_args(ShardArgs {
            shard,
            shards,
            env_index: env.0,
            env_shards: env.1,
        })
    }

    const NO_ENV: (Option<&str>, Option<&str>) = (None, None);

    #[test]
    fn flags_and_environment() {
        let s = |index, count| Ok(Some(Shard { index, count }));
        assert_eq!(parse(None, None, NO_ENV), Ok(None));
        assert_eq!(parse(Some("1/3"), None, NO_ENV), s(1, 3));
        assert_eq!(parse(Some("1"), Some("3"), NO_ENV), s(1, 3));
        assert_eq!(parse(Some("1/3"), Some("3"), NO_ENV), s(1, 3));
        assert_eq!(parse(None, Some("3"), (Some("2"), None)), s(2, 3));
        assert_eq!(parse(None, None, (Some("2"), Some("3"))), s(2, 3));
        // The flags win over the environment.
        assert_eq!(parse(Some("0/2"), None, (Some("2"), Some("3"))), s(0, 2));
        assert_eq!(parse(None, Some("4"), (Some("3"), Some("9"))), s(3, 4));
        // An Indexed Job's index alone: one client.
        assert_eq!(parse(None, None, (Some("2"), None)), Ok(None));
        assert_eq!(parse(None, None, (Some(""), Some(""))), Ok(None));
    }

    #[test]
    fn bad_shards_are_refused_naming_the_source() {
        let err = |shard, shards, env| parse(shard, shards, env).unwrap_err();
        assert!(err(Some("3/3"), None, NO_ENV).contains("--shard: shard 3 of 3 does not exist"));
        assert!(err(Some("0/0"), None, NO_ENV).contains("at least 1"));
        assert!(err(Some("1/x"), None, NO_ENV).contains("'1/x' is not a whole number"));
        assert!(err(Some("-1/3"), None, NO_ENV).contains("not a whole number"));
        assert!(err(Some("1"), None, NO_ENV).contains("number of shards is missing"));
        assert!(err(Some("1/3"), Some("4"), NO_ENV).contains("disagree"));
        assert!(err(None, Some("3"), NO_ENV).contains("which shard this is is missing"));
        assert!(err(None, None, (None, Some("3"))).starts_with("CONNTEST_SHARDS 3"));
        assert!(err(None, None, (Some("x"), Some("3"))).starts_with("JOB_COMPLETION_INDEX: 'x'"));
        assert!(err(None, None, (Some("3"), Some("3")))
            .starts_with("JOB_COMPLETION_INDEX: shard 3 of 3"));
        assert!(err(None, Some("y"), NO_ENV).starts_with("--shards: 'y'"));
        let s = Shard { index: 0, count: 4 };
        assert!(s
            .check(3)
            .unwrap_err()
            .contains("4 shards for a group of 3 runs"));
        assert!(s.check(4).is_ok());
    }

    /// A page whose connection fails is sent again (the same bytes, so the
    /// server's `from` makes it safe); an answer such as 409 is not.
    #[test]
    fn a_page_is_sent_again_after_a_connection_error_only() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let page = br#"{"shards":1,"from":0,"runs":[],"last":true}"#;
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            let answers = [
                None,
                Some("200 OK\r\nContent-Length: 20\r\n\r\n{\"shard\":0,\"runs\":0}"),
                Some("409 Conflict\r\nContent-Length: 16\r\n\r\n{\"error\":\"held\"}"),
            ];
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.ends_with(b"\"last\":true}") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
                if let Some(answer) = answer {
                    let _ = stream.write_all(format!("HTTP/1.1 {answer}").as_bytes());
                }
            }
            requests
        });
        let endpoint = Endpoint::local(addr);
        let stop = AtomicBool::new(false);
        let route = "/test-groups/g/shards/0";
        let timeout = Duration::from_secs(5);
        assert_eq!(post_page(&endpoint, route, page, timeout, &stop), Ok(()));
        let refused = post_page(&endpoint, route, page, timeout, &stop).unwrap_err();
        assert!(refused.contains("server answered 409: held"), "{refused}");
        let requests = server.join().unwrap();
        assert_eq!(requests.len(), 3);
        assert!(requests
            .iter()
            .all(|r| r.starts_with("POST /test-groups/g/shards/0 ")
                && r.ends_with(std::str::from_utf8(page).unwrap())));
    }

    #[test]
    fn the_split_covers_every_run_once_and_holds_concurrency_and_pace() {
        for (runs, count, c) in [(10u64, 3u64, 5usize), (7, 7, 2), (1000, 4, 50), (5, 1, 3)] {
            let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
            let mut seen = vec![0; runs as usize + 1];
            for s in &shards {
                for k in 0..s.runs(runs) {
                    let n = s.first_count() + k * s.count;
                    assert_eq!((n - 1) % count, s.index);
                    seen[n as usize] += 1;
                }
            }
            assert!(
                seen[1..].iter().all(|&k| k == 1),
                "{runs} runs, {count} shards"
            );
            let total: usize = shards.iter().map(|s| s.concurrency(c)).sum();
            assert_eq!(total, c.max(count as usize));
            assert_eq!(shards[0].delay(100), 100 * count);
        }
        assert_eq!(Shard::WHOLE.runs(9), 9);
        assert_eq!(Shard::WHOLE.concurrency(8), 8);
        assert_eq!(Shard::WHOLE.delay(5), 5);
        assert_eq!(Shard { index: 0, count: 3 }.concurrency(4), 2);
        assert_eq!(Shard { index: 1, count: 3 }.concurrency(4), 1);
    }
}
