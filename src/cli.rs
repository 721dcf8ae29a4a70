//! The command line: `conntest server`, `conntest client`, `conntest run`,
//! `conntest report`, `conntest plot`.
//!
//! Exit status: 0 the test passed (or the server stopped cleanly); 1 the
//! test failed (the report is still written); 2 a usage or setup error (one
//! line on stderr, no report); 130 interrupted (a partial report is written).

use crate::client::fetch::{Endpoint, Overrides, TlsOptions};
use crate::client::gather::GatherOptions;
use crate::client::shard::{Shard, ShardArgs};
use crate::client::{self, ClientOptions, Verdict};
use crate::event::clock::{Nanos, MICROSECOND, MILLISECOND, SECOND};
use crate::http::proxy::Proxies;
use crate::report::RunsFilter;
use crate::server::{Server, ServerOptions, StopSignal};
use crate::store::redis::{RedisStore, RedisUrl};
use pico_args::{Arguments, Keys};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERNAL: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
conntest: prove a network path delivers every request, and measure it

Usage:
  conntest server [-p PORT] [options]      record test runs (the remote side)
  conntest client -r URL -g ID [options]   run a test group against a server
  conntest run [options]                   create a group and run it in one step
                                           (starts a local server unless -r is given)
  conntest report -r URL -g ID -f FILE     the report of a sharded test, from the server
  conntest plot REPORT -o FILE.html|.svg   charts of a report: a self-contained page, or SVG

Run `conntest COMMAND --help` for a command's options.
Exit status: 0 passed, 1 test failed, 2 usage or setup error, 130 interrupted.
";

