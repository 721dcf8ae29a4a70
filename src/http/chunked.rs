//! Decoder for `Transfer-Encoding: chunked` bodies, fed any split of bytes.

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    Malformed(&'static str),
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// Skipping a chunk extension up to the line end.
    Extension,
    SizeLf,
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (an empty one ends the body).
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Chunked body decoder: call [`ChunkedDecoder::decode`] with whatever bytes
/// arrived; it appends the payload to `out` (or only counts it when `out` is
/// `None`) and says how many input bytes it consumed.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    total: u64,
    max: u64,
}

const MAX_LINE: u64 = 4096;

impl ChunkedDecoder {
    /// A decoder that refuses bodies over `max` payload bytes.
    pub fn new(max: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            total: 0,
            max,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes decoded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Decodes from `input`, returning the bytes consumed. Stops at the end of
    /// the body, leaving whatever follows (a pipelined request) unconsumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkedError::Malformed("chunk size too long"));
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size * 16 + v;
                        self.state = State::Size { digits: digits + 1 };
                    }
                    _ if digits == 0 => return Err(ChunkedError::Malformed("missing chunk size")),
                    b';' | b' ' | b'\t' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkedError::Malformed("invalid chunk size")),
                },
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkedError::Malformed("bare LF in chunk header"));
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected LF after chunk size"));
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.total += self.size;
                        if self.total > self.max {
                            return Err(ChunkedError::TooLarge);
                        }
                        self.state = State::Data {
                            remaining: self.size,
                        };
                        self.size = 0;
                    }
                }
                State::Data { remaining } => {
                    let take = remaining.min((input.len() - i) as u64) as usize;
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&input[i..i + take]);
                    }
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    i += take;
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkedError::Malformed("expected CRLF after chunk data"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected CRLF after chunk data"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart | State::TrailerLine => {
                    let empty = self.state == State::TrailerStart;
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty };
                    } else {
                        // Trailer fields are read past, bounded like a header line.
                        self.size += 1;
                        if self.size > MAX_LINE {
                            return Err(ChunkedError::Malformed("trailer too long"));
                        }
                        self.state = State::TrailerLine;
                    }
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected LF in trailer"));
                    }
                    self.state = if empty {
                        State::Done
                    } else {
                        State::TrailerStart
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut dec = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut used = 0;
        for c in chunks {
            used += dec.decode(c, Some(&mut out))?;
        }
        assert!(dec.is_done());
        Ok((out, used))
    }

    const BODY: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";

    #[test]
    fn decodes_at_every_split_point() {
        for split in 0..=BODY.len() {
            let (out, used) = decode_all(&[&BODY[..split], &BODY[split..]]).unwrap();
            assert_eq!(out, b"hello, world");
            assert_eq!(used, BODY.len() - 4, "stops before the next request");
        }
    }

    #[test]
    fn decodes_byte_by_byte() {
        let chunks: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(decode_all(&chunks).unwrap().0, b"hello, world");
    }

    #[test]
    fn refuses_malformed_and_oversized() {
        let mut dec = ChunkedDecoder::new(1 << 20);
        assert!(dec.decode(b"zz\r\n", None).is_err());
        let mut dec = ChunkedDecoder::new(1 << 20);
        assert!(dec.decode(b"3\r\nabcX", None).is_err());
        let mut dec = ChunkedDecoder::new(4);
        assert_eq!(
            dec.decode(b"5\r\nhello\r\n", None),
            Err(ChunkedError::TooLarge)
        );
        let mut dec = ChunkedDecoder::new(u64::MAX);
        assert!(dec.decode(b"ffffffffffffffffff\r\n", None).is_err());
    }
}
