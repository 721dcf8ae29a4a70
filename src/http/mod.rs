//! HTTP/1.1 as sans-IO state machines: bytes in, events out, no sockets.
//!
//! [`server::ServerConn`] is one server-side connection (requests in,
//! responses out, pipelining in order). [`client::ClientConn`] is one
//! client-side connection, used by both `conntest client` and the server's
//! upstream requests. The event loops move bytes between sockets and these.

pub mod chunked;
pub mod client;
pub mod date;
pub mod proxy;
pub mod server;
pub mod url;

/// A machine's bytes waiting for the socket (both connection machines).
pub trait Outgoing {
    fn pending(&mut self) -> &[u8];
    fn consumed(&mut self, n: usize);
}

impl Outgoing for server::ServerConn {
    fn pending(&mut self) -> &[u8] {
        self.poll_output()
    }
    fn consumed(&mut self, n: usize) {
        self.advance_output(n)
    }
}

impl Outgoing for client::ClientConn {
    fn pending(&mut self) -> &[u8] {
        self.poll_output()
    }
    fn consumed(&mut self, n: usize) {
        self.advance_output(n)
    }
}

/// The value of header `name` in a request or response head (its first
/// line is skipped), a repeated field's values joined with `, ` as RFC 9110
/// (5.3) reads them; None when it is absent. Bytes that are not UTF-8 are
/// shown lossily.
pub fn header_value(head: &[u8], name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let text = String::from_utf8_lossy(line[colon + 1..].trim_ascii());
        match &mut value {
            None => value = Some(text.into_owned()),
            Some(v) => {
                v.push_str(", ");
                v.push_str(&text);
            }
        }
    }
    value
}

/// Request methods the tool speaks; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Status",
    }
}

/// `{"error": message}` as bytes, the body of every error answer.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    body.push(b'\n');
    body
}

/// Appends a decimal number without going through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What the framing headers of a message say about its body.
#[derive(Debug, Default)]
struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

/// Why a message's framing headers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    InvalidContentLength,
    ConflictingContentLength,
    /// A transfer coding other than `chunked` last.
    UnsupportedTransferEncoding,
    /// Both headers: two parties could disagree about where the body ends.
    BothTransferEncodingAndContentLength,
}

impl FramingError {
    /// The status a server answers a request so framed with.
    pub fn status(self) -> u16 {
        match self {
            FramingError::UnsupportedTransferEncoding => 501,
            _ => 400,
        }
    }
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramingError::InvalidContentLength => "invalid Content-Length",
            FramingError::ConflictingContentLength => "conflicting Content-Length headers",
            FramingError::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
            FramingError::BothTransferEncodingAndContentLength => {
                "both Transfer-Encoding and Content-Length"
            }
        })
    }
}

/// Reads the framing headers, refusing the ambiguous combinations that let
/// two parties disagree about where a message ends (request smuggling).
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, FramingError> {
    let mut f = Framing::default();
    let mut transfer_encoding = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let s = std::str::from_utf8(h.value).map_err(|_| FramingError::InvalidContentLength)?;
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::InvalidContentLength);
            }
            let n: u64 = s.parse().map_err(|_| FramingError::InvalidContentLength)?;
            if f.content_length.is_some_and(|m| m != n) {
                return Err(FramingError::ConflictingContentLength);
            }
            f.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            f.chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            f.connection_close |= has_token(h.value, "close");
            f.connection_keep_alive |= has_token(h.value, "keep-alive");
        }
    }
    if transfer_encoding && f.content_length.is_some() {
        return Err(FramingError::BothTransferEncodingAndContentLength);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::header_value;

    #[test]
    fn header_values_are_found_in_any_case_and_repeats_joined() {
        let head = b"POST /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nVia:1.1 p\r\n\
                     x-forwarded-for:  127.0.0.1 \r\nX-Bin: \xff\r\n\r\n";
        assert_eq!(
            header_value(head, "x-forwarded-for").as_deref(),
            Some("10.0.0.1, 127.0.0.1")
        );
        assert_eq!(header_value(head, "via").as_deref(), Some("1.1 p"));
        assert_eq!(header_value(head, "x-bin").as_deref(), Some("\u{fffd}"));
        // The first line is not a header, whatever it holds.
        assert_eq!(
            header_value(b"GET http://h:80/ HTTP/1.1\r\n\r\n", "get http"),
            None
        );
        assert_eq!(header_value(head, "absent"), None);
        // Bare line feeds, as the parser accepts them.
        assert_eq!(
            header_value(b"GET / HTTP/1.1\nVia: v\n\n", "via").as_deref(),
            Some("v")
        );
    }
}