const SERVER_HELP: &str = "\
Usage: conntest server [options]

  -p, --port PORT            port to listen on (default 8080)
  --bind ADDR                address to listen on (default: all interfaces, IPv4 and IPv6)
  --threads N                event loops, sharing the port (default 1)
  --tcp-port PORT            take raw TCP runs (\"protocol\": \"tcp\" groups) on this port
                             (0: any free one; default: none)
  --udp-port PORT            take UDP runs (\"protocol\": \"udp\" groups) on this port
                             (0: any free one; default: none)
  --max-body BYTES           largest request body (default 1048576); larger: 413
  --max-connections N        open connections at once (default 10000); more wait in the backlog
  --idle-timeout DURATION    close idle keep-alive connections after this (default 60s)
  --request-timeout DURATION a request must arrive whole within this (default 10s); else 408
  --max-groups N             test groups held at once (default 10000); more: 507
  --max-runs N               runs recorded across all groups (default 50000000); more: 507
  --group-ttl DURATION       groups older than this are dropped (default 7d)
  --store URL                keep groups and runs in Redis, shared by every replica:
                             redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS
                             (also CONNTEST_STORE; default: memory, this process only)
  --token TOKEN              require `Authorization: Bearer TOKEN` (also CONNTEST_TOKEN)
  --upstream-allow LIST      comma-separated HOST, HOST:PORT or http(s)://HOST[:PORT]
                             that upstream_endpoint may name (default: any host, as the
                             seed usage needs)
  --upstream-max-body BYTES  upstream answers larger than this are not read (default 1048576)
  --tls-cert FILE            serve HTTPS with this certificate chain (PEM)...
  --tls-key FILE             ...and this private key (PEM)
  --upstream-cacert FILE     trust this CA (PEM) for https upstreams, beside the platform's
                             (SSL_CERT_FILE and SSL_CERT_DIR are honoured)
  --tls-client-ca FILE       require client certificates issued by a CA in FILE (mutual TLS)
  --upstream-cert FILE       present this client certificate (PEM) to https upstreams...
  --upstream-key FILE        ...with this key

LOG_LEVEL=error|warn|info|debug sets what is logged to stderr (default info).
DURATION is a number with a unit: 500us, 250ms, 10s, 2m, 1h, 7d (a bare number is seconds).
";

const CLIENT_HELP: &str = "\
Usage: conntest client -r URL -g ID [options]

  -r, --remote URL      the server, http://host:port with an optional path prefix
  -g, --group ID        the run_group_id to run (a UUID)
  -f, --file FILE       write the report here (JSON)
  --runs failed|all     the runs the report lists: only failed or discrepant ones, or all
                        (default all); the summary always covers every run
  -d, --data DATA       the body of every run (default: the group's data, else a UUID per run);
                        @FILE reads it from a file, @- from standard input, byte for byte
  --timeout DURATION    per-request timeout (default 30s)
  --token TOKEN         bearer token for a server started with --token (also CONNTEST_TOKEN)
  --cacert FILE         trust this CA (PEM) for an https:// server, beside the platform's
  --cert FILE --key FILE  present this client certificate (PEM) and key (mutual TLS)
  --insecure            do not verify the server's certificate (said so in the report)
  -H, --header 'N: V'   add this header to every request to the server (repeatable; a Host
                        replaces the URL's, TLS keeps the URL's name; not Content-Length or
                        Transfer-Encoding)
  --resolve H:P:ADDR    connect to ADDR for host H port P (repeatable, as curl)
  --connect-to H:P:H2:P2  connect to H2:P2 for host H port P (repeatable, as curl)
  --proxy URL           go through this HTTP proxy, http://[user:pass@]host[:port] (else
                        http_proxy, HTTPS_PROXY, ALL_PROXY as curl reads them; '' for none)
  --noproxy LIST        hosts reached without the proxy, comma-separated (else NO_PROXY)
  --keep-going          do not stop early when every run is refused for 3 s (server gone)
  --l4-addr ADDR:PORT   send a tcp or udp group's runs here (a relay, an L4 balancer)
                        rather than to the -r host and the port the group names
  -q, --quiet           no progress line and no summary
  --shard I/N           send only shard I's runs (0 <= I < N): run n is shard (n-1) mod N's;
                        the pace is N x client_delay_ns and the concurrency c/N (the first
                        c mod N shards one more, each at least 1); the shard's record is
                        uploaded to the server after its runs, for `conntest report`
  --shard I --shards N  the same; I defaults to JOB_COMPLETION_INDEX (a Kubernetes Indexed
                        Job's), N to CONNTEST_SHARDS

Exit status: 0 every run succeeded and matched the server's record; 1 the test
failed (the reason on stderr, the report still written); 2 usage or setup error;
130 interrupted (a partial report is written, marked interrupted).
";

const RUN_HELP: &str = "\
Usage: conntest run [options]

Creates a test group and runs it. Without -r it starts a server in this
process on 127.0.0.1 (an ephemeral port) and tests against it.

  -r, --remote URL            use this server instead of a local one
  --run-count N               runs to send (default 1000)
  --concurrency N             requests in flight at once (default 1)
  --client-delay-ns NS        pace: run n leaves at start + (n-1) x NS
  --server-delay-ns NS        the server holds each answer this long
  --upstream-endpoint URL     the server GETs this on each run
  --upstream-timeout-ns NS    bound on each upstream GET
  --description TEXT          the group's description
  --protocol http|tcp|udp     the runs' protocol (default http); tcp and udp runs are raw
                              messages the server echoes (the local server takes them on
                              ephemeral ports)
  --tcp-reuse                 tcp: runs share --concurrency long-lived connections
  --max-data-bytes N          udp: the most data a datagram may carry (default 1200)
  --l4-addr ADDR:PORT         send tcp or udp runs here (a relay, a balancer) rather than
                              to the server's own port
  -d, --data DATA             the body of every run (default: a UUID per run);
                              @FILE reads it from a file, @- from standard input
  -f, --file FILE             write the report here (JSON)
  --runs failed|all           the runs the report lists (default all; see client --help)
  --timeout DURATION          per-request timeout (default 30s)
  --token TOKEN               bearer token for the server (also CONNTEST_TOKEN)
  --cacert FILE               trust this CA (PEM) for an https:// server
  --cert FILE --key FILE  present this client certificate (PEM) and key (mutual TLS)
  --insecure                  do not verify the server's certificate
  -H, --header 'N: V'         add this header to every request to the server (repeatable)
  --resolve H:P:ADDR          connect to ADDR for host H port P (repeatable, as curl)
  --connect-to H:P:H2:P2      connect to H2:P2 for host H port P (repeatable, as curl)
  --proxy URL                 go through this HTTP proxy (else http_proxy, HTTPS_PROXY...)
  --noproxy LIST              hosts reached without the proxy (else NO_PROXY)
  --keep-going                do not stop early when every run is refused for 3 s
  -q, --quiet                 no progress line and no summary
";

const REPORT_HELP: &str = "\
Usage: conntest report -r URL -g ID -f FILE [options]

Builds the whole report of a sharded test (`conntest client --shard I/N`)
from the server alone: the group's record and every shard's uploaded runs.
Every run count 1..run_count must have been sent by exactly one shard:
counts no shard sent are missing, counts sent by two are duplicated.

  -r, --remote URL      the server, http://host:port with an optional path prefix
  -g, --group ID        the run_group_id (a UUID)
  -f, --file FILE       write the report here (JSON), as `conntest client -f` does
  --runs failed|all     the runs the report lists (default all; see client --help)
  --timeout DURATION    per-request timeout (default 30s; at least 10s for the records)
  --token TOKEN         bearer token for a server started with --token (also CONNTEST_TOKEN)
  --cacert FILE         trust this CA (PEM) for an https:// server, beside the platform's
  --cert FILE --key FILE  present this client certificate (PEM) and key (mutual TLS)
  --insecure            do not verify the server's certificate (said so in the report)
  -H, --header 'N: V'   add this header to every request to the server (repeatable)
  --resolve H:P:ADDR    connect to ADDR for host H port P (repeatable, as curl)
  --connect-to H:P:H2:P2  connect to H2:P2 for host H port P (repeatable, as curl)
  --proxy URL           go through this HTTP proxy, http://[user:pass@]host[:port] (else
                        http_proxy, HTTPS_PROXY, ALL_PROXY as curl reads them; '' for none)
  --noproxy LIST        hosts reached without the proxy, comma-separated (else NO_PROXY)
  -q, --quiet           no summary

Exit status: 0 every run was sent by one shard and matched the server's record;
1 the test failed (the report still written); 2 usage or setup error;
130 interrupted.
";

const PLOT_HELP: &str = "\
Usage: conntest plot REPORT -o FILE

Draws the charts of a report written by `conntest client -f` (or `run`, `report`):
round trip by run count, round trip by percentile (p0 .. p99.999, log scale),
the round-trip histogram, and the achieved rate and failed runs per second
over time. The latency charts come from the summary's histogram, so a report
holding only failed runs plots too.

  -o, --output FILE     FILE.html: one self-contained page (summary table and
                        charts, inline, no scripts); FILE.svg: the charts alone
";

/// Why a command could not do its job, reported as one line on stderr.
#[derive(Debug)]
enum CliError {
    /// Bad flags, or a setup the user can put right: an unreachable server,
    /// an unknown group, a port in use (exit status 2).
    Usage(String),
    /// This machine refused the process a resource it needs: a thread, a
    /// poll instance (exit status 3).
    Internal(String),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Internal(_) => EXIT_INTERNAL,
        }
    }

    fn internal(what: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |e| CliError::Internal(format!("{what}: {e}"))
    }
}

