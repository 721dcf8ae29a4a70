//! The load driver: sends runs 1..=run_count with exactly `concurrency` in
//! flight, over a fixed set of `concurrency` keep-alive connections held by
//! one mio loop, paced by `client_delay_ns` on the timer wheel.
//!
//! Each run is stamped: `due` (when the schedule says it should leave),
//! `start` (just before its first byte is written: the clock is read again
//! there, so a run sent late in a busy wake-up is not stamped early), `end`
//! (the wake-up at which its last answer byte was read) and, when it opened
//! a connection, the connect time.

use super::pacing::{new_run, Pacing, RunPlan};
use super::progress::{self, Progress};
use crate::event::clock::{self, Nanos, WallAnchor, MILLISECOND, SECOND};
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::wake::WakeTimer;
use crate::event::Source;
use crate::http::client::{ClientConn, ClientError, ClientLimits, Response};
use crate::http::proxy::{ProxyError, ProxyRoute, Tunnel, TunnelState};
use crate::http::{push_decimal, reason_phrase, Method};
use crate::ids::IdGen;
use crate::problem::Problem;
use crate::run::{ClientRun, DriverOutcome, Failure, Nanos32, Numbering};
use crate::tls::Transport;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll};
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct DriverConfig {
    pub addr: SocketAddr,
    pub host_header: String,
    /// The run route up to the count: `/prefix/test-groups/ID/`.
    pub run_path: String,
    /// Header lines after `Host`: the token and the `-H` headers.
    pub headers: Vec<(String, String)>,
    /// The runs, their counts, pace and bound.
    pub plan: RunPlan,
    /// TLS to the server: the config and the name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// The proxy every connection goes through (`addr` is then its).
    pub proxy: Option<ProxyRoute>,
}

enum Timer {
    /// The next run is due.
    Due,
    /// A request's answer is overdue.
    Timeout {
        slot: usize,
        serial: u64,
    },
    Progress,
}

#[derive(Default)]
struct Slot {
    stream: Option<TcpStream>,
    transport: Transport,
    handshake_started: Nanos,
    http: Option<ClientConn>,
    /// The `CONNECT` exchange under way, through a proxy.
    tunnel: Option<Tunnel>,
    /// The run in flight (index into `runs`).
    busy: Option<usize>,
    connecting: bool,
    connect_started: Nanos,
    serial: u64,
    timer: Option<TimerKey>,
    /// The run last answered on this connection: an answer that follows it
    /// with no request outstanding is charged to it.
    last_answered: Option<usize>,
    /// The connection carried an answer before: a close that cuts the next
    /// request off before any answer byte is the peer closing it as idle.
    reused: bool,
}

/// How long runs in flight may finish after an interrupt, or once the
/// server seems gone.
pub const GRACE: Nanos = 2 * SECOND;

/// A test stops early when every run has been refused for this long and
/// none succeeded in between: the server is gone (unless `--keep-going`).
pub const GONE_AFTER: Nanos = 3 * SECOND;

/// Watches how runs end for a server that is gone: every run refused for
/// [`GONE_AFTER`], none ending any other way in between. The HTTP driver
/// and the raw (tcp, udp) one share it.
#[derive(Debug, Default)]
pub struct GoneWatch {
    keep_going: bool,
    /// Since when every finished run was refused (None after any other end).
    refused_since: Option<Nanos>,
}

impl GoneWatch {
    pub fn new(keep_going: bool) -> GoneWatch {
        GoneWatch {
            keep_going,
            refused_since: None,
        }
    }

    /// A run ended at `now`, failing with `problem` or (None) answered.
    pub fn ended(&mut self, problem: Option<Problem>, now: Nanos) {
        self.refused_since = match problem {
            Some(Problem::Refused) => self.refused_since.or(Some(now)),
            _ => None,
        };
    }

    /// Why the test stops now, when what `who` names (the server at ADDR,
    /// a proxy) seems gone.
    pub fn gone(&self, now: Nanos, who: impl FnOnce() -> String) -> Option<String> {
        let since = self.refused_since?;
        if self.keep_going || now - since < GONE_AFTER {
            return None;
        }
        Some(format!(
            "stopped early: every run was refused for {} s and none succeeded; {} seems gone (--keep-going to go on)",
            GONE_AFTER / SECOND,
            who()
        ))
    }
}

