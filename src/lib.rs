//! conntest: proves a network path delivers every byte of every request,
//! and measures its latency.
//!
//! `conntest server` records test runs; `conntest client` sends them with an
//! exact concurrency and compares what it sent with what the server
//! recorded. Both are mio event loops over sans-IO HTTP/1.1 machines:
//!
//! - [`http`]: the protocol, as state machines without sockets;
//! - [`event`]: clock, timer wheel, precise wake-ups, resolver, tokens;
//! - [`server`]: the test-group API and the server loop;
//! - [`client`]: the load driver, verification and the one-command run;
//! - [`report`]: the report file, percentiles and timestamps;
//! - [`wire`]: the JSON contract shared by all of them.

pub mod cli;
pub mod client;
pub mod event;
pub mod http;
pub mod ids;
pub mod log;
pub mod report;
pub mod server;
pub mod signals;
pub mod tls;
pub mod wire;