/// Flag parsing errors name the flag.
impl From<pico_args::Error> for CliError {
    fn from(e: pico_args::Error) -> CliError {
        CliError::Usage(e.to_string())
    }
}

impl From<client::RunError> for CliError {
    fn from(e: client::RunError) -> CliError {
        match e {
            client::RunError::Setup(message) => CliError::Usage(message),
            client::RunError::Internal(message) => CliError::Internal(message),
        }
    }
}

pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            match &e {
                CliError::Usage(message) => eprintln!("conntest: {message}"),
                CliError::Internal(message) => eprintln!("conntest: internal error: {message}"),
            }
            e.exit_code()
        }
    }
}

fn dispatch(args: Vec<OsString>) -> Result<i32, CliError> {
    crate::log::init_from_env().map_err(CliError::Usage)?;
    let mut args = Arguments::from_vec(args);
    let command = args.subcommand()?;
    let help = args.contains(["-h", "--help"]);
    match command.as_deref() {
        None | Some("help") if !args.contains(["-V", "--version"]) => {
            print!("{HELP}");
            Ok(if help || command.is_some() {
                EXIT_OK
            } else {
                EXIT_USAGE
            })
        }
        None | Some("help") | Some("version") => {
            println!("conntest {VERSION}");
            Ok(EXIT_OK)
        }
        Some("server") if help => print_help(SERVER_HELP),
        Some("client") if help => print_help(CLIENT_HELP),
        Some("run") if help => print_help(RUN_HELP),
        Some("report") if help => print_help(REPORT_HELP),
        Some("plot") if help => print_help(PLOT_HELP),
        Some("server") => server(args),
        Some("client") => client_command(args),
        Some("run") => run_command(args),
        Some("report") => report_command(args),
        Some("plot") => plot_command(args),
        Some(other) => Err(CliError::Usage(format!(
            "unknown command '{other}' (expected server, client, run, report or plot; see --help)"
        ))),
    }
}

fn print_help(text: &str) -> Result<i32, CliError> {
    print!("{text}");
    Ok(EXIT_OK)
}

/// Every command calls this once its flags are parsed, before it does
/// anything: an argument left over is refused. With `CONNTEST_CHECK_ARGS=1`
/// (checking the command lines in manifests) the process ends here, having
/// only parsed them.
fn finish(args: Arguments) -> Result<(), CliError> {
    let rest = args.finish();
    if let Some(arg) = rest.first() {
        return Err(CliError::Usage(format!(
            "unexpected argument '{}' (see --help)",
            arg.to_string_lossy()
        )));
    }
    if std::env::var_os("CONNTEST_CHECK_ARGS").is_some_and(|v| v == "1") {
        eprintln!("conntest: arguments accepted");
        std::process::exit(EXIT_OK);
    }
    Ok(())
}

