//! `/containerLogs/{namespace}/{pod}/{container}`: a container's CRI-format log file read back
//! as the text it wrote, with the API's options (tailLines, sinceSeconds, timestamps,
//! limitBytes, previous) and, with `follow`, new output as it comes until the container
//! exits. Finding the file is containerd's labels' job; the HTTP around it is the server's.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::pods::labels;
use crate::runtime::{Runtime, TaskState};

/// The options of a log request, validated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// Keep streaming until the container exits.
    pub follow: bool,
    /// The previous instance's log instead of the current one's.
    pub previous: bool,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<usize>,
    /// Only lines written within this many seconds.
    pub since_seconds: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// A boolean parameter (absent: false).
pub(super) fn boolean(query: &HashMap<String, String>, key: &str) -> Result<bool, String> {
    match query.get(key).map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(format!("{key}: {other:?} is not a boolean")),
    }
}

fn number<T: std::str::FromStr + PartialOrd>(
    query: &HashMap<String, String>,
    key: &str,
    min: T,
) -> Result<Option<T>, String> {
    let Some(text) = query.get(key) else {
        return Ok(None);
    };
    let value: T = text
        .parse()
        .map_err(|_| format!("{key}: {text:?} is not an integer"))?;
    if value < min {
        return Err(format!("{key}: {text} is out of range"));
    }
    Ok(Some(value))
}

impl Options {
    /// Reads the options from a request's query.
    pub fn parse(query: &HashMap<String, String>) -> Result<Options, String> {
        Ok(Options {
            follow: boolean(query, "follow")?,
            previous: boolean(query, "previous")?,
            timestamps: boolean(query, "timestamps")?,
            tail_lines: number(query, "tailLines", 0)?,
            since_seconds: number(query, "sinceSeconds", 1)?,
            limit_bytes: number(query, "limitBytes", 1)?,
        })
    }
}

/// One CRI log entry.
pub(super) struct Entry<'a> {
    time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// Continued by the next entry of the same output line.
    pub partial: bool,
    /// What the container wrote, without the newline.
    pub text: &'a [u8],
}

/// Reads one CRI log line (`TIME STREAM P|F TEXT`).
pub(super) fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Entry {
        time,
        stream,
        partial: tag == b"P",
        text,
    })
}

/// A CRI log file read as it grows, whole lines at a time; a file that shrank was rotated
/// and is read again from its start.
pub(super) struct Follower {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Reads `path` from its beginning.
    pub fn from_start(path: PathBuf) -> Follower {
        Follower {
            path,
            offset: 0,
            pending: Vec::new(),
        }
    }

    /// Reads only what is written to `path` from now on.
    pub async fn from_end(path: PathBuf) -> Follower {
        let offset = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        Follower {
            path,
            offset,
            pending: Vec::new(),
        }
    }

    /// The whole lines written since the last call, and whether the file grew at all.
    pub async fn lines(&mut self) -> (Vec<u8>, bool) {
        let mut chunk = Vec::new();
        if let Ok(mut file) = tokio::fs::File::open(&self.path).await {
            let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            if size < self.offset {
                self.offset = 0;
            }
            if file.seek(SeekFrom::Start(self.offset)).await.is_ok() {
                let _ = file.read_to_end(&mut chunk).await;
            }
        }
        self.offset += chunk.len() as u64;
        let grew = !chunk.is_empty();
        self.pending.extend_from_slice(&chunk);
        // The rest waits for its newline.
        let complete = self
            .pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        (self.pending.drain(..complete).collect(), grew)
    }
}

/// Turns complete CRI lines into output, honouring `since` and `timestamps`. `at_line_start`
/// carries across calls: a partial entry continues the same output line.
fn render(
    lines: &[u8],
    options: &Options,
    since: Option<jiff::Timestamp>,
    at_line_start: &mut bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(entry) = parse(line) else { continue };
        if let Some(since) = since
            && entry
                .time
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t < since)
        {
            continue;
        }
        if options.timestamps && *at_line_start {
            out.extend_from_slice(entry.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(entry.text);
        if !entry.partial {
            out.push(b'\n');
        }
        *at_line_start = !entry.partial;
    }
    out
}

/// The last `n` output lines of `rendered`.
fn tail(rendered: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let mut newlines = 0;
    for (at, byte) in rendered.iter().enumerate().rev().skip(1) {
        if *byte == b'\n' {
            newlines += 1;
            if newlines == n {
                return &rendered[at + 1..];
            }
        }
    }
    rendered
}

