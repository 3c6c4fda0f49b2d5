//! `/portForward/{namespace}/{pod}`: `kubectl port-forward`. kubectl speaks SPDY/3.1 — inside
//! a WebSocket (`SPDY/3.1+portforward.k8s.io`) or, as its fallback, plainly after an HTTP
//! upgrade — and opens two streams per connection it forwards, sharing a `requestid`: `error`,
//! where a failure is written, and `data`, the connection's bytes. Each connection goes to
//! localhost:`port` inside the pod's network namespace, as kube's kubelet does. Framing is
//! [`super::spdy`]'s; finding the pod's namespace is the caller's.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::spdy::{self, Frame, Headers, Writer};

/// The WebSocket subprotocol of SPDY tunnelled for port forwarding.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forwarding protocol over plain SPDY.
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the client carries SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In WebSocket binary messages.
    WebSocket,
    /// On the upgraded connection itself.
    Spdy,
}

/// The protocol switch for an upgrade request with `headers`, or why not.
pub fn accept(headers: &HeaderMap) -> Result<(http::response::Builder, Transport), String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let offered = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .collect()
    };
    let upgrade = text(header::UPGRADE).unwrap_or("");
    let response = http::Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = text(header::SEC_WEBSOCKET_KEY)
            .filter(|k| !k.is_empty())
            .ok_or("Sec-WebSocket-Key: missing")?;
        let protocols = offered(header::SEC_WEBSOCKET_PROTOCOL.as_str());
        if !protocols.iter().any(|p| p == WEBSOCKET_PROTOCOL) {
            return Err(format!(
                "none of the requested protocols {protocols:?} is supported; port forwarding speaks {WEBSOCKET_PROTOCOL}"
            ));
        }
        let response = response
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            )
            .header(header::SEC_WEBSOCKET_PROTOCOL, WEBSOCKET_PROTOCOL);
        return Ok((response, Transport::WebSocket));
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let protocols = offered(STREAM_PROTOCOL_HEADER);
        if !protocols.iter().any(|p| p == SPDY_PROTOCOL) {
            return Err(format!(
                "none of the requested stream protocols {protocols:?} is supported; port forwarding speaks {SPDY_PROTOCOL}"
            ));
        }
        let response = response
            .header(header::UPGRADE, "SPDY/3.1")
            .header(header::CONNECTION, "Upgrade")
            .header(STREAM_PROTOCOL_HEADER, SPDY_PROTOCOL);
        return Ok((response, Transport::Spdy));
    }
    Err(format!(
        "port forwarding needs an upgrade to WebSocket ({WEBSOCKET_PROTOCOL}) or SPDY/3.1, not {upgrade:?}"
    ))
}

/// Where connections go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod, for messages.
    pub pod: String,
    /// Its network namespace (`None`: the node's, for hostNetwork pods).
    pub netns: Option<PathBuf>,
}

/// Serves port forwarding on `upgraded` until the client is done.
pub async fn serve(upgraded: Upgraded, transport: Transport, target: Target) {
    let io = TokioIo::new(upgraded);
    match transport {
        Transport::Spdy => session(io, target).await,
        Transport::WebSocket => {
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            tokio::join!(session(ours, target), tunnel(socket, theirs));
        }
    }
}

