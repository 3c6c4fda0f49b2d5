//! `/exec/{namespace}/{pod}/{container}` and `/attach/…`: `kubectl exec` and `kubectl attach`
//! over the WebSocket channel protocol kubectl speaks (`v5.channel.k8s.io`, else
//! `v4.channel.k8s.io`). Every binary message starts with its channel: 0 input, 1 output,
//! 2 errors, 3 the final Status (JSON), 4 terminal size (JSON); v5 adds 255, the client's
//! "this channel is closed" (its input ended).
//!
//! Exec runs the command beside the container's main process through containerd, its streams
//! on FIFOs ([`crate::runtime::fifo`]); the Status carries its exit code the way kubectl reads
//! it. Attach shows what the main process writes from now on, read from its log as it grows
//! (its output goes to the log writer, so input cannot reach it). **Does not** authorize (the
//! server does) or find the container (its caller does).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::logs::{self, Follower};
use crate::runtime::fifo::{Fifos, Pipes, Streams};
use crate::runtime::{Runtime, TaskState};

/// The channel protocols served, the preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const V5: &str = PROTOCOLS[0];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long output still being written after the process exited may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// How often attach looks for new output in the log.
const ATTACH_POLL: Duration = Duration::from_millis(100);

/// A WebSocket on an upgraded connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What a stream request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The command (exec only).
    pub command: Vec<String>,
    /// The streams wanted (with a terminal, errors come on output).
    pub streams: Streams,
    /// Whether the process has a terminal.
    pub tty: bool,
}

impl Options {
    /// Reads an exec (`exec` true) or attach request's `query`.
    pub fn parse(query: Option<&str>, exec: bool) -> Result<Options, String> {
        let pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let command: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let single: HashMap<String, String> = pairs.into_iter().collect();
        let tty = logs::boolean(&single, "tty")?;
        let streams = Streams {
            stdin: logs::boolean(&single, "stdin")?,
            stdout: logs::boolean(&single, "stdout")?,
            // A terminal has one output.
            stderr: logs::boolean(&single, "stderr")? && !tty,
        };
        if exec && command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(streams.stdin || streams.stdout || logs::boolean(&single, "stderr")?) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(Options {
            command,
            streams,
            tty,
        })
    }
}

/// The answer to a WebSocket upgrade request with `headers`: the protocol switch and the
/// channel protocol chosen, or why not (the client asked for something else).
pub fn accept(headers: &HeaderMap) -> Result<(http::response::Builder, &'static str), String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let upgrade = text(header::UPGRADE).unwrap_or("");
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(format!(
            "this kubelet streams over WebSocket ({}) only; the request asked to upgrade to {upgrade:?}",
            PROTOCOLS.join(", ")
        ));
    }
    if text(header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err("Sec-WebSocket-Version: must be 13".into());
    }
    let key = text(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or("Sec-WebSocket-Key: missing")?;
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let protocol = PROTOCOLS
        .into_iter()
        .find(|p| offered.contains(p))
        .ok_or_else(|| {
            format!(
                "none of the requested protocols {offered:?} is supported; this kubelet speaks {}",
                PROTOCOLS.join(", ")
            )
        })?;
    let response = http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    Ok((response, protocol))
}