/// What a log request is about.
pub struct Target {
    /// The file.
    pub path: PathBuf,
    /// containerd's ID of the instance, to tell when it stops.
    pub container_id: String,
}

/// Finds the log of `container` of pod `namespace/pod` (its previous instance's with
/// `previous`).
pub async fn find(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Target, (u16, String)> {
    let mut found = runtime
        .containers(&[
            (labels::POD_NAMESPACE, namespace),
            (labels::POD_NAME, pod),
            (labels::CONTAINER, container),
        ])
        .await
        .map_err(|error| (500, error.to_string()))?;
    found.sort_by_key(|c| {
        std::cmp::Reverse(
            c.labels
                .get(labels::ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    let wanted = if previous {
        found.get(1)
    } else {
        found.first()
    };
    let Some(instance) = wanted else {
        let message = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start or does not exist"
            )
        };
        return Err((if previous { 400 } else { 404 }, message));
    };
    let path = instance
        .labels
        .get(labels::LOG_PATH)
        .cloned()
        .unwrap_or_default();
    Ok(Target {
        path: PathBuf::from(path),
        container_id: instance.id.clone(),
    })
}

/// Streams the log of `target` into `out` as `options` ask, until done or the reader leaves.
pub async fn stream(runtime: Runtime, target: Target, options: Options, out: mpsc::Sender<Bytes>) {
    let since = options.since_seconds.and_then(|s| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .ok()
    });
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    let mut at_line_start = true;
    let mut follower = Follower::from_start(target.path);
    let mut first = true;
    loop {
        let (lines, grew) = follower.lines().await;
        let mut rendered = render(&lines, &options, since, &mut at_line_start);
        if first {
            if let Some(n) = options.tail_lines {
                rendered = tail(&rendered, n).to_vec();
            }
            first = false;
        }
        if !rendered.is_empty() {
            rendered.truncate(budget);
            budget -= rendered.len();
            if out.send(Bytes::from(rendered)).await.is_err() {
                return;
            }
        }
        if !options.follow || budget == 0 {
            return;
        }
        let running = matches!(
            runtime.task(&target.container_id).await,
            Ok(Some(TaskState::Running { .. }))
        );
        if !running && !grew {
            return;
        }
        tokio::select! {
            _ = out.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:00.000000001Z stdout F one\n2026-01-01T00:00:01.000000001Z stderr P tw\n2026-01-01T00:00:01.500000001Z stderr F o\n2026-01-01T00:00:02.000000001Z stdout F three\n";

    #[test]
    fn entries_become_lines_and_partials_join() {
        let mut start = true;
        let out = render(LOG, &Options::default(), None, &mut start);
        assert_eq!(out, b"one\ntwo\nthree\n");
        let mut start = true;
        let stamped = render(
            LOG,
            &Options {
                timestamps: true,
                ..Options::default()
            },
            None,
            &mut start,
        );
        let text = String::from_utf8(stamped).expect("utf-8");
        assert!(
            text.starts_with(
                "2026-01-01T00:00:00.000000001Z one\n2026-01-01T00:00:01.000000001Z two\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn tail_and_since_select_lines() {
        let mut start = true;
        let out = render(LOG, &Options::default(), None, &mut start);
        assert_eq!(tail(&out, 2), b"two\nthree\n");
        assert_eq!(tail(&out, 0), b"");
        assert_eq!(tail(&out, 10), out.as_slice());
        let since: jiff::Timestamp = "2026-01-01T00:00:01.9Z".parse().expect("time");
        let mut start = true;
        assert_eq!(
            render(LOG, &Options::default(), Some(since), &mut start),
            b"three\n"
        );
    }

    #[test]
    fn bad_options_name_the_parameter() {
        let query = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(
            Options::parse(&query("tailLines", "x"))
                .expect_err("x")
                .starts_with("tailLines")
        );
        assert!(
            Options::parse(&query("sinceSeconds", "0"))
                .expect_err("0")
                .starts_with("sinceSeconds")
        );
        assert!(
            Options::parse(&query("follow", "maybe"))
                .expect_err("maybe")
                .starts_with("follow")
        );
        assert_eq!(
            Options::parse(&query("tailLines", "3"))
                .expect("ok")
                .tail_lines,
            Some(3)
        );
    }
}