struct Driver<'a> {
    cfg: DriverConfig,
    poll: Poll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    wheel: TimerWheel<Timer>,
    wake: WakeTimer,
    runs: Vec<ClientRun>,
    pacing: Pacing,
    finished_runs: u64,
    failed_runs: u64,
    connections_opened: u64,
    /// What the first TLS handshake agreed to.
    negotiated: Option<crate::tls::Negotiated>,
    ids: IdGen,
    scratch: Vec<u8>,
    path: Vec<u8>,
    uuid_text: [u8; 36],
    stop: &'a AtomicBool,
    stopping: bool,
    /// The progress line's state, on a terminal.
    progress: Option<Progress>,
    gone: GoneWatch,
    /// Why the test stopped before its last run, when the server is gone.
    gave_up: Option<String>,
}

/// Drives the whole test; returns every run's record, and why it stopped
/// early when it did (the server is gone).
pub fn drive(cfg: DriverConfig, stop: &AtomicBool) -> io::Result<(DriverOutcome, Option<String>)> {
    let poll = Poll::new()?;
    let wake = WakeTimer::new(poll.registry(), Source::WakeTimer.token())?;
    let concurrency = cfg.plan.concurrency.max(1);
    let now = clock::now();
    let anchor = WallAnchor::capture();
    let mut driver = Driver {
        poll,
        slots: (0..concurrency).map(|_| Slot::default()).collect(),
        free: (0..concurrency).rev().collect(),
        wheel: TimerWheel::new(now),
        wake,
        runs: Vec::with_capacity(cfg.plan.run_count.min(1 << 20) as usize),
        pacing: Pacing::new(now, cfg.plan.client_delay, cfg.plan.run_count),
        finished_runs: 0,
        failed_runs: 0,
        connections_opened: 0,
        negotiated: None,
        ids: IdGen::new(),
        scratch: vec![0; 64 * 1024],
        path: Vec::with_capacity(cfg.run_path.len() + 20),
        uuid_text: [0; 36],
        stop,
        stopping: false,
        progress: None,
        gone: GoneWatch::new(cfg.plan.keep_going),
        gave_up: None,
        cfg,
    };
    if driver.cfg.plan.progress {
        driver.progress = Some(Progress::new(now, driver.cfg.plan.run_count));
        driver
            .wheel
            .insert(now + progress::INTERVAL, Timer::Progress);
    }
    let interrupted = driver.run(now)?;
    if driver.cfg.plan.progress {
        progress::clear();
    }
    let outcome = DriverOutcome {
        runs: driver.runs,
        started: driver.pacing.started,
        finished: clock::now(),
        client_delay: driver.cfg.plan.client_delay,
        anchor,
        interrupted,
        connections_opened: driver.connections_opened,
        tls: driver.negotiated,
        numbering: Numbering::Stride {
            first: driver.cfg.plan.first_count,
            stride: driver.cfg.plan.count_stride,
        },
    };
    Ok((outcome, driver.gave_up))
}

