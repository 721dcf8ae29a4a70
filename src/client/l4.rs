//! Raw TCP and UDP runs (issue 12): the client's own mio loop. Each run
//! sends one message (header and data, [`crate::l4::header`]) and waits for
//! its echo, with exactly `concurrency` runs in flight, paced by
//! `client_delay_ns` on the timer wheel; `--timeout` bounds each run (for
//! UDP it decides loss). UDP runs share one connected socket; TCP runs open
//! a connection each, or with `tcp_reuse` share `concurrency` long-lived
//! ones. The echo's bytes are checked against what was sent.
//!
//! [`judge`] then adds what only raw runs can tell to the comparison's
//! verdicts: in which direction a run was lost, duplicated, corrupted or
//! reordered, and the summary's `l4` figures.

use super::driver::{classify, GoneWatch, GRACE};
use super::pacing::{new_run, Pacing, RunPlan};
use super::progress::{self, Progress};
use crate::event::clock::{self, Nanos, WallAnchor, MILLISECOND};
use crate::event::datagrams::{Got, RecvBatch, SendBatch};
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::wake::WakeTimer;
use crate::event::Source;
use crate::ids::IdGen;
use crate::l4::framing::Framer;
use crate::l4::header::{encode_message, Header, HEADER_LEN};
use crate::problem::Problem;
use crate::report::summary::{L4Summary, Summary};
use crate::run::{ClientRun, DriverOutcome, Failure, Numbering, RunVerdict};
use crate::wire::{Protocol, RecordedRun};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

pub struct L4DriverConfig {
    /// Where the runs go: the server's (or a relay's) raw port.
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub tcp_reuse: bool,
    pub group: Uuid,
    /// The runs, their counts, pace and bound.
    pub plan: RunPlan,
}

/// What the client saw of a raw run beside its [`ClientRun`].
#[derive(Debug, Clone)]
pub struct L4Run {
    /// Echoes received (more than one: duplicated on the way back).
    pub echoes: u32,
    /// How the first echo that differed from what was sent differed.
    pub echo_error: Option<Box<str>>,
    /// The order in which its first echo arrived; `u32::MAX` for none.
    pub arrival: u32,
    /// Its slot while in flight.
    slot: u32,
}

impl L4Run {
    /// What a shard uploaded of a run's echoes (`conntest report`).
    pub fn received(echoes: u32, echo_error: Option<Box<str>>, arrival: Option<u32>) -> L4Run {
        L4Run {
            echoes,
            echo_error,
            arrival: arrival.unwrap_or(u32::MAX),
            slot: 0,
        }
    }
}

/// The raw runs' own facts, one per run of the outcome, in order.
pub struct L4Facts {
    pub protocol: Protocol,
    pub runs: Vec<L4Run>,
}

enum Timer {
    Due,
    Timeout { slot: usize, serial: u64 },
    Progress,
}

#[derive(Default)]
struct Slot {
    run: Option<usize>,
    serial: u64,
    timer: Option<TimerKey>,
    /// TCP: the connection.
    stream: Option<TcpStream>,
    connecting: bool,
    connect_started: Nanos,
    framer: Option<Framer>,
    /// The message being written (TCP) or waiting for room to send (UDP).
    out: Vec<u8>,
    written: usize,
}

const UDP_TOKEN: usize = usize::MAX >> 4;
/// After the last run, echoes that come this soon are still counted
/// (a duplicate of the last echo).
const LINGER: Nanos = 20 * MILLISECOND;