fn server(mut args: Arguments) -> Result<i32, CliError> {
    let defaults = ServerOptions::default();
    let port: u16 = flag(&mut args, &["-p", "--port"], port)?.unwrap_or(8080);
    let bind = flag(&mut args, &["--bind"], bind_address)?;
    let mut options = ServerOptions {
        threads: flag(&mut args, &["--threads"], positive)?.unwrap_or(1) as usize,
        max_connections: flag(&mut args, &["--max-connections"], positive)?
            .unwrap_or(defaults.max_connections as u64) as usize,
        upstream_max_body: flag(&mut args, &["--upstream-max-body"], positive)?
            .unwrap_or(defaults.upstream_max_body),
        tcp_port: flag(&mut args, &["--tcp-port"], any_port)?,
        udp_port: flag(&mut args, &["--udp-port"], any_port)?,
        ..defaults
    };
    options.http.idle_timeout =
        flag(&mut args, &["--idle-timeout"], parse_duration)?.unwrap_or(options.http.idle_timeout);
    options.http.request_timeout = flag(&mut args, &["--request-timeout"], parse_duration)?
        .unwrap_or(options.http.request_timeout);
    options.http.max_body =
        flag(&mut args, &["--max-body"], positive)?.unwrap_or(options.http.max_body);
    options.store.max_groups = flag(&mut args, &["--max-groups"], positive)?
        .unwrap_or(options.store.max_groups as u64) as usize;
    options.store.max_runs =
        flag(&mut args, &["--max-runs"], positive)?.unwrap_or(options.store.max_runs);
    options.store.group_ttl =
        flag(&mut args, &["--group-ttl"], parse_duration)?.unwrap_or(options.store.group_ttl);
    let store_url = match flag(&mut args, &["--store"], text)? {
        Some(url) => Some(url),
        None => std::env::var("CONNTEST_STORE")
            .ok()
            .filter(|u| !u.is_empty()),
    };
    let redis = match store_url.as_deref() {
        None | Some("memory") => None,
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(RedisUrl::parse(url).map_err(CliError::Usage)?)
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "--store '{other}': expected memory, redis://HOST:PORT/DB or rediss://HOST:PORT/DB"
            )))
        }
    };
    options.policy.token = token(&mut args)?;
    // The start line says whether a token is required, never the token.
    let access = if options.policy.token.is_some() {
        "bearer token required"
    } else {
        "no token required"
    };
    let client_ca = path_flag(&mut args, "--tls-client-ca")?;
    options.tls = match (identity(&mut args, "--tls-cert", "--tls-key")?, &client_ca) {
        (Some(id), ca) => {
            Some(crate::tls::server_config(id, ca.as_deref()).map_err(CliError::Usage)?)
        }
        (None, Some(_)) => {
            return Err(CliError::Usage(
                "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is over https)".into(),
            ))
        }
        (None, None) => None,
    };
    let upstream_ca = path_flag(&mut args, "--upstream-cacert")?;
    let upstream_id = identity(&mut args, "--upstream-cert", "--upstream-key")?;
    if upstream_ca.is_some() || upstream_id.is_some() {
        let ca: Vec<&std::path::Path> = upstream_ca.iter().map(PathBuf::as_path).collect();
        options.upstream_tls = Some(
            crate::tls::client_config(&ca, false, upstream_id, crate::tls::Verifying::Upstream)
                .map_err(CliError::Usage)?,
        );
    }
    let (proxies, warnings) = Proxies::from_env().map_err(CliError::Usage)?;
    for w in warnings {
        crate::warn!("{w}");
    }
    if proxies.any() {
        crate::info!("upstream GETs go {}", proxies.describe());
    }
    options.upstream_proxies = proxies;
    options.policy.upstream_allow = flag(
        &mut args,
        &["--upstream-allow"],
        crate::server::api::parse_allow_list,
    )?;
    finish(args)?;
    if let Some(url) = redis {
        let store = RedisStore::start(url, options.store).map_err(CliError::Internal)?;
        options.backend = Some(Arc::new(store));
    }
    let max_connections = options.max_connections;
    let store = options
        .backend
        .as_ref()
        .map_or_else(|| "memory".to_owned(), |b| b.describe());
    let server = match bind {
        Some(ip) => {
            options.bind = vec![SocketAddr::new(ip, port)];
            Server::bind(options)
        }
        None => {
            // All interfaces: "::" with IPv4 mapped, or 0.0.0.0 where IPv6 is off.
            options.bind = vec![SocketAddr::from(([0u16; 8], port))];
            Server::bind(options.clone()).or_else(|_| {
                options.bind = vec![SocketAddr::from(([0u8; 4], port))];
                Server::bind(options)
            })
        }
    }
    .map_err(|e| {
        CliError::Usage(match crate::server::l4::L4BindError::of(&e) {
            Some(raw) => raw.to_string(),
            None => format!("cannot listen on port {port}: {e}"),
        })
    })?;
    // Counted once the port is ours, so a busy port is the one line said.
    if let Err(short) = crate::event::check_fd_budget(max_connections as u64) {
        crate::warn!(
            "the open-file limit is {}, below the {} that --max-connections {max_connections} needs; connections past it wait in the backlog (raise it with ulimit -n {})",
            short.limit,
            short.needed,
            short.needed
        );
    }
    // Which signal came, for the log; recorded before the stop flag is set.
    let signal = Arc::new(AtomicUsize::new(0));
    for number in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_usize(number, Arc::clone(&signal), number as usize);
    }
    // Installed before the address is announced: a signal sent as soon as
    // the server says it listens is handled, and the handlers' own sockets
    // (signal-hook's self-pipe) exist before anyone counts the server's.
    let stop = StopSignal::from_flag(crate::signals::install(), signal);
    for addr in server.local_addrs() {
        crate::info!("conntest server {VERSION} ({access}, store {store}) listening on {addr}");
    }
    let l4 = server.l4_ports();
    for (protocol, port) in [("tcp", l4.tcp_port), ("udp", l4.udp_port)] {
        if let Some(port) = port {
            crate::info!("taking raw {protocol} runs on port {port}");
        }
    }
    match server.run(stop) {
        Ok(()) => {
            crate::info!("conntest server stopped");
            Ok(EXIT_OK)
        }
        // A loop that could not start or poll: the machine refused it.
        Err(e) => Err(CliError::Internal(format!("server: {e}"))),
    }
}

