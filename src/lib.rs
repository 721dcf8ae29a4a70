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
//! - [`report`]: the report file and the summary's percentiles;
//! - [`plot`]: charts of a report (`conntest plot`), as SVG and HTML;
//! - [`run`]: the client's runs and the verdict on each, which the report reads;
//! - [`problem`]: every kind of thing that can be wrong with a run;
//! - [`time`]: RFC 3339 timestamps;
//! - [`wire`]: the JSON contract shared by all of them.
//!
//! The protocol machines need no sockets and no clock, so they can be
//! driven by hand, time included:
//!
//! ```
//! use conntest::event::clock::{WallAnchor, SECOND};
//! use conntest::http::server::{Response, ServerConn, ServerLimits};
//!
//! let mut conn = ServerConn::new(ServerLimits::default(), WallAnchor::fixed(0, 0), 0);
//! conn.receive(b"POST /test-groups/g/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 0);
//! let request = conn.next_request(0).expect("a whole request");
//! assert_eq!(request.body, b"hi");
//! conn.respond(request.seq, Response::empty(200), 0);
//! assert!(conn.poll_output().starts_with(b"HTTP/1.1 200 OK\r\n"));
//! // Part of a request, then nothing for 10 s: 408.
//! conn.receive(b"GET /healthz HT", SECOND);
//! assert!(conn.next_request(SECOND).is_none());
//! assert_eq!(conn.poll_timeout(), Some(11 * SECOND));
//! conn.handle_timeout(11 * SECOND);
//! let out = conn.poll_output();
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! assert!(out.windows(12).any(|w| w == b"HTTP/1.1 408"));
//! ```

pub mod cert;
pub mod cli;
pub mod client;
pub mod event;
pub mod http;
pub mod ids;
pub mod json;
pub mod l4;
pub mod log;
pub mod plot;
pub mod problem;
pub mod report;
pub mod run;
pub mod server;
pub mod signals;
pub mod store;
pub mod time;
pub mod tls;
pub mod wire;