/// Carries the bytes of `io` in the binary messages of `socket`, both ways.
async fn tunnel(socket: WebSocketStream<TokioIo<Upgraded>>, io: tokio::io::DuplexStream) {
    let (mut sink, mut source) = socket.split();
    let (mut read, mut write) = tokio::io::split(io);
    let up = async move {
        while let Some(Ok(message)) = source.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0
                || sink
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    };
    tokio::join!(up, down);
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Option<Vec<u8>>>)>,
    port: u16,
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY connection: streams are answered, paired by request and forwarded.
async fn session<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO, target: Target) {
    let (read, mut write) = tokio::io::split(io);
    let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut reader = spdy::Reader::new(read);
    let mut headers_out = Writer::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inputs: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "port forwarding: a bad SPDY frame");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                let kind = header(&headers, "streamtype");
                let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                let request = header(&headers, "requestid").unwrap_or("").to_string();
                let (Some(kind @ ("data" | "error")), Some(port @ 1..)) = (kind, port) else {
                    let _ = out
                        .send(Writer::rst_stream(stream, spdy::PROTOCOL_ERROR))
                        .await;
                    continue;
                };
                match headers_out.syn_reply(stream, &Vec::new()) {
                    Ok(reply) => {
                        let _ = out.send(reply).await;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "port forwarding: replying");
                        break;
                    }
                }
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                if kind == "error" {
                    pair.error = Some(stream);
                } else {
                    let (input, received) = mpsc::channel(16);
                    inputs.insert(stream, input);
                    pair.data = Some((stream, received));
                }
                // Both streams are here: the connection can go.
                if pair.error.is_some()
                    && pair.data.is_some()
                    && let Some(Pair {
                        error: Some(error),
                        data: Some((data, received)),
                        port,
                    }) = pairs.remove(&request)
                {
                    let streams = Streams { data, error };
                    tokio::spawn(forward(
                        target.clone(),
                        port,
                        streams,
                        out.clone(),
                        received,
                    ));
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(input) = inputs.get(&stream) {
                    if !data.is_empty() && input.send(Some(data)).await.is_err() {
                        inputs.remove(&stream);
                    } else if fin {
                        let _ = input.send(None).await;
                        inputs.remove(&stream);
                    }
                }
            }
            Frame::RstStream { stream } => {
                inputs.remove(&stream);
            }
            Frame::Ping(id) => {
                let _ = out.send(Writer::ping(id)).await;
            }
            Frame::GoAway => break,
            Frame::Skipped => {}
        }
    }
    drop(inputs);
    drop(out);
    let _ = writer.await;
}

#[derive(Clone, Copy)]
struct Streams {
    data: u32,
    error: u32,
}

/// Forwards one connection: the client's bytes from `input` (`None`: it sent its last) to
/// the pod's `port`, and back on the data stream; a failure is written on the error stream.
async fn forward(
    target: Target,
    port: u16,
    streams: Streams,
    out: mpsc::Sender<Vec<u8>>,
    mut input: mpsc::Receiver<Option<Vec<u8>>>,
) {
    let tcp = match connect(target.netns.clone(), port).await {
        Ok(tcp) => tcp,
        Err(error) => {
            let message = format!(
                "error forwarding port {port} to pod {}: failed to connect to localhost:{port} inside the pod's network namespace: {error}",
                target.pod
            );
            let _ = out
                .send(Writer::data(streams.error, true, message.as_bytes()))
                .await;
            let _ = out.send(Writer::data(streams.data, true, &[])).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = input.recv().await {
            match chunk {
                Some(bytes) => {
                    if to_pod.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_pod.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(Writer::data(streams.data, false, &buf[..n]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = out.send(Writer::data(streams.data, true, &[])).await;
    let _ = out.send(Writer::data(streams.error, true, &[])).await;
    upstream.abort();
}

/// A TCP connection to localhost:`port` inside `netns`. Entering a network namespace
/// changes the calling thread for good, so it happens on a thread of its own.
async fn connect(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| -> io::Result<std::net::TcpStream> {
            if let Some(path) = &netns {
                let file = std::fs::File::open(path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
            }
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let stream = std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })();
        let _ = done.send(connected);
    });
    let stream = result
        .await
        .map_err(|_| io::Error::other("the connecting thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn websocket_and_spdy_upgrades_are_told_apart() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("a2V5"));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
        );
        assert_eq!(
            accept(&headers).ok().map(|(_, t)| t),
            Some(Transport::WebSocket)
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(
            accept(&headers)
                .err()
                .is_some_and(|e| e.contains("stream protocols"))
        );
        headers.insert(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("portforward.k8s.io"),
        );
        assert_eq!(accept(&headers).ok().map(|(_, t)| t), Some(Transport::Spdy));
    }
}