/// `--bind ADDR`: an IP address, IPv6 with or without brackets (`[::1]`).
fn bind_address(s: &str) -> Result<IpAddr, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|v6| v6.strip_suffix(']'))
        .unwrap_or(s);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) if bare != s => Err(format!("'{s}': brackets are for IPv6 addresses")),
        Ok(ip) => Ok(ip),
        Err(_) => Err(format!(
            "'{s}' is not an IP address (e.g. 127.0.0.1 or [::1])"
        )),
    }
}

/// `--l4-addr`: an IP address and a port, IPv6 in brackets.
fn socket_address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not ADDR:PORT (e.g. 127.0.0.1:9000 or [::1]:9000)"))
}

/// The options `client` and `run` share.
fn client_options(args: &mut Arguments) -> Result<ClientOptions, CliError> {
    let data = args.opt_value_from_os_str(["-d", "--data"], |s| Ok::<_, String>(s.to_owned()))?;
    Ok(ClientOptions {
        group: String::new(),
        report: args
            .opt_value_from_os_str(["-f", "--file"], |s| Ok::<_, String>(PathBuf::from(s)))?,
        runs: runs_filter(args)?,
        data: data.as_deref().map(data_argument).transpose()?,
        l4_addr: flag(args, &["--l4-addr"], socket_address)?,
        timeout: Duration::from_nanos(
            flag(args, &["--timeout"], parse_duration)?.unwrap_or(30 * SECOND),
        ),
        quiet: args.contains(["-q", "--quiet"]),
        insecure: false,
        keep_going: args.contains("--keep-going"),
        embedded_server: false,
        shard: None,
    })
}

/// `--runs failed|all` (default all).
fn runs_filter(args: &mut Arguments) -> Result<RunsFilter, CliError> {
    Ok(flag(args, &["--runs"], RunsFilter::parse)?.unwrap_or_default())
}

/// `--cacert FILE` and `--insecure`, for an https server.
fn tls_options(args: &mut Arguments) -> Result<TlsOptions, CliError> {
    Ok(TlsOptions {
        cacert: path_flag(args, "--cacert")?,
        insecure: args.contains("--insecure"),
        identity: identity(args, "--cert", "--key")?,
    })
}

/// A flag whose value is a path.
fn path_flag(args: &mut Arguments, name: &'static str) -> Result<Option<PathBuf>, CliError> {
    Ok(args.opt_value_from_os_str(name, |s| Ok::<_, String>(PathBuf::from(s)))?)
}

/// A certificate and its key, given by two flags that go together.
fn identity(
    args: &mut Arguments,
    cert: &'static str,
    key: &'static str,
) -> Result<Option<crate::tls::Identity>, CliError> {
    match (path_flag(args, cert)?, path_flag(args, key)?) {
        (Some(c), Some(k)) => crate::tls::Identity::load(&c, &k, (cert, key))
            .map(Some)
            .map_err(CliError::Usage),
        (None, None) => Ok(None),
        _ => Err(CliError::Usage(format!("{cert} and {key} go together"))),
    }
}

/// The server at `-r`, with the token, trust and `-H` headers given.
fn remote_endpoint(
    remote: &str,
    token: Option<String>,
    tls: &TlsOptions,
    headers: Vec<(String, String)>,
    overrides: &Overrides,
) -> Result<Endpoint, CliError> {
    let mut endpoint = Endpoint::resolve(remote, token, tls, overrides).map_err(CliError::Usage)?;
    endpoint.headers = headers;
    Ok(endpoint)
}

/// `--resolve HOST:PORT:ADDR` and `--connect-to HOST:PORT:HOST2:PORT2`,
/// each repeatable, as curl reads them.
fn route_options(args: &mut Arguments) -> Result<Overrides, CliError> {
    let mut overrides = Overrides::default();
    while let Some(r) = flag(args, &["--resolve"], resolve_entry)? {
        overrides.resolve.push(r);
    }
    while let Some(c) = flag(args, &["--connect-to"], connect_to_entry)? {
        overrides.connect_to.push(c);
    }
    let proxy = flag(args, &["--proxy"], text)?;
    let noproxy = flag(args, &["--noproxy"], text)?;
    let env = |name: &str| std::env::var(name).ok();
    let (proxies, warnings) =
        Proxies::configure(env, proxy.as_deref(), noproxy.as_deref()).map_err(CliError::Usage)?;
    for w in warnings {
        crate::warn!("{w}");
    }
    overrides.proxies = proxies;
    Ok(overrides)
}

