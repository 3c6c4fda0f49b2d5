//! The part of SPDY/3.1 that `kubectl port-forward` needs from a server: reading and writing
//! frames (data, SYN_STREAM/SYN_REPLY, RST_STREAM, PING, GOAWAY; others are read and
//! skipped), with header blocks compressed by zlib with the protocol's dictionary, one
//! compression context per direction for the whole connection. Flow control is not
//! enforced: kubectl's SPDY library neither sends nor honours window updates.
//!
//! Written here because no maintained Rust crate speaks SPDY (it was superseded by HTTP/2
//! everywhere but Kubernetes' streaming, which still tunnels it, even over WebSockets).

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// The last frame its sender sends on a stream.
const FLAG_FIN: u8 = 0x01;
/// The largest frame read (SPDY allows 16 MiB; kubectl sends 32 KiB data frames).
const MAX_FRAME: usize = 1 << 20;
/// The most header bytes a frame may inflate to.
const MAX_HEADERS: usize = 1 << 20;

/// RST_STREAM's status for a stream that breaks the protocol.
pub const PROTOCOL_ERROR: u32 = 1;

/// The SPDY/3 header compression dictionary (the spec's §2.6.10.1): these names, each
/// with a 32-bit big-endian length before it, then [`DICTIONARY_TAIL`].
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
);

fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    out
}

/// Header names and values (lower-case names, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// A frame read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes on a stream.
    Data {
        /// The stream.
        stream: u32,
        /// Its sender's last frame on it.
        fin: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A new stream from the client.
    SynStream {
        /// The stream.
        stream: u32,
        /// The client sends nothing more on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// The client gave up on a stream.
    RstStream {
        /// The stream.
        stream: u32,
    },
    /// A ping to answer with the same id.
    Ping(u32),
    /// The client is going away.
    GoAway,
    /// A frame the server has nothing to do with (SETTINGS, WINDOW_UPDATE, HEADERS, …).
    Skipped,
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Reads frames from a connection.
pub struct Reader<R> {
    io: R,
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads from `io`.
    pub fn new(io: R) -> Reader<R> {
        Reader {
            io,
            inflate: Decompress::new(true),
            dictionary: dictionary(),
        }
    }

    /// The next frame, or `None` at the end of the connection.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if length > MAX_FRAME {
            return Err(invalid(format!("a frame of {length} bytes")));
        }
        let mut body = vec![0u8; length];
        self.io.read_exact(&mut body).await?;
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version}, not 3")));
        }
        let word = |at: usize| {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| invalid("a control frame too short for its type"))
        };
        let stream_at = |at: usize| word(at).map(|w| w & 0x7fff_ffff);
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                let stream = stream_at(0)?;
                let block = body
                    .get(10..)
                    .ok_or_else(|| invalid("a short SYN_STREAM"))?;
                let headers = self.headers(block)?;
                Frame::SynStream {
                    stream,
                    fin: flags & FLAG_FIN != 0,
                    headers,
                }
            }
            RST_STREAM => Frame::RstStream {
                stream: stream_at(0)?,
            },
            PING => Frame::Ping(word(0)?),
            GOAWAY => Frame::GoAway,
            // Header blocks of other frames still advance the shared context.
            SYN_REPLY | 8 => {
                if let Some(block) = body.get(4..) {
                    self.headers(block)?;
                }
                Frame::Skipped
            }
            _ => Frame::Skipped,
        }))
    }

    /// Inflates and parses a header block.
    fn headers(&mut self, block: &[u8]) -> io::Result<Headers> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4);
        let mut consumed = 0usize;
        while consumed < block.len() {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADERS {
                    return Err(invalid("a header block too large"));
                }
                out.reserve(out.len().max(256));
            }
            let before = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => break,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| invalid(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(invalid(format!("header block: {e}"))),
            }
        }
        parse_headers(&out)
    }
}

