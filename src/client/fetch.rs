//! One-off requests to the server (create, fetch a group) outside the
//! measured loop: a blocking socket driving the same [`ClientConn`] machine
//! the load driver uses.

use crate::http::client::{ClientConn, ClientLimits, Response};
use crate::http::url::{Scheme, Url};
use crate::http::Method;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A conntest server: its URL, its addresses and the token to present.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Url,
    pub addrs: Vec<SocketAddr>,
    pub token: Option<String>,
}

impl Endpoint {
    /// Parses `-r` and resolves its host.
    pub fn resolve(remote: &str, token: Option<String>) -> Result<Endpoint, String> {
        let url = Url::parse(remote).map_err(|e| format!("-r: {e}"))?;
        if url.scheme == Scheme::Https {
            return Err(format!(
                "-r {remote}: https is not supported by this build yet"
            ));
        }
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve '{}': {e}", url.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("'{}' resolved to no address", url.host));
        }
        Ok(Endpoint { url, addrs, token })
    }

    /// An endpoint for a server at a known address (the embedded one).
    pub fn local(addr: SocketAddr) -> Endpoint {
        Endpoint {
            url: Url {
                scheme: Scheme::Http,
                host: addr.ip().to_string(),
                port: addr.port(),
                path: "/".into(),
            },
            addrs: vec![addr],
            token: None,
        }
    }

    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// Sends one request to `route` (joined to the URL's path prefix) and
    /// reads the whole answer.
    pub fn request(
        &self,
        method: Method,
        route: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, String> {
        let mut last_error = String::from("no address");
        for addr in &self.addrs {
            match self.request_to(*addr, method, route, body, timeout) {
                Ok(r) => return Ok(r),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn request_to(
        &self,
        addr: SocketAddr,
        method: Method,
        route: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, String> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect to {} ({addr}): {e}", self.url))?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        let mut http = ClientConn::new(ClientLimits::default());
        let bearer = self.bearer();
        let mut headers = vec![("User-Agent", "conntest"), ("Connection", "close")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b));
        }
        http.send(
            method,
            &self.url.host_header(),
            &self.url.join(route),
            &headers,
            body,
        );
        let io_error =
            |e: std::io::Error| format!("{} {}: {e}", method.as_str(), self.url.join(route));
        stream.write_all(http.poll_output()).map_err(io_error)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).map_err(io_error)?;
            if n == 0 {
                return http
                    .receive_eof()
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "the server closed the connection without answering".into());
            }
            http.receive(&buf[..n]);
            if let Some(r) = http.next_response().map_err(|e| e.to_string())? {
                return Ok(r);
            }
        }
    }
}

/// The `error` of a JSON error answer, or the body as text.
pub fn error_message(response: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_owned())
}
