//! The server's upstream GETs, one connection per request, driven by the
//! server's event loop with the same [`ClientConn`] machine the client uses.
//!
//! Each request resolves its host off the loop, connects without blocking,
//! sends `GET`, and reads the answer, bounded by the group's
//! `upstream_timeout_ns`. Bodies are counted and dropped, up to a limit past
//! which the answer is not read further. Every outcome, good or bad, comes
//! back as an [`UpstreamOutcome`] for the run.

use super::store::UpstreamOutcome;
use crate::event::clock::Nanos;
use crate::event::resolver::Resolver;
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::Source;
use crate::http::client::{ClientConn, ClientError, ClientLimits};
use crate::http::url::{Scheme, Url};
use crate::http::Method;
use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// An upstream request finished, for the pending run `run`.
pub struct Finished {
    pub run: usize,
    pub outcome: UpstreamOutcome,
}

enum Phase {
    Resolving,
    Connecting {
        stream: TcpStream,
        addrs: Vec<SocketAddr>,
        next: usize,
    },
    Exchanging {
        stream: TcpStream,
    },
}

struct Exchange {
    run: usize,
    url: Url,
    phase: Phase,
    http: ClientConn,
    started: Nanos,
    timeout: Option<(Nanos, TimerKey)>,
}

/// A timer the server loop must route back here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimer {
    exchange: usize,
    run: usize,
}

pub struct Upstreams {
    exchanges: Slab<Exchange>,
    resolver: Resolver,
    max_body: u64,
}

impl Upstreams {
    pub fn new(resolver: Resolver, max_body: u64) -> Upstreams {
        Upstreams {
            exchanges: Slab::new(),
            resolver,
            max_body,
        }
    }

    /// Starts a GET to `url` for pending run `run`. Returns the outcome at
    /// once when the request cannot even start.
    pub fn start<T: From<UpstreamTimer>>(
        &mut self,
        run: usize,
        url: &Url,
        timeout: Option<Nanos>,
        now: Nanos,
        wheel: &mut TimerWheel<T>,
    ) -> Option<Finished> {
        if url.scheme == Scheme::Https {
            return Some(Finished {
                run,
                outcome: failure(
                    0,
                    "https upstream endpoints are not supported by this build yet",
                ),
            });
        }
        let mut http = ClientConn::new(ClientLimits {
            max_body: self.max_body,
            discard_body: true,
            ..ClientLimits::default()
        });
        http.send(
            Method::Get,
            &url.host_header(),
            &url.path,
            &[("User-Agent", "conntest")],
            b"",
        );
        let key = self.exchanges.insert(Exchange {
            run,
            url: url.clone(),
            phase: Phase::Resolving,
            http,
            started: now,
            timeout: None,
        });
        if let Some(t) = timeout {
            let timer = wheel.insert(
                now.saturating_add(t),
                T::from(UpstreamTimer { exchange: key, run }),
            );
            self.exchanges[key].timeout = Some((t, timer));
        }
        self.resolver.resolve(key as u64, &url.host, url.port);
        None
    }