fn parse_headers(block: &[u8]) -> io::Result<Headers> {
    let mut at = 0usize;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let part = block
            .get(at..at + n)
            .ok_or_else(|| invalid("a truncated header block"))?;
        at += n;
        Ok(part)
    };
    let number = |bytes: &[u8]| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let count = number(take(4)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let length = number(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(length)?).into_owned();
        let length = number(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(length)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Writes frames; holds the header compression context, so header frames must go out in the
/// order they were made.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    /// A writer with a fresh compression context.
    pub fn new() -> Writer {
        let mut deflate = Compress::new(Compression::default(), true);
        // Without the dictionary the stream still decodes; with it, it matches the spec.
        if let Err(error) = deflate.set_dictionary(&dictionary()) {
            tracing::debug!(%error, "SPDY header dictionary");
        }
        Writer { deflate }
    }

    /// A data frame.
    pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + data.len());
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.push(if fin { FLAG_FIN } else { 0 });
        out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(data);
        out
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    /// The answer to a SYN_STREAM.
    pub fn syn_reply(&mut self, stream: u32, headers: &Headers) -> io::Result<Vec<u8>> {
        let mut block = Vec::new();
        block.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for text in [name, value] {
                block.extend_from_slice(&(text.len() as u32).to_be_bytes());
                block.extend_from_slice(text.as_bytes());
            }
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            if compressed.len() == compressed.capacity() {
                compressed.reserve(256);
            }
            self.deflate
                .compress_vec(&block[consumed..], &mut compressed, FlushCompress::Sync)
                .map_err(|e| invalid(format!("compressing headers: {e}")))?;
            let done = (self.deflate.total_in() - start) as usize == block.len();
            if done && compressed.len() < compressed.capacity() {
                break;
            }
        }
        let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        body.extend_from_slice(&compressed);
        Ok(Self::control(SYN_REPLY, 0, &body))
    }

    /// A stream reset.
    pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
        let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        body.extend_from_slice(&status.to_be_bytes());
        Self::control(RST_STREAM, 0, &body)
    }

    /// The answer to a ping.
    pub fn ping(id: u32) -> Vec<u8> {
        Self::control(PING, 0, &id.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        // Its Adler-32 is the dictionary ID every SPDY/3 header stream names.
        let mut probe = Compress::new(Compression::default(), true);
        let id = probe.set_dictionary(&dictionary()).unwrap_or_default();
        assert_eq!((dictionary().len(), id), (1423, 0xe3c6_a7c2));
    }

    #[tokio::test]
    async fn frames_written_read_back() -> io::Result<()> {
        let mut writer = Writer::new();
        let headers = vec![
            ("streamtype".to_string(), "data".to_string()),
            ("port".to_string(), "8080".to_string()),
        ];
        // A reply is a SYN_STREAM's layout without the six bytes of associated stream and
        // priority, so one is rebuilt as a client would send it.
        let mut syn = |stream| -> io::Result<Vec<u8>> {
            let mut frame = writer.syn_reply(stream, &headers)?;
            frame[3] = SYN_STREAM as u8;
            frame.splice(12..12, [0u8; 6]);
            let length = (frame.len() - 8) as u32;
            frame[5..8].copy_from_slice(&length.to_be_bytes()[1..]);
            Ok(frame)
        };
        let mut wire = syn(5)?;
        wire.extend(syn(7)?);
        wire.extend(Writer::data(5, true, b"hello"));
        wire.extend(Writer::ping(9));
        wire.extend(Writer::rst_stream(7, PROTOCOL_ERROR));
        let mut reader = Reader::new(wire.as_slice());
        assert_eq!(
            reader.next().await?,
            Some(Frame::SynStream {
                stream: 5,
                fin: false,
                headers: headers.clone()
            })
        );
        assert_eq!(
            reader.next().await?,
            Some(Frame::SynStream {
                stream: 7,
                fin: false,
                headers
            })
        );
        assert_eq!(
            reader.next().await?,
            Some(Frame::Data {
                stream: 5,
                fin: true,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(reader.next().await?, Some(Frame::Ping(9)));
        assert_eq!(reader.next().await?, Some(Frame::RstStream { stream: 7 }));
        assert_eq!(reader.next().await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        // A frame longer than any kubectl sends.
        let mut huge = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff];
        huge.extend([0u8; 16]);
        let mut reader = Reader::new(huge.as_slice());
        assert!(reader.next().await.is_err());
        let wrong_version = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        let mut reader = Reader::new(&wrong_version[..]);
        assert!(reader.next().await.is_err());
    }
}
