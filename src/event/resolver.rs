//! Name resolution off the event loop.
//!
//! `getaddrinfo` blocks, so look-ups run on a helper thread that hands each
//! answer back through a channel and wakes the loop with a `mio::Waker`.
//! Address literals never leave the loop.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

pub type Answer = (u64, io::Result<Vec<SocketAddr>>);

pub struct Resolver {
    jobs: Option<Sender<(u64, String, u16)>>,
    answers: Receiver<Answer>,
    answer_tx: Sender<Answer>,
    waker: Arc<mio::Waker>,
}

impl Resolver {
    pub fn new(waker: Arc<mio::Waker>) -> Resolver {
        let (answer_tx, answers) = channel();
        Resolver {
            jobs: None,
            answers,
            answer_tx,
            waker,
        }
    }

    /// Starts resolving `host:port`; the answer comes back from
    /// [`Resolver::answers`] tagged with `id`.
    pub fn resolve(&mut self, id: u64, host: &str, port: u16) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let _ = self
                .answer_tx
                .send((id, Ok(vec![SocketAddr::new(ip, port)])));
            let _ = self.waker.wake();
            return;
        }
        let job = (id, host.to_owned(), port);
        let jobs = self.jobs.get_or_insert_with(|| {
            let (tx, rx) = channel::<(u64, String, u16)>();
            let answers = self.answer_tx.clone();
            let waker = Arc::clone(&self.waker);
            std::thread::Builder::new()
                .name("resolver".into())
                .spawn(move || {
                    for (id, host, port) in rx {
                        let result = (host.as_str(), port).to_socket_addrs().map(|a| a.collect());
                        if answers.send((id, result)).is_err() {
                            break;
                        }
                        let _ = waker.wake();
                    }
                })
                .ok();
            tx
        });
        if let Err(e) = jobs.send(job) {
            let (id, ..) = e.0;
            let _ = self
                .answer_tx
                .send((id, Err(io::Error::other("resolver thread is gone"))));
        }
    }

    /// Answers that have arrived.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}