    /// Handles resolver answers that arrived (the loop's waker fired).
    pub fn on_resolved<T>(
        &mut self,
        registry: &Registry,
        now: Nanos,
        wheel: &mut TimerWheel<T>,
        done: &mut Vec<Finished>,
    ) {
        let answers: Vec<_> = self.resolver.answers().collect();
        for (id, result) in answers {
            let key = id as usize;
            if !matches!(
                self.exchanges.get(key).map(|e| &e.phase),
                Some(Phase::Resolving)
            ) {
                continue;
            }
            match result {
                Ok(addrs) if !addrs.is_empty() => {
                    self.connect(registry, key, addrs, 0, now, wheel, done)
                }
                Ok(_) => self.finish(
                    registry,
                    key,
                    now,
                    wheel,
                    done,
                    Err((0, "name resolved to no address".into())),
                ),
                Err(e) => self.finish(
                    registry,
                    key,
                    now,
                    wheel,
                    done,
                    Err((0, format!("name resolution failed: {e}"))),
                ),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn connect<T>(
        &mut self,
        registry: &Registry,
        key: usize,
        addrs: Vec<SocketAddr>,
        next: usize,
        now: Nanos,
        wheel: &mut TimerWheel<T>,
        done: &mut Vec<Finished>,
    ) {
        let Some(&addr) = addrs.get(next) else {
            return self.finish(
                registry,
                key,
                now,
                wheel,
                done,
                Err((0, "no address could be connected".into())),
            );
        };
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            registry.register(
                &mut stream,
                Source::Upstream(key).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.exchanges[key].phase = Phase::Connecting {
                    stream,
                    addrs,
                    next: next + 1,
                }
            }
            Err(e) if next + 1 < addrs.len() => {
                crate::debug!("upstream connect to {addr} failed: {e}");
                self.connect(registry, key, addrs, next + 1, now, wheel, done)
            }
            Err(e) => self.finish(
                registry,
                key,
                now,
                wheel,
                done,
                Err((0, format!("connect to {addr} failed: {e}"))),
            ),
        }
    }

    /// Readiness on an upstream socket.
    pub fn on_ready<T>(
        &mut self,
        registry: &Registry,
        key: usize,
        scratch: &mut [u8],
        now: Nanos,
        wheel: &mut TimerWheel<T>,
        done: &mut Vec<Finished>,
    ) {
        let Some(exchange) = self.exchanges.get_mut(key) else {
            return;
        };
        if let Phase::Connecting {
            stream,
            addrs,
            next,
        } = &mut exchange.phase
        {
            // A connect in progress completes (or fails) when the socket turns writable.
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let (addrs, next) = (std::mem::take(addrs), *next);
                    let _ = registry.deregister(stream);
                    if next < addrs.len() {
                        return self.connect(registry, key, addrs, next, now, wheel, done);
                    }
                    return self.finish(
                        registry,
                        key,
                        now,
                        wheel,
                        done,
                        Err((0, format!("connect failed: {e}"))),
                    );
                }
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    return self.finish(
                        registry,
                        key,
                        now,
                        wheel,
                        done,
                        Err((0, format!("connect failed: {e}"))),
                    )
                }
            }
            let _ = stream.set_nodelay(true);
            let Phase::Connecting { stream, .. } =
                std::mem::replace(&mut exchange.phase, Phase::Resolving)
            else {
                return;
            };
            exchange.phase = Phase::Exchanging { stream };
        }
        let Phase::Exchanging { stream } = &mut exchange.phase else {
            return;
        };
        let result = pump(stream, &mut exchange.http, scratch);
        match result {
            Ok(None) => {}
            Ok(Some(status)) => self.finish(registry, key, now, wheel, done, Ok(status)),
            Err(e) => self.finish(registry, key, now, wheel, done, Err(e)),
        }
    }

    /// The timeout of an upstream request expired.
    pub fn on_timeout<T>(
        &mut self,
        registry: &Registry,
        timer: UpstreamTimer,
        now: Nanos,
        wheel: &mut TimerWheel<T>,
        done: &mut Vec<Finished>,
    ) {
        let Some(exchange) = self.exchanges.get_mut(timer.exchange) else {
            return;
        };
        if exchange.run != timer.run {
            return;
        }
        let limit = exchange.timeout.map_or(0, |(t, _)| t);
        let stage = match exchange.phase {
            Phase::Resolving => "resolving the name",
            Phase::Connecting { .. } => "connecting",
            Phase::Exchanging { .. } => "waiting for the answer",
        };
        exchange.timeout = None;
        let message = format!("upstream timed out after {limit} ns while {stage}");
        self.finish(
            registry,
            timer.exchange,
            now,
            wheel,
            done,
            Err((0, message)),
        );
    }

    fn finish<T>(
        &mut self,
        registry: &Registry,
        key: usize,
        now: Nanos,
        wheel: &mut TimerWheel<T>,
        done: &mut Vec<Finished>,
        result: Result<u16, (u16, String)>,
    ) {
        let mut exchange = self.exchanges.remove(key);
        if let Some((_, timer)) = exchange.timeout {
            wheel.cancel(timer);
        }
        if let Phase::Connecting { stream, .. } | Phase::Exchanging { stream } = &mut exchange.phase
        {
            let _ = registry.deregister(stream);
        }
        let time_ns = now.saturating_sub(exchange.started);
        let outcome = match result {
            Ok(code) => UpstreamOutcome {
                code,
                time_ns,
                error: None,
            },
            Err((code, e)) => {
                crate::debug!("upstream {} failed: {e}", exchange.url);
                let mut o = failure(code, &e);
                o.time_ns = time_ns;
                o
            }
        };
        done.push(Finished {
            run: exchange.run,
            outcome,
        });
    }
}

fn failure(code: u16, message: &str) -> UpstreamOutcome {
    UpstreamOutcome {
        code,
        time_ns: 0,
        error: Some(message.into()),
    }
}

/// Writes what is owed and reads what arrived; the status once the whole
/// answer is in.
fn pump(
    stream: &mut TcpStream,
    http: &mut ClientConn,
    scratch: &mut [u8],
) -> Result<Option<u16>, (u16, String)> {
    let failed = |e: ClientError| {
        let code = if let ClientError::BodyTooLarge { status, .. } = e {
            status
        } else {
            0
        };
        (code, format!("upstream {e}"))
    };
    while !http.poll_output().is_empty() {
        match stream.write(http.poll_output()) {
            Ok(n) => http.advance_output(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((0, format!("sending the request failed: {e}"))),
        }
    }
    loop {
        match stream.read(scratch) {
            Ok(0) => {
                return match http.receive_eof() {
                    Ok(Some(r)) => Ok(Some(r.status)),
                    Ok(None) => Err((0, "upstream closed the connection without answering".into())),
                    Err(e) => Err(failed(e)),
                }
            }
            Ok(n) => {
                http.receive(&scratch[..n]);
                match http.next_response() {
                    Ok(Some(r)) => return Ok(Some(r.status)),
                    Ok(None) => {}
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((0, format!("reading the answer failed: {e}"))),
        }
    }
}