/// A message on `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// The final Status for a process that ended with `code`, as kubectl reads it.
fn exit_status(command: &[String], code: u32) -> String {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"}).to_string();
    }
    json!({"metadata": {}, "status": "Failure",
           "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
           "reason": "NonZeroExitCode",
           "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    .to_string()
}

/// The final Status for a stream that failed for `why`.
fn internal_error(why: &str) -> String {
    json!({"metadata": {}, "status": "Failure",
           "message": format!("Internal error occurred: {why}"),
           "reason": "InternalError",
           "details": {"causes": [{"message": why}]},
           "code": 500})
    .to_string()
}

/// Sends the final Status and closes the socket.
async fn finish(sink: &mut SplitSink<Socket, Message>, status: &str) {
    let sent = sink.send(frame(ERROR, status.as_bytes())).await;
    if sent.is_ok() {
        // kubectl reads anything but a normal closure as the stream breaking.
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
    }
    let _ = sink.close().await;
}

/// A message from the client, or why none came.
type Incoming = Result<Message, tokio_tungstenite::tungstenite::Error>;

/// How long the first terminal size may take to come.
const FIRST_SIZE: Duration = Duration::from_secs(1);

/// The terminal size the client sends first, if it does within [`FIRST_SIZE`]; whatever
/// comes before it is kept in `early` for the process.
async fn initial_size(
    source: &mut SplitStream<Socket>,
    early: &mut Vec<Message>,
) -> Option<TerminalSize> {
    let deadline = tokio::time::Instant::now() + FIRST_SIZE;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, source.next()).await {
        if let Message::Binary(data) = &message
            && let Some((&RESIZE, payload)) = data.split_first()
            && let Ok(size) = serde_json::from_slice::<TerminalSize>(payload)
        {
            return Some(size);
        }
        let closed = matches!(message, Message::Close(_));
        early.push(message);
        if closed {
            break;
        }
    }
    None
}

/// A terminal size message: `{"Width": 80, "Height": 24}`.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TerminalSize {
    width: u16,
    height: u16,
}

/// An exec'd process's name in containerd: unique across kubelet restarts too.
fn exec_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("exec-{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where exec'd processes run and their FIFOs go.
pub struct ExecTarget {
    /// containerd's connection.
    pub runtime: Runtime,
    /// The container (its running instance).
    pub container_id: String,
    /// The directory for FIFOs.
    pub fifo_dir: PathBuf,
}

/// Runs `options`' command in `target` over `socket` until it exits.
pub async fn exec(socket: Socket, protocol: &str, target: ExecTarget, options: Options) {
    let (mut sink, mut source) = socket.split();
    let exec_id = exec_id();
    // kubectl sends its terminal's size first thing; the process is started at that size
    // rather than resized after it may already have looked.
    let mut early = Vec::new();
    let size = if options.tty {
        initial_size(&mut source, &mut early).await
    } else {
        None
    };
    let source = futures::stream::iter(early.into_iter().map(Ok)).chain(source);
    let status = match start(&target, &exec_id, &options, size).await {
        Err(why) => internal_error(&format!("error executing command in container: {why}")),
        Ok((fifos, pipes, exit)) => {
            let session = Session {
                runtime: &target.runtime,
                container_id: &target.container_id,
                exec_id: &exec_id,
                tty: options.tty,
                v5: protocol == V5,
            };
            let status = session
                .relay(&mut sink, source, pipes, exit, &options.command)
                .await;
            if let Err(error) = target
                .runtime
                .delete_exec(&target.container_id, &exec_id)
                .await
            {
                tracing::debug!(%error, "deleting an exec'd process");
            }
            drop(fifos);
            status
        }
    };
    finish(&mut sink, &status).await;
}

type Exit = tokio::task::JoinHandle<Result<u32, crate::runtime::Error>>;

/// Creates and starts the process, its FIFOs open.
async fn start(
    target: &ExecTarget,
    exec_id: &str,
    options: &Options,
    size: Option<TerminalSize>,
) -> Result<(Fifos, Pipes, Exit), String> {
    let fifos = Fifos::create(&target.fifo_dir, exec_id, options.streams)
        .map_err(|e| format!("making FIFOs in {}: {e}", target.fifo_dir.display()))?;
    let pipes = fifos.open().map_err(|e| format!("opening FIFOs: {e}"))?;
    let (runtime, id) = (&target.runtime, target.container_id.as_str());
    let mut io = fifos.exec_io(options.tty);
    io.terminal_size = size.map(|s| (s.width, s.height));
    runtime
        .create_exec(id, exec_id, &options.command, &io)
        .await
        .map_err(|e| e.to_string())?;
    let exit = tokio::spawn(runtime.exec_exit(id, exec_id));
    if let Err(error) = runtime.start_exec(id, exec_id).await {
        exit.abort();
        if let Err(error) = runtime.delete_exec(id, exec_id).await {
            tracing::debug!(%error, "deleting an exec that did not start");
        }
        return Err(error.to_string());
    }
    Ok((fifos, pipes, exit))
}

/// One running exec.
struct Session<'a> {
    runtime: &'a Runtime,
    container_id: &'a str,
    exec_id: &'a str,
    tty: bool,
    v5: bool,
}