struct Driver<'a> {
    cfg: L4DriverConfig,
    poll: Poll,
    wheel: TimerWheel<Timer>,
    wake: WakeTimer,
    udp: Option<UdpSocket>,
    /// Echoes read in one call (UDP).
    recv: Option<Box<RecvBatch>>,
    /// Datagrams to send in one call, and the slot and run of each, in
    /// order; they wait here too while the socket is full.
    sends: SendBatch,
    sending: Vec<(usize, usize)>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    runs: Vec<ClientRun>,
    facts: Vec<L4Run>,
    pacing: Pacing,
    in_flight: usize,
    arrivals: u32,
    connections_opened: u64,
    ids: IdGen,
    buf: Vec<u8>,
    uuid_text: [u8; 36],
    stop: &'a AtomicBool,
    /// Runs failed so far (the progress line's errors).
    failed: u64,
    progress: Option<Progress>,
    gone: GoneWatch,
    /// Why the test stopped before its last run: the server seems gone.
    gave_up: Option<String>,
    /// Interrupted or given up: nothing more is sent.
    stopping: bool,
}

/// Drives every run; returns the runs, their raw facts and why the test
/// stopped early when it did (the server seems gone).
pub fn drive(
    cfg: L4DriverConfig,
    stop: &AtomicBool,
) -> io::Result<(DriverOutcome, L4Facts, Option<String>)> {
    let poll = Poll::new()?;
    let wake = WakeTimer::new(poll.registry(), Source::WakeTimer.token())?;
    let udp = match cfg.protocol {
        Protocol::Udp => {
            let local: SocketAddr = if cfg.addr.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(cfg.addr),
                socket2::Type::DGRAM,
                None,
            )?;
            let _ = socket.set_recv_buffer_size(4 << 20);
            let _ = socket.set_send_buffer_size(4 << 20);
            socket.bind(&local.into())?;
            socket.connect(&cfg.addr.into())?;
            socket.set_nonblocking(true)?;
            crate::event::datagrams::coalesce(&socket);
            let mut udp = UdpSocket::from_std(socket.into());
            poll.registry().register(
                &mut udp,
                Source::Connection(UDP_TOKEN).token(),
                Interest::READABLE,
            )?;
            Some(udp)
        }
        _ => None,
    };
    let concurrency = cfg.plan.concurrency.max(1);
    let now = clock::now();
    let anchor = WallAnchor::capture();
    let mut d = Driver {
        poll,
        wheel: TimerWheel::new(now),
        wake,
        recv: udp.as_ref().map(|_| Box::default()),
        udp,
        sends: SendBatch::default(),
        sending: Vec::new(),
        slots: (0..concurrency).map(|_| Slot::default()).collect(),
        free: (0..concurrency).rev().collect(),
        runs: Vec::with_capacity(cfg.plan.run_count.min(1 << 20) as usize),
        facts: Vec::with_capacity(cfg.plan.run_count.min(1 << 20) as usize),
        pacing: Pacing::new(now, cfg.plan.client_delay, cfg.plan.run_count),
        in_flight: 0,
        arrivals: 0,
        connections_opened: 0,
        ids: IdGen::new(),
        buf: vec![0; 65_536],
        uuid_text: [0; 36],
        stop,
        failed: 0,
        progress: None,
        gone: GoneWatch::new(cfg.plan.keep_going),
        gave_up: None,
        stopping: false,
        cfg,
    };
    if d.cfg.plan.progress {
        d.progress = Some(Progress::new(now, d.cfg.plan.run_count));
        d.wheel.insert(now + progress::INTERVAL, Timer::Progress);
    }
    let interrupted = d.run()?;
    if d.cfg.plan.progress {
        progress::clear();
    }
    let outcome = DriverOutcome {
        runs: d.runs,
        started: d.pacing.started,
        finished: clock::now(),
        client_delay: d.cfg.plan.client_delay,
        anchor,
        interrupted,
        connections_opened: d.connections_opened,
        tls: None,
        numbering: Numbering::Stride {
            first: d.cfg.plan.first_count,
            stride: d.cfg.plan.count_stride,
        },
    };
    let facts = L4Facts {
        protocol: d.cfg.protocol,
        runs: d.facts,
    };
    Ok((outcome, facts, d.gave_up))
}

