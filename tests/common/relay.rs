//! A relay between a raw (tcp or udp) conntest client and the server that
//! harms chosen runs in one direction: drops, duplicates, swaps with the
//! next message, or flips a data byte. Runs are told apart by the run
//! count in each message's header (bytes 20..28), so the harm lands on
//! exactly the runs named, whatever the timing. Std sockets on threads;
//! stopped on drop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HEADER_LEN: usize = 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Drop,
    Duplicate,
    /// Held until the next message in the same direction, sent after it.
    SwapWithNext,
    /// The data's third byte flipped.
    Flip,
}

/// The harm to do, by run count, in each direction.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub to_server: HashMap<u64, Fault>,
    pub from_server: HashMap<u64, Fault>,
}

pub struct Relay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn count_of(message: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(message.get(20..28)?.try_into().ok()?))
}

fn flip(message: &mut [u8]) {
    if let Some(b) = message.get_mut(HEADER_LEN + 2) {
        *b ^= 0x20;
    }
}

/// One direction's forwarding: what to send for each message received.
struct Harm {
    faults: HashMap<u64, Fault>,
    held: Option<Vec<u8>>,
}

impl Harm {
    fn apply(&mut self, mut message: Vec<u8>) -> Vec<Vec<u8>> {
        let fault = count_of(&message).and_then(|n| self.faults.get(&n).copied());
        let mut out = match fault {
            Some(Fault::Drop) => vec![],
            Some(Fault::Duplicate) => vec![message.clone(), message],
            Some(Fault::SwapWithNext) if self.held.is_none() => {
                self.held = Some(message);
                return vec![];
            }
            Some(Fault::Flip) => {
                flip(&mut message);
                vec![message]
            }
            _ => vec![message],
        };
        out.extend(self.held.take());
        out
    }
}

impl Relay {
    /// A UDP relay on 127.0.0.1 to `server`.
    pub fn udp(server: SocketAddr, faults: Faults) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("relay front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("relay back");
        back.connect(server).expect("relay connect");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let mut threads = Vec::new();
        {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (stop, client) = (Arc::clone(&stop), Arc::clone(&client));
            let mut harm = Harm {
                faults: faults.to_server,
                held: None,
            };
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap() = Some(from);
                        for m in harm.apply(buf[..n].to_vec()) {
                            let _ = back.send(&m);
                        }
                    }
                }
            }));
        }
        {
            let stop = Arc::clone(&stop);
            let mut harm = Harm {
                faults: faults.from_server,
                held: None,
            };
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = back.recv(&mut buf) {
                        let to = *client.lock().unwrap();
                        for m in harm.apply(buf[..n].to_vec()) {
                            if let Some(to) = to {
                                let _ = front.send_to(&m, to);
                            }
                        }
                    }
                }
            }));
        }
        Relay {
            addr,
            stop,
            threads,
        }
    }

    /// A TCP relay on 127.0.0.1 to `server`: each connection is copied
    /// both ways; a connection's first message (a fresh connection per
    /// run carries one) gets its run's harm; only [`Fault::Flip`] and
    /// [`Fault::Drop`] (the message never forwarded) make sense here.
    pub fn tcp(server: SocketAddr, faults: Faults) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(faults);
        let loop_stop = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !loop_stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to, map) in [
                    (
                        client.try_clone().unwrap(),
                        upstream.try_clone().unwrap(),
                        true,
                    ),
                    (upstream, client, false),
                ] {
                    let faults = Arc::clone(&faults);
                    std::thread::spawn(move || {
                        let map = if map {
                            &faults.to_server
                        } else {
                            &faults.from_server
                        };
                        copy_harmed(from, to, map);
                    });
                }
            }
        });
        Relay {
            addr,
            stop,
            threads: vec![thread],
        }
    }
}

/// Copies a stream, the first message harmed as its count says.
fn copy_harmed(mut from: TcpStream, mut to: TcpStream, faults: &HashMap<u64, Fault>) {
    let mut first = Vec::new();
    let mut buf = [0u8; 65_536];
    let mut decided = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if decided {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        }
        first.extend_from_slice(&buf[..n]);
        if first.len() < HEADER_LEN + 3 {
            continue;
        }
        decided = true;
        match count_of(&first).and_then(|c| faults.get(&c)) {
            Some(Fault::Drop) => first.clear(),
            Some(Fault::Flip) => flip(&mut first),
            _ => {}
        }
        if to.write_all(&first).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