impl Session<'_> {
    /// Moves bytes between the socket and the process until it exits; its final Status.
    async fn relay(
        &self,
        sink: &mut SplitSink<Socket, Message>,
        source: impl Stream<Item = Incoming> + Send + Unpin + 'static,
        pipes: Pipes,
        mut exit: Exit,
        command: &[String],
    ) -> String {
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(8);
        for (pipe, channel) in [(pipes.stdout, STDOUT), (pipes.stderr, STDERR)] {
            if let Some(pipe) = pipe {
                tokio::spawn(read_output(pipe, channel, out_tx.clone()));
            }
        }
        drop(out_tx);
        let input = tokio::spawn(input(
            source,
            pipes.stdin,
            self.runtime.clone(),
            self.container_id.to_owned(),
            self.exec_id.to_owned(),
            self.tty,
            self.v5,
        ));
        // A client that left gets nothing more, but the output is still read, so the
        // process is not stuck writing to a full pipe.
        let mut client_here = true;
        let mut outputs_open = true;
        let ended = loop {
            tokio::select! {
                message = out_rx.recv(), if outputs_open => match message {
                    Some(message) => {
                        if client_here && sink.send(message).await.is_err() {
                            client_here = false;
                        }
                    }
                    None => outputs_open = false,
                },
                ended = &mut exit => break ended,
            }
        };
        // What the process wrote last may still be on its way.
        let drain = async {
            while let Some(message) = out_rx.recv().await {
                if client_here && sink.send(message).await.is_err() {
                    client_here = false;
                }
            }
        };
        if tokio::time::timeout(DRAIN, drain).await.is_err() {
            tracing::debug!(
                exec = self.exec_id,
                "output still open after the exec ended"
            );
        }
        input.abort();
        match ended {
            Ok(Ok(code)) => exit_status(command, code),
            Ok(Err(error)) => internal_error(&error.to_string()),
            Err(join) => internal_error(&join.to_string()),
        }
    }
}

/// Sends what `pipe` carries as messages on `channel` until it ends.
async fn read_output(mut pipe: pipe::Receiver, channel: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if out.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, channel, "reading exec output");
                return;
            }
        }
    }
}

/// Takes the client's messages: input for the process, terminal sizes, and (v5) the end of
/// input. The input ends when the client says so or leaves.
async fn input(
    mut source: impl Stream<Item = Incoming> + Unpin,
    mut stdin: Option<pipe::Sender>,
    runtime: Runtime,
    container_id: String,
    exec_id: String,
    tty: bool,
    v5: bool,
) {
    while let Some(message) = source.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(writer) = stdin.as_mut()
                    && writer.write_all(payload).await.is_err()
                {
                    close_stdin(&mut stdin, &runtime, &container_id, &exec_id).await;
                }
            }
            RESIZE if tty => match serde_json::from_slice::<TerminalSize>(payload) {
                Ok(size) => {
                    let resized = runtime
                        .resize_exec(
                            &container_id,
                            &exec_id,
                            u32::from(size.width),
                            u32::from(size.height),
                        )
                        .await;
                    if let Err(error) = resized {
                        tracing::debug!(%error, "resizing an exec's terminal");
                    }
                }
                Err(error) => tracing::debug!(%error, "a terminal size that is not one"),
            },
            CLOSE if v5 && payload.first() == Some(&STDIN) => {
                close_stdin(&mut stdin, &runtime, &container_id, &exec_id).await;
            }
            _ => {}
        }
    }
    close_stdin(&mut stdin, &runtime, &container_id, &exec_id).await;
}