impl Driver<'_> {
    /// Returns whether the test was interrupted.
    fn run(&mut self) -> io::Result<bool> {
        let mut events = Events::with_capacity(1024);
        let mut linger_until = None;
        let mut grace_until = None;
        self.dispatch(clock::now())?;
        loop {
            let now = clock::now();
            // An interrupt, or a server that seems gone: nothing more is
            // sent, and the runs in flight get a grace to finish.
            if !self.stopping {
                let interrupted = self.stop.load(Ordering::Relaxed);
                if !interrupted {
                    let addr = self.cfg.addr;
                    self.gave_up = self.gone.gone(now, || format!("the server at {addr}"));
                }
                if interrupted || self.gave_up.is_some() {
                    self.stopping = true;
                    grace_until = Some(now + GRACE);
                }
            }
            let interrupted = self.stopping && self.gave_up.is_none();
            if grace_until.is_some_and(|g| now >= g) {
                self.abandon(now);
                return Ok(interrupted);
            }
            let all_sent = self.stopping || self.runs.len() as u64 >= self.cfg.plan.run_count;
            if self.in_flight == 0 && all_sent {
                match linger_until {
                    None if self.udp.is_some() => linger_until = Some(now + LINGER),
                    Some(t) if now < t => {}
                    _ => return Ok(interrupted),
                }
            }
            let next = match linger_until {
                Some(t) => Some(self.wheel.next_wakeup().map_or(t, |n| n.min(t))),
                None => self.wheel.next_wakeup(),
            };
            let cap = std::time::Duration::from_millis(100);
            let timeout = self.wake.prepare(next, now, Some(cap))?;
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = clock::now();
            for event in events.iter() {
                match Source::from_token(event.token()) {
                    Some(Source::Connection(UDP_TOKEN)) => {
                        self.udp_flush()?;
                        self.udp_read(now);
                    }
                    Some(Source::Connection(slot)) => self.tcp_ready(slot, now),
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
                        let s = &mut self.slots[slot];
                        if s.serial == serial && s.run.is_some() {
                            s.timer = None;
                            let detail = format!(
                                "no echo within {} ms",
                                self.cfg.plan.timeout / MILLISECOND
                            );
                            self.fail(slot, Problem::Timeout, &detail, now);
                        }
                    }
                    Timer::Progress => {
                        if let Some(p) = self.progress.as_mut() {
                            let finished = (self.runs.len() - self.in_flight) as u64;
                            p.print(now, &self.runs, finished, self.failed);
                        }
                        self.wheel.insert(now + progress::INTERVAL, Timer::Progress);
                    }
                }
            }
            self.dispatch(now)?;
        }
    }

    /// Starts every run that is due while a slot is free; UDP runs' datagrams
    /// leave together.
    fn dispatch(&mut self, now: Nanos) -> io::Result<()> {
        self.start_due(now);
        self.udp_flush()
    }

    fn start_due(&mut self, now: Nanos) {
        while !self.stopping {
            let index = self.runs.len();
            if !self.pacing.due(index, now, &mut self.wheel, Timer::Due) {
                return;
            }
            let Some(slot) = self.free.pop() else { return };
            self.runs.push(new_run(&self.cfg.plan.body, &mut self.ids));
            self.facts.push(L4Run {
                echoes: 0,
                echo_error: None,
                arrival: u32::MAX,
                slot: slot as u32,
            });
            self.in_flight += 1;
            let count = self.count(index);
            let s = &mut self.slots[slot];
            s.run = Some(index);
            s.out.clear();
            s.written = 0;
            let data = self
                .cfg
                .plan
                .body
                .bytes(index, &self.runs[index], &mut self.uuid_text);
            encode_message(self.cfg.group, count, data, &mut s.out);
            let serial = s.serial;
            s.timer = Some(
                self.wheel
                    .insert(now + self.cfg.plan.timeout, Timer::Timeout { slot, serial }),
            );
            match self.cfg.protocol {
                Protocol::Udp => self.udp_send(slot),
                _ if self.slots[slot].stream.is_some() => self.tcp_write(slot, clock::now()),
                _ => self.tcp_connect(slot, now),
            }
        }
    }

    fn count(&self, index: usize) -> u64 {
        self.cfg.plan.first_count + index as u64 * self.cfg.plan.count_stride
    }

    /// Queues the slot's datagram; [`Driver::udp_flush`] sends it.
    fn udp_send(&mut self, slot: usize) {
        if let Some(index) = self.slots[slot].run {
            self.sends.push(&self.slots[slot].out, None);
            self.sending.push((slot, index));
        }
    }

    /// Sends the datagrams queued, a batch per call; each run starts when
    /// its call is made. A full socket keeps the rest until it has room.
    fn udp_flush(&mut self) -> io::Result<()> {
        while !self.sending.is_empty() {
            let Some(udp) = &self.udp else { break };
            let start = clock::now();
            let before = self.sends.len();
            let result = self.sends.send(udp);
            let gone = before - self.sends.len();
            let failed = match result {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Some(e),
            };
            let sent = gone - usize::from(failed.is_some());
            // A run that ended while its datagram waited (timed out behind
            // a full socket) is not started by it.
            for &(slot, index) in &self.sending[..sent] {
                if self.slots[slot].run == Some(index) {
                    self.runs[index].start = start;
                }
            }
            let failed_slot = failed.is_some().then(|| self.sending[sent]);
            self.sending.drain(..gone);
            if let (Some((slot, index)), Some(e)) = (failed_slot, failed) {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    // An ICMP port unreachable of an earlier datagram.
                    self.udp_refused(start);
                } else if self.slots[slot].run == Some(index) {
                    let (problem, detail) = classify(&e, "sending the datagram");
                    self.fail(slot, problem, &detail, start);
                }
            } else if gone == 0 {
                break;
            }
        }
        if let Some(udp) = &mut self.udp {
            let token = Source::Connection(UDP_TOKEN).token();
            self.sends.follow_room(udp, self.poll.registry(), token)?;
        }
        Ok(())
    }

    /// Reads every echo waiting, a batch per call.
    fn udp_read(&mut self, now: Nanos) {
        let Some(mut batch) = self.recv.take() else {
            return;
        };
        while self.udp_read_batch(&mut batch, now) {}
        self.recv = Some(batch);
    }

    /// One read; whether more may wait.
    fn udp_read_batch(&mut self, batch: &mut RecvBatch, now: Nanos) -> bool {
        let Some(udp) = &self.udp else { return false };
        // An ICMP port unreachable (ECONNREFUSED on the connected socket)
        // ends every run in flight as refused; another error an earlier
        // datagram left is passed over: the runs it concerns time out
        // (lost on the way there).
        match batch.read(udp) {
            Got::Datagrams => {}
            Got::Again(Some(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.udp_refused(now);
                return true;
            }
            Got::Again(e) => {
                if let Some(e) = e {
                    crate::debug!("udp: {e}");
                }
                return true;
            }
            Got::Empty => return false,
        }
        for (datagram, _) in batch.datagrams() {
            let Ok(header) = Header::decode(datagram) else {
                crate::debug!("a datagram of {} bytes that is not an echo", datagram.len());
                continue;
            };
            let Some(index) = self.index_of(&header) else {
                crate::debug!("an echo of run {} which was not sent", header.run_count);
                continue;
            };
            self.echo(index, &header, &datagram[HEADER_LEN..], now);
        }
        !batch.drained()
    }

    /// The socket reported an ICMP port unreachable (ECONNREFUSED): nothing
    /// takes datagrams on the server's port. The socket does not say which
    /// datagram it came back for, and holds one such error for many, so
    /// every run in flight ends refused (a datagram a send refused was not
    /// sent).
    fn udp_refused(&mut self, now: Nanos) {
        let detail = format!(
            "ICMP port unreachable: nothing takes datagrams on {} (every run in flight then ends refused)",
            self.cfg.addr
        );
        for slot in 0..self.slots.len() {
            if self.slots[slot].run.is_some() {
                self.fail(slot, Problem::Refused, &detail, now);
            }
        }
        self.sending.clear();
        self.sends.clear();
    }

    /// The run an echo's header names, if this test sent it.
    fn index_of(&self, header: &Header) -> Option<usize> {
        let offset = header.run_count.checked_sub(self.cfg.plan.first_count)?;
        if header.group != self.cfg.group || offset % self.cfg.plan.count_stride.max(1) != 0 {
            return None;
        }
        let index = usize::try_from(offset / self.cfg.plan.count_stride.max(1)).ok()?;
        (index < self.runs.len()).then_some(index)
    }

    /// An echo of run `index` arrived: checked against what was sent; the
    /// first one ends the run.
    fn echo(&mut self, index: usize, header: &Header, data: &[u8], now: Nanos) {
        let sent = self
            .cfg
            .plan
            .body
            .bytes(index, &self.runs[index], &mut self.uuid_text);
        let differs = if data != sent {
            let at = sent.iter().zip(data).take_while(|(a, b)| a == b).count();
            Some(format!(
                "the echo differs from what was sent at byte {at} (sent {} bytes, echoed {})",
                sent.len(),
                data.len()
            ))
        } else if !header.checks(data) || header.run_count != self.count(index) {
            Some("the echo's header does not match its data".to_owned())
        } else {
            None
        };
        let fact = &mut self.facts[index];
        fact.echoes += 1;
        if fact.echo_error.is_none() {
            fact.echo_error = differs.map(Into::into);
        }
        let slot = fact.slot as usize;
        if self.slots[slot].run != Some(index) {
            // A late or repeated echo: counted, the run is over.
            return;
        }
        fact.arrival = self.arrivals;
        self.arrivals += 1;
        self.gone.ended(None, now);
        let run = &mut self.runs[index];
        // A fresh connection's message is written and its echo read in one
        // call: a wake-up's `now` can then precede the run's start (the
        // process was preempted between the two on a busy host).
        run.end = if now > run.start { now } else { clock::now() };
        run.status = 200;
        self.finish(slot);
        if self.cfg.protocol == Protocol::Tcp && !self.cfg.tcp_reuse {
            self.close(slot);
        }
    }

    fn finish(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(t) = s.timer.take() {
            self.wheel.cancel(t);
        }
        if s.run.take().is_some() {
            self.in_flight -= 1;
            self.free.push(slot);
        }
    }

    fn fail(&mut self, slot: usize, problem: Problem, detail: &str, now: Nanos) {
        if let Some(index) = self.slots[slot].run {
            self.failed += 1;
            self.gone.ended(Some(problem), now);
            let run = &mut self.runs[index];
            if run.start != 0 {
                run.end = now;
            }
            run.failure = Some(Box::new(Failure {
                problem,
                detail: detail.into(),
            }));
        }
        self.finish(slot);
        if self.cfg.protocol == Protocol::Tcp {
            // A late echo on a reused connection would be another run's.
            self.close(slot);
        }
    }

    fn abandon(&mut self, now: Nanos) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].run.is_some() {
                self.fail(
                    slot,
                    Problem::Interrupted,
                    "interrupted before the echo",
                    now,
                );
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(mut stream) = s.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        s.connecting = false;
        s.framer = None;
        s.serial += 1;
    }

    fn tcp_connect(&mut self, slot: usize, now: Nanos) {
        let connected = TcpStream::connect(self.cfg.addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Source::Connection(slot).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.connections_opened += 1;
                let s = &mut self.slots[slot];
                s.stream = Some(stream);
                s.connecting = true;
                s.connect_started = now;
                // Echoes are as long as the message.
                s.framer = Some(Framer::new(s.out.len()));
            }
            Err(e) => {
                let (problem, detail) = classify(&e, "connecting");
                self.fail(slot, problem, &detail, now);
            }
        }
    }

    fn tcp_ready(&mut self, slot: usize, now: Nanos) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(stream) = &s.stream else { return };
        if s.connecting {
            match crate::event::connect_outcome(stream) {
                None => return,
                Some(Err(e)) => {
                    let (problem, detail) = classify(&e, "connecting");
                    return self.fail(slot, problem, &detail, now);
                }
                Some(Ok(())) => {
                    s.connecting = false;
                    if let Some(index) = s.run {
                        let ns = now.saturating_sub(s.connect_started).max(1);
                        self.runs[index].connect_ns = NonZeroU64::new(ns);
                    }
                    self.tcp_write(slot, clock::now());
                }
            }
        }
        self.tcp_write(slot, now);
        self.tcp_read(slot, now);
    }

    /// Writes what is left of the slot's message.
    fn tcp_write(&mut self, slot: usize, now: Nanos) {
        let s = &mut self.slots[slot];
        let (Some(stream), Some(index)) = (&mut s.stream, s.run) else {
            return;
        };
        if s.connecting || s.written >= s.out.len() {
            return;
        }
        if s.written == 0 {
            self.runs[index].start = clock::now();
        }
        while s.written < s.out.len() {
            match stream.write(&s.out[s.written..]) {
                Ok(0) => break,
                Ok(n) => s.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (problem, detail) = classify(&e, "sending the message");
                    return self.fail(slot, problem, &detail, now);
                }
            }
        }
    }

    fn tcp_read(&mut self, slot: usize, now: Nanos) {
        loop {
            let s = &mut self.slots[slot];
            let (Some(stream), Some(framer)) = (&mut s.stream, &mut s.framer) else {
                return;
            };
            match stream.read(&mut self.buf) {
                Ok(0) => {
                    if s.run.is_some() {
                        self.fail(
                            slot,
                            Problem::Closed,
                            "the server closed before the echo",
                            now,
                        );
                    } else {
                        self.close(slot);
                    }
                    return;
                }
                Ok(n) => framer.receive(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let (problem, detail) = classify(&e, "reading the echo");
                    return self.fail(slot, problem, &detail, now);
                }
            }
            while let Some(m) = self.slots[slot]
                .framer
                .as_mut()
                .and_then(Framer::next_message)
            {
                match m {
                    Ok(m) => match (self.slots[slot].run, self.index_of(&m.header)) {
                        (Some(index), Some(echoed)) if index == echoed => {
                            self.echo(index, &m.header, &m.data, now)
                        }
                        _ => {
                            let detail = format!(
                                "an echo of run {} came on this run's connection",
                                m.header.run_count
                            );
                            return self.fail(slot, Problem::Malformed, &detail, now);
                        }
                    },
                    Err(why) => {
                        let detail = format!("the echo is not a conntest message ({why:?})");
                        return self.fail(slot, Problem::Malformed, &detail, now);
                    }
                }
            }
        }
    }
}