/// `HOST:PORT:ADDR` (ADDR an IP address, IPv6 in brackets or not).
fn resolve_entry(s: &str) -> Result<(String, u16, IpAddr), String> {
    let bad = || format!("'{s}' is not HOST:PORT:ADDR");
    let mut parts = s.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let addr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map_err(|_| format!("'{addr}' in '{s}' is not an IP address"))?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, addr))
}

/// `HOST:PORT:HOST2:PORT2`; an empty part matches any (or keeps it).
fn connect_to_entry(s: &str) -> Result<(String, u16, String, u16), String> {
    let bad = || format!("'{s}' is not HOST:PORT:HOST2:PORT2");
    let port = |p: &str| {
        if p.is_empty() {
            Ok(0)
        } else {
            p.parse::<u16>().map_err(|_| bad())
        }
    };
    // HOST2 may be a bracketed IPv6 address, colons and all.
    let (left, right) = match s.match_indices(':').nth(1) {
        Some((i, _)) => (&s[..i], &s[i + 1..]),
        None => return Err(bad()),
    };
    let (host, p) = left.split_once(':').ok_or_else(bad)?;
    let (host2, p2) = right.rsplit_once(':').ok_or_else(bad)?;
    Ok((host.to_owned(), port(p)?, host2.to_owned(), port(p2)?))
}

/// `-H 'Name: value'`, repeatable: headers for every request to the server.
fn header_options(args: &mut Arguments) -> Result<Vec<(String, String)>, CliError> {
    let mut headers = Vec::new();
    while let Some(h) = flag(args, &["-H", "--header"], header)? {
        headers.push(h);
    }
    Ok(headers)
}