/// Ends the process's input: the shim holds a writer of the FIFO too (for exactly this), so
/// it sees the end only once both ours and its own are closed.
async fn close_stdin(
    stdin: &mut Option<pipe::Sender>,
    runtime: &Runtime,
    container_id: &str,
    exec_id: &str,
) {
    if stdin.take().is_some()
        && let Err(error) = runtime.close_exec_stdin(container_id, exec_id).await
    {
        tracing::debug!(%error, "closing an exec's input");
    }
}

/// Where attach reads.
pub struct AttachTarget {
    /// containerd's connection.
    pub runtime: Runtime,
    /// The container's running instance.
    pub container_id: String,
    /// Its log.
    pub log: PathBuf,
}

/// Shows what `target`'s main process writes from now on over `socket`, until it exits or the
/// client leaves.
pub async fn attach(socket: Socket, target: AttachTarget, options: Options) {
    let (mut sink, mut source) = socket.split();
    let mut follower = Follower::from_end(target.log).await;
    let mut ticker = tokio::time::interval(ATTACH_POLL);
    loop {
        tokio::select! {
            message = source.next() => match message {
                // Input has nowhere to go: the main process's streams belong to its log.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = ticker.tick() => {}
        }
        let (lines, grew) = follower.lines().await;
        for line in lines.split(|b| *b == b'\n') {
            let Some(entry) = logs::parse(line) else {
                continue;
            };
            let channel = if entry.stream == b"stderr" && !options.tty {
                STDERR
            } else {
                STDOUT
            };
            let wanted = match channel {
                STDERR => options.streams.stderr,
                _ => options.streams.stdout,
            };
            if !wanted {
                continue;
            }
            let mut text = entry.text.to_vec();
            if !entry.partial {
                text.push(b'\n');
            }
            if sink.send(frame(channel, &text)).await.is_err() {
                return;
            }
        }
        let running = matches!(
            target.runtime.task(&target.container_id).await,
            Ok(Some(TaskState::Running { .. }))
        );
        if !running && !grew {
            break;
        }
    }
    finish(&mut sink, &exit_status(&[], 0)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_keep_arguments_and_merge_errors_into_a_terminal() {
        let options = Options::parse(
            Some(
                "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=true&tty=true",
            ),
            true,
        );
        assert_eq!(
            options,
            Ok(Options {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                streams: Streams {
                    stdin: true,
                    stdout: true,
                    stderr: false
                },
                tty: true,
            })
        );
        assert_eq!(
            Options::parse(Some("stdout=true"), true),
            Err("you must specify at least 1 command".into())
        );
        assert_eq!(
            Options::parse(Some("command=ls"), true),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );
        assert!(
            Options::parse(Some("stderr=true&tty=true"), false).is_ok(),
            "errors alone still ask for a stream"
        );
    }

    #[test]
    fn the_upgrade_picks_v5_and_names_what_is_missing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            accept(&headers).err().as_deref(),
            Some(
                "none of the requested protocols [] is supported; this kubelet speaks v5.channel.k8s.io, v4.channel.k8s.io"
            )
        );
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io, channel.k8s.io"),
        );
        let accepted = accept(&headers).ok();
        assert_eq!(accepted.as_ref().map(|(_, p)| *p), Some(V5));
        let response = accepted.and_then(|(builder, _)| builder.body(()).ok());
        // RFC 6455's own example key and answer.
        assert_eq!(
            response
                .as_ref()
                .and_then(|r| r.headers().get(header::SEC_WEBSOCKET_ACCEPT)),
            Some(&HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(
            accept(&headers)
                .err()
                .is_some_and(|e| e.contains("WebSocket") && e.contains("SPDY/3.1"))
        );
    }

    #[test]
    fn the_final_status_carries_the_exit_code_as_kubectl_reads_it() {
        let command = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let ok: serde_json::Value =
            serde_json::from_str(&exit_status(&command, 0)).unwrap_or_default();
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        let failed: serde_json::Value =
            serde_json::from_str(&exit_status(&command, 3)).unwrap_or_default();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        let internal: serde_json::Value =
            serde_json::from_str(&internal_error("no such file")).unwrap_or_default();
        assert_eq!(internal["code"], 500);
        assert_eq!(internal["message"], "Internal error occurred: no such file");
    }
}