/// Adds what raw runs tell to the comparison's verdicts (one per run sent,
/// first): a UDP run without an echo is lost on the way there (no record)
/// or on the way back (recorded); an echo that came twice is duplicated on
/// the way back, one whose bytes differ (while the record is right)
/// corrupted on the way back; a UDP run that reached the server, or whose
/// echo reached the client, after one sent after it is reordered. Returns
/// the summary's `l4` figures.
pub fn judge(
    verdicts: &mut [RunVerdict],
    outcome: &DriverOutcome,
    facts: &L4Facts,
    server: Option<&[RecordedRun]>,
) -> L4Summary {
    let udp = facts.protocol == Protocol::Udp;
    // Each count's records: how many, and the first's index.
    let mut records: HashMap<u64, (u32, u32)> = HashMap::new();
    for (i, r) in server.unwrap_or(&[]).iter().enumerate() {
        let e = records.entry(r.run_count).or_insert((0, i as u32));
        e.0 += 1;
    }
    let mut l4 = L4Summary {
        protocol: facts.protocol.name(),
        sent: outcome.runs.iter().filter(|r| r.start != 0).count() as u64,
        ..L4Summary::default()
    };
    let mut added: Vec<Vec<(Problem, String)>> = vec![Vec::new(); outcome.runs.len()];
    let mut replaced = vec![false; outcome.runs.len()];
    for (i, (run, fact)) in outcome.runs.iter().zip(&facts.runs).enumerate() {
        let recorded = records.get(&outcome.count(i)).map_or(0, |r| r.0);
        if recorded > 0 {
            l4.reached_server += 1;
        }
        let timed_out = run
            .failure
            .as_ref()
            .is_some_and(|f| f.problem == Problem::Timeout);
        if udp && timed_out && server.is_some() {
            replaced[i] = true;
            if recorded == 0 {
                l4.lost_to_server += 1;
                added[i].push((
                    Problem::LostToServer,
                    "lost on the way to the server: never recorded, no echo".into(),
                ));
            } else {
                l4.lost_from_server += 1;
                added[i].push((
                    Problem::LostFromServer,
                    "lost on the way back: the server recorded it, no echo came".into(),
                ));
            }
        }
        if recorded > 1 {
            l4.duplicated_to_server += 1;
        }
        // Each copy the server recorded is echoed: more echoes than
        // copies were duplicated on the way back.
        if fact.echoes > recorded.max(1) {
            l4.duplicated_from_server += 1;
            added[i].push((
                Problem::DuplicatedEcho,
                format!("the echo came back {} times", fact.echoes),
            ));
        }
        if let Some(why) = &fact.echo_error {
            let corrupted_there = verdicts
                .get(i)
                .is_some_and(|v| v.problems().iter().any(|p| p.0 == Problem::Corrupted));
            if !corrupted_there {
                l4.corrupted_from_server += 1;
                added[i].push((
                    Problem::CorruptedEcho,
                    format!("corrupted on the way back: {why}"),
                ));
            }
        }
    }
    for v in verdicts.iter() {
        for (p, _) in v.problems() {
            if *p == Problem::Corrupted {
                l4.corrupted_to_server += 1;
            }
        }
    }
    if let (true, Some(server)) = (udp, server) {
        // Order and jitter are facts of one flow (one client's socket):
        // each shard's runs are judged among themselves, and the jitter is
        // the mean of the flows', as iperf3 gives parallel streams'.
        let anchor = &outcome.anchor;
        let (mut jitter_to, mut jitter_from) = (Vec::new(), Vec::new());
        for flow in flows(outcome) {
            // The way there: the server's arrivals (first record of each
            // count), by arrival time then record order, against send order.
            let mut arrived: Vec<(u32, usize)> = flow
                .iter()
                .enumerate()
                .filter_map(|(at, &i)| Some((records.get(&outcome.count(i))?.1, at)))
                .collect();
            arrived.sort_unstable_by_key(|&(k, at)| (server[k as usize].server_start, k, at));
            let positions: Vec<u64> = arrived.iter().map(|a| a.1 as u64).collect();
            let (n, extent) = mark_reordered(
                &positions,
                |at| flow[arrived[at].1],
                &mut added,
                |e| {
                    (
                    Problem::Reordered,
                    format!("reordered on the way to the server: arrived {e} later than a run sent after it"),
                )
                },
            );
            l4.reordered_to_server += n;
            l4.max_reorder_extent_to_server = l4.max_reorder_extent_to_server.max(extent);
            if arrived.len() > 1 {
                jitter_to.push(crate::l4::order::jitter(arrived.iter().map(|&(k, at)| {
                    (
                        anchor.wall(outcome.runs[flow[at]].start),
                        server[k as usize].server_start as i128,
                    )
                })));
            }
            // The way back: the client's arrivals of first echoes against
            // the order the server recorded (and so echoed) them.
            let mut echoed: Vec<(u32, usize, u32)> = flow
                .iter()
                .filter(|&&i| facts.runs[i].arrival != u32::MAX)
                .filter_map(|&i| {
                    let k = records.get(&outcome.count(i))?.1;
                    Some((facts.runs[i].arrival, i, k))
                })
                .collect();
            echoed.sort_unstable();
            let order: Vec<u64> = echoed.iter().map(|e| e.2 as u64).collect();
            let (n, extent) = mark_reordered(
                &order,
                |at| echoed[at].1,
                &mut added,
                |e| {
                    (
                    Problem::ReorderedEcho,
                    format!("reordered on the way back: its echo arrived {e} later than one the server sent after it"),
                )
                },
            );
            l4.reordered_from_server += n;
            l4.max_reorder_extent_from_server = l4.max_reorder_extent_from_server.max(extent);
            if echoed.len() > 1 {
                jitter_from.push(crate::l4::order::jitter(echoed.iter().map(|&(_, i, k)| {
                    (
                        server[k as usize].server_end as i128,
                        anchor.wall(outcome.runs[i].end),
                    )
                })));
            }
        }
        let mean = |v: &[f64]| match v.len() {
            0 => 0,
            n => (v.iter().sum::<f64>() / n as f64).round() as u64,
        };
        l4.jitter_to_server_ns = mean(&jitter_to);
        l4.jitter_from_server_ns = mean(&jitter_from);
    }
    let percent = |part: u64, whole: u64| match whole {
        0 => 0.0,
        w => part as f64 * 100.0 / w as f64,
    };
    l4.loss_to_server_percent = percent(l4.lost_to_server, l4.sent);
    l4.loss_from_server_percent = percent(l4.lost_from_server, l4.reached_server);
    for (i, more) in added.into_iter().enumerate() {
        let Some(v) = verdicts.get_mut(i) else { break };
        if more.is_empty() {
            continue;
        }
        let mut problems: Vec<(Problem, String)> = v
            .problems()
            .iter()
            .filter(|p| !(replaced[i] && p.0 == Problem::Timeout))
            .cloned()
            .collect();
        problems.extend(more);
        *v = RunVerdict::new(v.run_count, v.server_index, problems);
    }
    l4
}

