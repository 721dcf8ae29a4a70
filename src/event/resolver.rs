//! Name resolution off the event loop.
//!
//! `getaddrinfo` blocks, so look-ups run on helper threads that hand each
//! answer back through a channel and wake the loop with a `mio::Waker`.
//! Look-ups run concurrently, on up to [`MAX_WORKERS`] threads started as
//! they are needed, so one slow look-up never holds the others. Address
//! literals never leave the loop.

use super::clock::{self, Nanos};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Look-ups that may run at once; further ones queue.
pub const MAX_WORKERS: usize = 16;

/// A look-up's answer.
pub struct Answer {
    /// The id it was asked with.
    pub id: u64,
    pub result: io::Result<Vec<SocketAddr>>,
    /// When the look-up ended (read on the worker, so the loop's own wake-up
    /// is not counted); `None` for an address literal, which needs none.
    pub resolved_at: Option<Nanos>,
}

/// How a name is looked up: the system's resolver, or a stand-in in tests.
type Lookup = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    (host, port).to_socket_addrs().map(Iterator::collect)
}

struct Job {
    id: u64,
    host: String,
    port: u16,
}

pub struct Resolver {
    jobs: Sender<Job>,
    /// Shared by the workers: each takes the next job.
    queue: Arc<Mutex<Receiver<Job>>>,
    answers: Receiver<Answer>,
    answer_tx: Sender<Answer>,
    waker: Arc<mio::Waker>,
    workers: usize,
    /// Workers waiting for a job.
    idle: Arc<AtomicUsize>,
    /// Jobs sent and not yet taken by a worker.
    queued: Arc<AtomicUsize>,
    lookup: Lookup,
}

impl Resolver {
    pub fn new(waker: Arc<mio::Waker>) -> Resolver {
        Resolver::with_lookup(waker, system_lookup)
    }

    fn with_lookup(waker: Arc<mio::Waker>, lookup: Lookup) -> Resolver {
        let (answer_tx, answers) = channel();
        let (jobs, queue) = channel();
        Resolver {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            answers,
            answer_tx,
            waker,
            workers: 0,
            idle: Arc::new(AtomicUsize::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            lookup,
        }
    }

    /// Starts resolving `host:port`; the answer comes back from
    /// [`Resolver::answers`] tagged with `id`.
    pub fn resolve(&mut self, id: u64, host: &str, port: u16) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.answer(Answer {
                id,
                result: Ok(vec![SocketAddr::new(ip, port)]),
                resolved_at: None,
            });
            return;
        }
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if waiting > self.idle.load(Ordering::Acquire) && self.workers < MAX_WORKERS {
            match self.spawn_worker() {
                Ok(()) => self.workers += 1,
                Err(e) if self.workers == 0 => {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    let error = io::Error::other(format!("no resolver thread could start: {e}"));
                    return self.answer(Answer {
                        id,
                        result: Err(error),
                        resolved_at: None,
                    });
                }
                // The running workers will take it.
                Err(_) => {}
            }
        }
        let job = Job {
            id,
            host: host.to_owned(),
            port,
        };
        // The receiving end lives in `self.queue`, so sending cannot fail.
        let _ = self.jobs.send(job);
    }

    fn answer(&self, answer: Answer) {
        let _ = self.answer_tx.send(answer);
        let _ = self.waker.wake();
    }

    fn spawn_worker(&self) -> io::Result<()> {
        let queue = Arc::clone(&self.queue);
        let idle = Arc::clone(&self.idle);
        let queued = Arc::clone(&self.queued);
        let answers = self.answer_tx.clone();
        let waker = Arc::clone(&self.waker);
        let lookup = self.lookup;
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || loop {
                idle.fetch_add(1, Ordering::AcqRel);
                let job = queue
                    .lock()
                    .map_err(|_| ())
                    .and_then(|q| q.recv().map_err(|_| ()));
                idle.fetch_sub(1, Ordering::AcqRel);
                queued.fetch_sub(1, Ordering::AcqRel);
                // The resolver is gone: so is the loop that asked.
                let Ok(Job { id, host, port }) = job else {
                    return;
                };
                let result = lookup(&host, port);
                let resolved_at = Some(clock::now());
                if answers
                    .send(Answer {
                        id,
                        result,
                        resolved_at,
                    })
                    .is_err()
                {
                    return;
                }
                let _ = waker.wake();
            })
            .map(drop)
    }

    /// Answers that have arrived.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn resolver(lookup: Lookup) -> (mio::Poll, Resolver) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, Resolver::with_lookup(waker, lookup))
    }

    /// Waits for `n` answers, at most 20 s.
    fn answers(poll: &mut mio::Poll, resolver: &Resolver, n: usize) -> Vec<Answer> {
        let mut got = Vec::new();
        let mut events = mio::Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            got.extend(resolver.answers());
        }
        got
    }

    /// A stand-in resolver: "slow" takes 2 s, as a resolver slow to fail does.
    fn slow_or_fast(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if host == "slow" {
            std::thread::sleep(Duration::from_secs(2));
            return Err(io::Error::other("no such host"));
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    #[test]
    fn a_slow_look_up_does_not_hold_the_others() {
        let (mut poll, mut resolver) = resolver(slow_or_fast);
        let started = Instant::now();
        for id in 0..4 {
            resolver.resolve(id, "slow", 80);
        }
        resolver.resolve(10, "fast", 80);
        let got = answers(&mut poll, &resolver, 1);
        assert_eq!(got.iter().map(|a| a.id).collect::<Vec<_>>(), vec![10]);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered behind the slow ones"
        );
        let rest = answers(&mut poll, &resolver, 4);
        assert_eq!(rest.len(), 4);
        assert!(rest
            .iter()
            .all(|a| a.result.is_err() && a.resolved_at.is_some()));
    }

    #[test]
    fn literals_answer_at_once_and_workers_are_bounded() {
        let (mut poll, mut resolver) = resolver(slow_or_fast);
        resolver.resolve(1, "127.0.0.1", 80);
        resolver.resolve(2, "::1", 81);
        for id in 3..3 + MAX_WORKERS as u64 * 2 {
            resolver.resolve(id, "fast", 82);
        }
        assert!(resolver.workers <= MAX_WORKERS);
        let got = answers(&mut poll, &resolver, 2 + MAX_WORKERS * 2);
        assert_eq!(got.len(), 2 + MAX_WORKERS * 2);
        for a in &got {
            assert!(a
                .result
                .as_ref()
                .is_ok_and(|addrs| addrs[0].ip().is_loopback()));
            assert_eq!(
                a.resolved_at.is_none(),
                a.id <= 2,
                "literals need no look-up"
            );
        }
    }

    #[test]
    fn the_system_resolver_finds_localhost() {
        let (mut poll, mut resolver) = resolver(system_lookup);
        resolver.resolve(1, "localhost", 80);
        let got = answers(&mut poll, &resolver, 1);
        let addrs = got[0].result.as_ref().expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