impl Driver<'_> {
    /// Returns whether the test was interrupted.
    fn run(&mut self, now: Nanos) -> io::Result<bool> {
        let mut events = Events::with_capacity(1024);
        let mut grace_until = None;
        self.dispatch(now);
        while self.finished_runs < self.runs.len() as u64
            || (!self.stopping && (self.runs.len() as u64) < self.cfg.plan.run_count)
        {
            let now = clock::now();
            if !self.stopping && self.stop.load(Ordering::Relaxed) {
                self.stopping = true;
                grace_until = Some(now + GRACE);
            }
            if !self.stopping && self.server_gone(now) {
                self.stopping = true;
                grace_until = Some(now + GRACE);
            }
            if grace_until.is_some_and(|g| now >= g) {
                self.abandon_in_flight(now);
                break;
            }
            // Wake at least every 100 ms to notice an interrupt. The driver
            // sleeps while it waits for answers: polling without sleeping
            // was measured to take CPU from the server being measured when
            // the two share cores, for no gain in the median.
            let cap = std::time::Duration::from_millis(100);
            let timeout = self
                .wake
                .prepare(self.wheel.next_wakeup(), now, Some(cap))?;
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = clock::now();
            for event in events.iter() {
                match Source::from_token(event.token()) {
                    Some(Source::Connection(slot)) => self.on_ready(slot, now),
                    Some(Source::WakeTimer) => self.wake.acknowledge(now),
                    _ => {}
                }
            }
            let mut fired = Vec::new();
            self.wheel.poll(now, &mut fired);
            for timer in fired {
                match timer {
                    Timer::Due => self.pacing.woke(),
                    Timer::Timeout { slot, serial } => {
                        if self.slots[slot].serial == serial && self.slots[slot].busy.is_some() {
                            self.slots[slot].timer = None;
                            let to_connect = match (&self.slots[slot].tunnel, &self.cfg.proxy) {
                                (Some(_), Some(route)) => {
                                    format!(" to CONNECT from {}", route.proxy.named())
                                }
                                _ => String::new(),
                            };
                            let detail = format!(
                                "no answer{to_connect} within {} ms",
                                self.cfg.plan.timeout / MILLISECOND
                            );
                            self.fail(slot, Problem::Timeout, &detail, now);
                        }
                    }
                    Timer::Progress => {
                        self.print_progress(now);
                        self.wheel.insert(now + progress::INTERVAL, Timer::Progress);
                    }
                }
            }
            self.dispatch(now);
        }
        Ok(self.stopping && self.gave_up.is_none())
    }

    /// Whether every run has been refused for [`GONE_AFTER`] with none
    /// succeeding; says why in `gave_up` when so.
    fn server_gone(&mut self, now: Nanos) -> bool {
        let (proxy, addr) = (&self.cfg.proxy, self.cfg.addr);
        self.gave_up = self.gone.gone(now, || match proxy {
            Some(route) => format!("{} at {addr}", route.proxy.named()),
            None => format!("the server at {addr}"),
        });
        self.gave_up.is_some()
    }

    /// Starts every run that is due while a connection is free.
    fn dispatch(&mut self, now: Nanos) {
        while !self.stopping {
            let index = self.runs.len();
            if !self.pacing.due(index, now, &mut self.wheel, Timer::Due) {
                return;
            }
            let Some(slot) = self.free.pop() else {
                return;
            };
            self.runs.push(new_run(&self.cfg.plan.body, &mut self.ids));
            self.slots[slot].busy = Some(index);
            if self.slots[slot].stream.is_some() {
                self.send(slot);
            } else {
                self.connect(slot, now);
            }
        }
    }

    fn connect(&mut self, slot: usize, now: Nanos) {
        let s = &mut self.slots[slot];
        s.serial += 1;
        s.connect_started = now;
        s.http = Some(ClientConn::new(ClientLimits::default()));
        let result = TcpStream::connect(self.cfg.addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Source::Connection(slot).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.connections_opened += 1;
                let s = &mut self.slots[slot];
                s.stream = Some(stream);
                s.connecting = true;
                let serial = s.serial;
                s.timer = Some(
                    self.wheel
                        .insert(now + self.cfg.plan.timeout, Timer::Timeout { slot, serial }),
                );
            }
            Err(e) => {
                let (problem, detail) = classify(&e, "connect");
                self.fail(slot, problem, &detail, now);
            }
        }
    }

    /// Serializes the slot's run and writes it.
    fn send(&mut self, slot: usize) {
        let Some(index) = self.slots[slot].busy else {
            return;
        };
        self.path.clear();
        self.path.extend_from_slice(self.cfg.run_path.as_bytes());
        let count = self.cfg.plan.first_count + index as u64 * self.cfg.plan.count_stride;
        push_decimal(&mut self.path, count);
        let path = std::str::from_utf8(&self.path).unwrap_or("/");
        let body = self
            .cfg
            .plan
            .body
            .bytes(index, &self.runs[index], &mut self.uuid_text);
        let s = &mut self.slots[slot];
        let Some(http) = s.http.as_mut() else {
            return;
        };
        http.send(
            Method::Post,
            &self.cfg.host_header,
            path,
            &self.cfg.headers,
            body,
        );
        // The start is read here, right before the first byte is written
        // (after the handshake, for a new TLS connection).
        let start = clock::now();
        if !s.transport.is_handshaking() {
            self.runs[index].start = start;
        }
        s.serial += 1;
        let serial = s.serial;
        if let Some(t) = s.timer.take() {
            self.wheel.cancel(t);
        }
        s.timer = Some(self.wheel.insert(
            start + self.cfg.plan.timeout,
            Timer::Timeout { slot, serial },
        ));
        self.write(slot, start);
    }

    fn write(&mut self, slot: usize, now: Nanos) {
        let s = &mut self.slots[slot];
        let (Some(stream), Some(http)) = (s.stream.as_mut(), s.http.as_mut()) else {
            return;
        };
        if let Err(e) = s.transport.send(http, stream) {
            let (problem, detail) = classify(&e, "send");
            self.fail(slot, problem, &detail, now);
        }
    }

    fn on_ready(&mut self, slot: usize, now: Nanos) {
        let s = &mut self.slots[slot];
        let Some(stream) = s.stream.as_mut() else {
            return;
        };
        if s.connecting {
            let error = match crate::event::connect_outcome(stream) {
                None => return,
                Some(result) => result.err(),
            };
            if let Some(e) = error {
                let (problem, detail) = classify(&e, "connect");
                return self.fail(slot, problem, &detail, now);
            }
            let _ = stream.set_nodelay(true);
            s.connecting = false;
            let connect_ns = now - s.connect_started;
            if let Some(index) = s.busy {
                self.runs[index].connect_ns = NonZeroU64::new(connect_ns);
            }
            if let Some(route) = &self.cfg.proxy {
                match &route.connect {
                    Some(target) => {
                        let auth = route.proxy.authorization.as_deref();
                        s.tunnel = Some(Tunnel::new(target, auth, s.connect_started));
                        return self.on_tunnel(slot, now);
                    }
                    None => {
                        if let Some(index) = s.busy {
                            self.runs[index].proxy_connect_ns = Nanos32::new(connect_ns);
                        }
                    }
                }
            }
            return self.start_session(slot, now);
        }
        if s.tunnel.is_some() {
            return self.on_tunnel(slot, now);
        }
        self.write(slot, now);
        loop {
            let s = &mut self.slots[slot];
            let (Some(stream), Some(http)) = (s.stream.as_mut(), s.http.as_mut()) else {
                return;
            };
            let handshaking = s.transport.is_handshaking();
            match stream.read(&mut self.scratch) {
                Ok(0) if handshaking => {
                    let detail = "connection closed during the TLS handshake";
                    return self.fail(slot, Problem::Tls, detail, now);
                }
                Ok(0) => {
                    let unanswered = http.unread().is_empty() && http.pending_status().is_none();
                    return match http.receive_eof() {
                        Ok(Some(response)) => self.answered(slot, response, now),
                        Ok(None) => self.close(slot),
                        Err(_) if s.busy.is_none() => self.close(slot),
                        // A proxy in absolute form that closes a kept-alive
                        // connection without a word (tinyproxy does, after
                        // every answer): the run is sent once more on a new
                        // connection, as curl does. Had the first copy
                        // arrived, the server's record shows it twice.
                        Err(_) if s.reused && unanswered && self.absolute_form() => {
                            self.close(slot);
                            if let Some(t) = self.slots[slot].timer.take() {
                                self.wheel.cancel(t);
                            }
                            self.connect(slot, now)
                        }
                        Err(e) => self.fail(slot, Problem::Closed, &e.to_string(), now),
                    };
                }
                Ok(n) => {
                    match s.transport.decode(&self.scratch[..n]) {
                        Ok(plain) => http.receive(plain),
                        Err(e) => return self.fail(slot, Problem::Tls, &e, now),
                    }
                    if s.transport.is_tls() {
                        if handshaking && !s.transport.is_handshaking() {
                            if self.negotiated.is_none() {
                                self.negotiated = s.transport.negotiated();
                            }
                            // The request leaves now, with the handshake's last flight.
                            if let Some(index) = s.busy {
                                let run = &mut self.runs[index];
                                run.tls_ns = NonZeroU64::new(now - s.handshake_started);
                                run.start = clock::now();
                            }
                        }
                        self.write(slot, now);
                    }
                    let s = &mut self.slots[slot];
                    let Some(http) = s.http.as_mut() else {
                        return;
                    };
                    if s.busy.is_none() {
                        if let Some(answer) = unsolicited_answer(http) {
                            return self.unexpected_answer(slot, &answer);
                        }
                    }
                    match http.next_response() {
                        // Read on: bytes already here after the answer,
                        // before the slot's next run leaves (the loop
                        // dispatches after its events), answer no request.
                        Ok(Some(response)) => self.answered(slot, response, now),
                        Ok(None) => {}
                        Err(e) => return self.fail(slot, Problem::Malformed, &e.to_string(), now),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if s.busy.is_none() {
                        return self.close(slot);
                    }
                    let (problem, detail) = classify(&e, "receive");
                    return self.fail(slot, problem, &detail, now);
                }
            }
        }
    }

    /// Whether runs go to a proxy in absolute form (http through a proxy).
    fn absolute_form(&self) -> bool {
        self.cfg.proxy.as_ref().is_some_and(|r| r.connect.is_none())
    }

    /// Starts TLS (for https) on a connection that is ready for it, and
    /// sends the slot's run.
    fn start_session(&mut self, slot: usize, now: Nanos) {
        if let Some((config, name)) = &self.cfg.tls {
            let s = &mut self.slots[slot];
            match Transport::tls_client(config, name) {
                Ok(t) => s.transport = t,
                Err(e) => return self.fail(slot, Problem::Tls, &e, now),
            }
            s.handshake_started = now;
        }
        self.send(slot)
    }

    /// Moves the `CONNECT` exchange on: writes what is owed, reads the
    /// proxy's answer; once the tunnel is open, TLS starts inside it.
    fn on_tunnel(&mut self, slot: usize, now: Nanos) {
        let s = &mut self.slots[slot];
        let (Some(stream), Some(tunnel), Some(route)) = (
            s.stream.as_mut(),
            s.tunnel.as_mut(),
            self.cfg.proxy.as_ref(),
        ) else {
            return;
        };
        let what = || format!("CONNECT {}", route.connect.as_deref().unwrap_or(""));
        let outcome = loop {
            if !tunnel.poll_output().is_empty() {
                match stream.write(tunnel.poll_output()) {
                    Ok(n) => tunnel.advance_output(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(classify(&e, "send")),
                }
                continue;
            }
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    let e = tunnel.receive_eof();
                    break Err((Problem::Proxy, e.words(&route.proxy, &what())));
                }
                Ok(n) => match tunnel.receive(&self.scratch[..n], now) {
                    Ok(TunnelState::Waiting) => {}
                    Ok(TunnelState::Open { elapsed }) => break Ok(elapsed),
                    Err(e) => break Err((Problem::Proxy, e.words(&route.proxy, &what()))),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(classify(&e, "receive")),
            }
        };
        match outcome {
            Ok(elapsed) => {
                s.tunnel = None;
                if let Some(index) = s.busy {
                    self.runs[index].proxy_connect_ns = Nanos32::new(elapsed);
                }
                self.start_session(slot, now)
            }
            Err((problem, detail)) => self.fail(slot, problem, &detail, now),
        }
    }

    fn answered(&mut self, slot: usize, response: Response, now: Nanos) {
        let s = &mut self.slots[slot];
        let Some(index) = s.busy.take() else {
            return self.close(slot);
        };
        if let Some(t) = s.timer.take() {
            self.wheel.cancel(t);
        }
        self.gone.ended(None, now);
        s.last_answered = Some(index);
        s.reused = true;
        // Bytes already here answer no request (the path answered twice):
        // they must not pass for the answer to the slot's next run.
        let unsolicited = s.http.as_mut().and_then(unsolicited_answer);
        let run = &mut self.runs[index];
        run.end = now;
        run.status = response.status;
        if response.status != 200 {
            let message = crate::client::fetch::error_message(&response);
            run.failure = Some(Box::new(match &self.cfg.proxy {
                // In absolute form a 407 is the proxy's own.
                Some(route) if response.status == 407 && route.connect.is_none() => Failure {
                    problem: Problem::Proxy,
                    detail: ProxyError::Refused {
                        status: 407,
                        reason: reason_phrase(407).into(),
                    }
                    .words(&route.proxy, "the run's request")
                    .into(),
                },
                _ => Failure {
                    problem: Problem::HttpStatus,
                    detail: format!("server answered {}: {message}", response.status).into(),
                },
            }));
            self.failed_runs += 1;
        }
        self.finished_runs += 1;
        if let Some(answer) = unsolicited {
            self.unexpected_answer(slot, &answer);
        }
        if response.close {
            self.close(slot);
        }
        self.free.push(slot);
    }

    /// An answer came on the slot's connection with no request outstanding:
    /// an error on that connection, charged to the run answered on it last
    /// (kind `malformed`); the connection is replaced.
    fn unexpected_answer(&mut self, slot: usize, answer: &str) {
        self.close(slot);
        let Some(index) = self.slots[slot].last_answered.take() else {
            return;
        };
        let run = &mut self.runs[index];
        if run.failure.is_none() {
            self.failed_runs += 1;
        }
        run.failure = Some(Box::new(Failure {
            problem: Problem::Malformed,
            detail: format!(
                "an answer to no request followed this run's answer on its connection ({answer}); the connection was replaced"
            )
            .into(),
        }));
    }

    /// Records a failure for the slot's run (if any) and drops its connection.
    fn fail(&mut self, slot: usize, problem: Problem, detail: &str, now: Nanos) {
        self.close(slot);
        let s = &mut self.slots[slot];
        if let Some(t) = s.timer.take() {
            self.wheel.cancel(t);
        }
        if let Some(index) = s.busy.take() {
            self.gone.ended(Some(problem), now);
            let run = &mut self.runs[index];
            if run.start != 0 {
                run.end = now;
            }
            run.failure = Some(Box::new(Failure {
                problem,
                detail: detail.into(),
            }));
            self.failed_runs += 1;
            self.finished_runs += 1;
            self.free.push(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(mut stream) = s.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        s.http = None;
        s.tunnel = None;
        s.reused = false;
        s.transport = Transport::Plain;
        s.connecting = false;
        s.serial += 1;
    }

    fn abandon_in_flight(&mut self, now: Nanos) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].busy.is_some() {
                self.fail(
                    slot,
                    Problem::Interrupted,
                    "interrupted before the answer arrived",
                    now,
                );
            }
        }
    }

    fn print_progress(&mut self, now: Nanos) {
        if let Some(progress) = self.progress.as_mut() {
            progress.print(now, &self.runs, self.finished_runs, self.failed_runs);
        }
    }
}

/// When bytes are buffered with no request outstanding: the first line of
/// that unexpected answer, for the error.
fn unsolicited_answer(http: &mut ClientConn) -> Option<String> {
    if http.in_flight() > 0 || !matches!(http.next_response(), Err(ClientError::Unsolicited)) {
        return None;
    }
    let bytes = http.unread();
    let line = bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(bytes);
    let line = String::from_utf8_lossy(&line[..line.len().min(80)]);
    Some(format!("{} bytes starting '{line}'", bytes.len()))
}

/// Whether progress lines suit stderr (a terminal).
pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

pub fn classify(e: &io::Error, during: &str) -> (Problem, String) {
    let problem = match e.kind() {
        io::ErrorKind::ConnectionRefused => Problem::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Problem::Reset,
        io::ErrorKind::TimedOut => Problem::Timeout,
        _ => Problem::Io,
    };
    (problem, format!("{during}: {e}"))
}
