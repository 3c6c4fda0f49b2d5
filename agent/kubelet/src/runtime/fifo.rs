//! The named pipes that carry an exec'd process's streams between containerd's shim and the
//! kubelet, in a directory of their own that goes when they do.
//!
//! Our ends are opened before the process is created and never block: output is read
//! non-blocking, and the kernel reports a FIFO readable only once a writer has come (and at
//! its end of file only once the writer has gone again), so an early read cannot see a false
//! end; input is opened read-write, so it needs no reader yet. The shim keeps a writer of the
//! input FIFO itself, so ending a process's input takes dropping ours and containerd's
//! CloseIO.

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use tokio::net::unix::pipe;

use super::exec::ExecIo;

/// Which streams a process has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
}

/// A process's FIFOs on disk.
#[derive(Debug)]
pub struct Fifos {
    dir: PathBuf,
    stdin: Option<PathBuf>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

/// Our ends of them.
#[derive(Debug, Default)]
pub struct Pipes {
    /// Writes the process's input.
    pub stdin: Option<pipe::Sender>,
    /// Reads its output.
    pub stdout: Option<pipe::Receiver>,
    /// Reads its errors.
    pub stderr: Option<pipe::Receiver>,
}

impl Fifos {
    /// Makes the FIFOs `streams` asks for in a new directory `parent/id`, readable by the
    /// owner only.
    pub fn create(parent: &Path, id: &str, streams: Streams) -> io::Result<Fifos> {
        let dir = parent.join(id);
        std::fs::create_dir_all(&dir)?;
        let fifos = Fifos {
            stdin: streams.stdin.then(|| dir.join("stdin")),
            stdout: streams.stdout.then(|| dir.join("stdout")),
            stderr: streams.stderr.then(|| dir.join("stderr")),
            dir,
        };
        for path in [&fifos.stdin, &fifos.stdout, &fifos.stderr]
            .into_iter()
            .flatten()
        {
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)?;
        }
        Ok(fifos)
    }

    /// The paths to give containerd.
    pub fn exec_io(&self, terminal: bool) -> ExecIo {
        let text = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
        ExecIo {
            stdin: text(&self.stdin),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
            terminal,
            terminal_size: None,
        }
    }

    /// Opens our ends (see the module's note on why this never blocks). Call it from a
    /// runtime, before the process is created.
    pub fn open(&self) -> io::Result<Pipes> {
        let receiver = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|p| pipe::OpenOptions::new().open_receiver(p))
                .transpose()
        };
        Ok(Pipes {
            stdin: self
                .stdin
                .as_ref()
                .map(|p| pipe::OpenOptions::new().read_write(true).open_sender(p))
                .transpose()?,
            stdout: receiver(&self.stdout)?,
            stderr: receiver(&self.stderr)?,
        })
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(%error, dir = %self.dir.display(), "removing exec FIFOs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn output_ends_only_after_a_writer_came_and_went() -> io::Result<()> {
        let parent = tempfile::tempdir()?;
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let fifos = Fifos::create(parent.path(), "e1", streams)?;
        let io = fifos.exec_io(false);
        assert_eq!(io.stderr, None);
        let mut pipes = fifos.open()?;
        let mut stdout = pipes.stdout.take().ok_or(io::ErrorKind::NotFound)?;
        // No writer yet: nothing to read, and no end of file either.
        let mut buf = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(100), stdout.read(&mut buf))
                .await;
        assert!(
            early.is_err(),
            "a read before any writer returned {early:?}"
        );
        // A writer (the shim's part) writes and leaves: the data, then the end.
        let path = io.stdout.clone().ok_or(io::ErrorKind::NotFound)?;
        let mut writer = pipe::OpenOptions::new().open_sender(&path)?;
        writer.write_all(b"hello").await?;
        drop(writer);
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await?;
        assert_eq!(out, b"hello");
        // Input opens without a reader; what is written waits for one.
        let mut stdin = pipes.stdin.take().ok_or(io::ErrorKind::NotFound)?;
        stdin.write_all(b"in").await?;
        let stdin_path = io.stdin.clone().ok_or(io::ErrorKind::NotFound)?;
        let mut reader = pipe::OpenOptions::new().open_receiver(&stdin_path)?;
        drop(stdin);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await?;
        assert_eq!(got, b"in");
        let dir = parent.path().join("e1");
        drop(fifos);
        assert!(!dir.exists());
        Ok(())
    }
}