/// One `-H` value: a header name (an HTTP token), a colon, a value on one
/// line. The framing headers are conntest's own.
fn header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not 'Name: value'"))?;
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("'{name}' is not a header name"));
    }
    if ["content-length", "transfer-encoding"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
    {
        return Err(format!(
            "'{name}' frames the request and conntest sets it itself (Content-Length, Transfer-Encoding cannot be given)"
        ));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("the value of '{name}' holds a line break"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `-r URL` and `-g ID`, both required.
fn remote_and_group(args: &mut Arguments) -> Result<(String, String), CliError> {
    let remote: String = flag(args, &["-r", "--remote"], text)?.ok_or_else(|| {
        CliError::Usage("-r URL is required (the server, e.g. http://host:8080)".into())
    })?;
    let group = flag(args, &["-g", "--group"], group_id)?
        .ok_or_else(|| CliError::Usage("-g ID is required (the run_group_id)".into()))?;
    Ok((remote, group))
}

fn client_command(mut args: Arguments) -> Result<i32, CliError> {
    let (remote, group) = remote_and_group(&mut args)?;
    let mut options = client_options(&mut args)?;
    let token = token(&mut args)?;
    let tls = tls_options(&mut args)?;
    let headers = header_options(&mut args)?;
    let overrides = route_options(&mut args)?;
    options.shard = shard_options(&mut args)?;
    finish(args)?;
    options.group = group;
    let endpoint = remote_endpoint(&remote, token, &tls, headers, &overrides)?;
    options.insecure = insecure(&endpoint, &tls);
    run_test(&endpoint, &options)
}

/// `--shard I/N` (or `--shard I` and `--shards N`), with
/// `JOB_COMPLETION_INDEX` and `CONNTEST_SHARDS` as defaults.
fn shard_options(args: &mut Arguments) -> Result<Option<Shard>, CliError> {
    let shard = flag(args, &["--shard"], text)?;
    let shards = flag(args, &["--shards"], text)?;
    let env = |name: &str| match std::env::var_os(name) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| CliError::Usage(format!("{name} is not UTF-8"))),
    };
    let (env_index, env_shards) = (env("JOB_COMPLETION_INDEX")?, env("CONNTEST_SHARDS")?);
    Shard::from_args(ShardArgs {
        shard: shard.as_deref(),
        shards: shards.as_deref(),
        env_index: env_index.as_deref(),
        env_shards: env_shards.as_deref(),
    })
    .map_err(CliError::Usage)
}

fn report_command(mut args: Arguments) -> Result<i32, CliError> {
    let (remote, group) = remote_and_group(&mut args)?;
    let report =
        args.opt_value_from_os_str(["-f", "--file"], |s| Ok::<_, String>(PathBuf::from(s)))?;
    let runs = runs_filter(&mut args)?;
    let timeout = flag(&mut args, &["--timeout"], parse_duration)?.unwrap_or(30 * SECOND);
    let quiet = args.contains(["-q", "--quiet"]);
    let token = token(&mut args)?;
    let tls = tls_options(&mut args)?;
    let headers = header_options(&mut args)?;
    let overrides = route_options(&mut args)?;
    finish(args)?;
    let endpoint = remote_endpoint(&remote, token, &tls, headers, &overrides)?;
    let options = GatherOptions {
        group,
        report,
        runs,
        timeout: Duration::from_nanos(timeout),
        quiet,
        insecure: insecure(&endpoint, &tls),
    };
    let stop = crate::signals::install();
    verdict_code(client::gather::report(&endpoint, &options, &stop)?)
}

fn plot_command(mut args: Arguments) -> Result<i32, CliError> {
    let path = |s: &OsStr| Ok::<_, String>(PathBuf::from(s));
    let output = args.opt_value_from_os_str(["-o", "--output"], path)?;
    let report = args.opt_free_from_os_str(path)?;
    finish(args)?;
    let (Some(report), Some(output)) = (report, output) else {
        return Err(CliError::Usage(
            "plot needs a report and -o FILE.html or -o FILE.svg (see --help)".into(),
        ));
    };
    crate::plot::write(&report, &output).map_err(|e| match e {
        crate::plot::PlotError::Usage(m) => CliError::Usage(m),
        crate::plot::PlotError::Internal(m) => CliError::Internal(m),
    })?;
    Ok(EXIT_OK)
}

fn run_command(mut args: Arguments) -> Result<i32, CliError> {
    let remote: Option<String> = flag(&mut args, &["-r", "--remote"], text)?;
    let mut config = serde_json::Map::new();
    config.insert(
        "run_count".into(),
        flag(&mut args, &["--run-count"], whole)?
            .unwrap_or(1000)
            .into(),
    );
    for (name, field) in [
        ("--concurrency", "concurrency"),
        ("--client-delay-ns", "client_delay_ns"),
        ("--server-delay-ns", "server_delay_ns"),
        ("--upstream-timeout-ns", "upstream_timeout_ns"),
    ] {
        if let Some(v) = flag(&mut args, &[name], whole)? {
            config.insert(field.into(), v.into());
        }
    }
    if let Some(v) = flag(&mut args, &["--max-data-bytes"], whole)? {
        config.insert("max_data_bytes".into(), v.into());
    }
    if args.contains("--tcp-reuse") {
        config.insert("tcp_reuse".into(), true.into());
    }
    for (name, field) in [
        ("--upstream-endpoint", "upstream_endpoint"),
        ("--description", "description"),
        ("--protocol", "protocol"),
    ] {
        if let Some(v) = flag(&mut args, &[name], text)? {
            config.insert(field.into(), v.into());
        }
    }
    let mut options = client_options(&mut args)?;
    let token = token(&mut args)?;
    let tls = tls_options(&mut args)?;
    let headers = header_options(&mut args)?;
    let overrides = route_options(&mut args)?;
    finish(args)?;
    let config = serde_json::Value::Object(config).to_string().into_bytes();

    let (endpoint, local) = match remote {
        Some(remote) => {
            let endpoint = remote_endpoint(&remote, token, &tls, headers, &overrides)?;
            options.insecure = insecure(&endpoint, &tls);
            (endpoint, None)
        }
        None => {
            // Raw TCP and UDP runs on ports of their own, any free ones.
            let local = ServerOptions {
                tcp_port: Some(0),
                udp_port: Some(0),
                upstream_proxies: overrides.proxies.clone(),
                ..ServerOptions::default()
            };
            let server = Server::bind(local)
                .map_err(|e| CliError::Usage(format!("cannot start the local server: {e}")))?;
            let addr = server.local_addrs()[0];
            let stop = StopSignal::default();
            let loop_stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name("server".into())
                .spawn(move || server.run(loop_stop))
                .map_err(CliError::internal("starting the local server's thread"))?;
            let mut endpoint = Endpoint::local(addr);
            endpoint.headers = headers;
            (endpoint, Some((stop, handle)))
        }
    };
    options.embedded_server = local.is_some();
    let result = client::create_group(&endpoint, &config, options.timeout)
        .map_err(CliError::Usage)
        .and_then(|id| {
            options.group = id;
            run_test(&endpoint, &options)
        });
    if let Some((stop, handle)) = local {
        stop.trigger();
        let _ = handle.join();
    }
    result
}

fn run_test(endpoint: &Endpoint, options: &ClientOptions) -> Result<i32, CliError> {
    let stop = crate::signals::install();
    verdict_code(client::run(endpoint, options, &stop)?)
}

fn verdict_code(verdict: Verdict) -> Result<i32, CliError> {
    Ok(match verdict {
        Verdict::Passed => EXIT_OK,
        Verdict::Failed => EXIT_FAILED,
        Verdict::Interrupted => EXIT_INTERRUPTED,
    })
}

/// `--insecure` means something only for an https server.
fn insecure(endpoint: &Endpoint, tls: &TlsOptions) -> bool {
    tls.insecure && endpoint.tls.is_some()
}

/// `--token`, else `CONNTEST_TOKEN`; an empty one is refused, as it would
/// silently turn authentication off.
fn token(args: &mut Arguments) -> Result<Option<String>, CliError> {
    let empty = |what: &str, fix: &str| {
        Err(CliError::Usage(format!(
            "{what} is empty (give a token, or {fix} to run without one)"
        )))
    };
    match flag(args, &["--token"], text)? {
        Some(t) if t.is_empty() => empty("--token", "leave --token out"),
        Some(t) => Ok(Some(t)),
        None => match std::env::var_os("CONNTEST_TOKEN") {
            None => Ok(None),
            Some(t) if t.is_empty() => empty("CONNTEST_TOKEN", "unset it"),
            Some(t) => t
                .into_string()
                .map(Some)
                .map_err(|_| CliError::Usage("CONNTEST_TOKEN is not UTF-8".into())),
        },
    }
}

/// The value of an option (`keys`: the option's names, the short one
/// first), parsed by `parse`; every error names the option, as written in
/// the help (the short name when it has one).
fn flag<T>(
    args: &mut Arguments,
    keys: &[&'static str],
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    let (name, keys) = match *keys {
        [short, long] => (short, Keys::from([short, long])),
        [name, ..] => (name, Keys::from(name)),
        [] => return Ok(None),
    };
    let named = |message: String| CliError::Usage(format!("{name}: {message}"));
    match args.opt_value_from_str::<_, String>(keys) {
        Ok(None) => Ok(None),
        Ok(Some(value)) => parse(&value).map(Some).map_err(named),
        Err(pico_args::Error::OptionWithoutAValue(_)) => Err(named("needs a value".into())),
        Err(pico_args::Error::NonUtf8Argument) => Err(named("the value is not UTF-8".into())),
        Err(e) => Err(named(e.to_string())),
    }
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

fn whole(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

fn positive(s: &str) -> Result<u64, String> {
    match whole(s) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// A port to listen on, 0 for any free one.
fn any_port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a port (0 to 65535)"))
}

fn port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("'{s}' is not a port (0 to 65535; 0 picks a free one)"))
}

/// `-g`: a run_group_id is a UUID; anything else (spaces, CR/LF) would go
/// into the request line.
fn group_id(s: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(s)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            format!(
                "'{}' is not a UUID (the run_group_id that create answered)",
                s.escape_debug()
            )
        })
}