/// Marks the reordered arrivals of one direction (`order`: each arrival's
/// place in the order sent, in arrival order; `run_at`: the run of an
/// arrival) with `problem(extent)`; how many, and the largest extent.
fn mark_reordered(
    order: &[u64],
    run_at: impl Fn(usize) -> usize,
    added: &mut [Vec<(Problem, String)>],
    problem: impl Fn(usize) -> (Problem, String),
) -> (u64, u64) {
    let mut found = (0, 0);
    for (at, extent) in crate::l4::order::reordered(order) {
        found = (found.0 + 1, found.1.max(extent as u64));
        added[run_at(at)].push(problem(extent));
    }
    found
}

/// The runs of each flow, in send order: every run of one client, or each
/// shard's runs of a merged test.
fn flows(outcome: &DriverOutcome) -> Vec<Vec<usize>> {
    match &outcome.numbering {
        Numbering::Stride { .. } => vec![(0..outcome.runs.len()).collect()],
        Numbering::Listed(runs) => {
            let mut by_shard: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
            for (i, r) in runs.iter().enumerate() {
                by_shard.entry(r.shard).or_default().push(i);
            }
            by_shard.into_values().collect()
        }
    }
}

/// The summary of a raw test: its figures, and every raw kind counted
/// (zero when none).
pub fn summarize(summary: &mut Summary, l4: L4Summary) {
    for p in Problem::L4 {
        summary.discrepancies.entry(p.name()).or_insert(0);
    }
    summary.l4 = Some(l4);
}