/// `-d DATA`: the body itself; `-d @FILE` the file's bytes, exactly;
/// `-d @-` standard input's (as curl does).
fn data_argument(value: &OsStr) -> Result<Vec<u8>, CliError> {
    let bytes = os_bytes(value);
    let Some(source) = bytes.strip_prefix(b"@") else {
        return Ok(bytes);
    };
    let unreadable =
        |what: &str, e: std::io::Error| CliError::Usage(format!("-d: cannot read {what}: {e}"));
    if source == b"-" {
        let mut body = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut body)
            .map_err(|e| unreadable("standard input", e))?;
        return Ok(body);
    }
    let path = PathBuf::from(os_from_bytes(source));
    std::fs::read(&path).map_err(|e| unreadable(&format!("'{}'", path.display()), e))
}

/// `500us`, `250ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Nanos, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 10s)"))?;
    let scale = match unit {
        "ns" => 1,
        "us" => MICROSECOND,
        "ms" => MILLISECOND,
        "" | "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3600 * SECOND,
        "d" => 24 * 3600 * SECOND,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use ns, us, ms, s, m, h or d)"
            ))
        }
    };
    let ns = value * scale as f64;
    if !(1.0..1e18).contains(&ns) {
        return Err(format!("'{s}' is not a positive duration"));
    }
    Ok(ns as Nanos)
}

#[cfg(unix)]
fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    s.as_bytes().to_vec()
}

#[cfg(not(unix))]
fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    s.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn os_from_bytes(b: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b).to_owned()
}

#[cfg(not(unix))]
fn os_from_bytes(b: &[u8]) -> OsString {
    String::from_utf8_lossy(b).into_owned().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_and_internal_errors_have_distinct_exit_codes() {
        let setup = CliError::from(client::RunError::Setup("no test group 'x'".into()));
        assert_eq!(setup.exit_code(), EXIT_USAGE);
        let internal = CliError::from(client::RunError::Internal("event loop: EMFILE".into()));
        assert_eq!(internal.exit_code(), EXIT_INTERNAL);
        let spawn = CliError::internal("starting a thread")(std::io::Error::other("EAGAIN"));
        assert!(matches!(&spawn, CliError::Internal(m) if m == "starting a thread: EAGAIN"));
        let flag = CliError::from(pico_args::Error::MissingOption(pico_args::Keys::from(
            "--x",
        )));
        assert_eq!(flag.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30 * SECOND));
        assert_eq!(parse_duration("30"), Ok(30 * SECOND));
        assert_eq!(parse_duration("250ms"), Ok(250 * MILLISECOND));
        assert_eq!(parse_duration("7d"), Ok(7 * 24 * 3600 * SECOND));
        assert_eq!(parse_duration("1.5s"), Ok(1_500 * MILLISECOND));
        assert_eq!(parse_duration("500us"), Ok(500 * MICROSECOND));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
