//! Container logs in the CRI format (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`), one file
//! per container instance, rotated by size.
//!
//! This is containerd's logging program (`binary://` stdio): the runc shim starts it with the
//! container's stdout and stderr as descriptors 3 and 4 and waits for descriptor 5 to close
//! before starting the container. Living beside the shim rather than in the kubelet is what
//! lets the kubelet restart without breaking any container's output. Choosing the file and
//! reading logs back are the kubelet's.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The longest line written as one entry; longer ones are split into partial (`P`) entries.
const MAX_LINE: usize = 16 * 1024;
/// When the current file passes this size it is rotated (the kubelet's containerLogMaxSize).
pub const MAX_SIZE: u64 = 10 * 1024 * 1024;
/// How many files one container instance keeps, the current one included.
pub const MAX_FILES: usize = 5;

struct Sink {
    path: PathBuf,
    file: File,
    size: u64,
}

impl Sink {
    fn write(&mut self, stream: &str, tag: char, text: &[u8]) -> io::Result<()> {
        let time = jiff::Timestamp::now();
        let mut entry = Vec::with_capacity(text.len() + 48);
        write!(entry, "{time:.9} {stream} {tag} ")?;
        entry.extend_from_slice(text);
        entry.push(b'\n');
        if self.size + entry.len() as u64 > MAX_SIZE && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let stamp = jiff::Timestamp::now().as_nanosecond();
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        prune(&self.path)
    }
}

/// Keeps the newest `MAX_FILES - 1` rotated files of `path`.
fn prune(path: &Path) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let prefix = format!("{name}.");
    let mut rotated: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|file| file.starts_with(&prefix))
        })
        .map(|entry| entry.path())
        .collect();
    rotated.sort();
    let excess = rotated.len().saturating_sub(MAX_FILES - 1);
    for old in &rotated[..excess] {
        fs::remove_file(old)?;
    }
    Ok(())
}

/// Copies `input` into `sink` line by line as `stream`, until end of file.
fn copy(input: impl io::Read, stream: &str, sink: &Mutex<Sink>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(MAX_LINE, input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        let mut sink = sink
            .lock()
            .map_err(|_| io::Error::other("log writer poisoned"))?;
        sink.write(stream, if complete { 'F' } else { 'P' }, &line)?;
    }
}

/// Runs as the logging binary: copies descriptors 3 and 4 into `path` until both close.
pub fn run_writer(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    let sink = Arc::new(Mutex::new(Sink {
        path: path.to_path_buf(),
        file,
        size,
    }));
    // Reopening through /proc gives owned handles on the inherited pipes without unsafe code.
    let stdout = File::open("/proc/self/fd/3")?;
    let stderr = File::open("/proc/self/fd/4")?;
    for fd in [3, 4] {
        let _ = nix::unistd::close(fd);
    }
    // Closing the ready pipe tells the shim it may start the container.
    let _ = nix::unistd::close(5);
    let errors = {
        let sink = Arc::clone(&sink);
        std::thread::spawn(move || copy(stderr, "stderr", &sink))
    };
    let out = copy(stdout, "stdout", &sink);
    let err = errors
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the stderr copier panicked")));
    out.and(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_cri_entries_and_long_ones_are_split() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("0.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let sink = Mutex::new(Sink {
            path: path.clone(),
            file,
            size: 0,
        });
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("hello\n{long}\nlast without newline");
        copy(input.as_bytes(), "stdout", &sink).expect("copy");
        let text = fs::read_to_string(&path).expect("read");
        let entries: Vec<&str> = text.lines().collect();
        assert_eq!(entries.len(), 4, "{text}");
        assert!(entries[0].ends_with(" stdout F hello"), "{}", entries[0]);
        assert!(entries[1].contains(" stdout P "));
        assert!(entries[2].ends_with(" stdout F xxxxxxxxxx"));
        assert!(entries[3].ends_with(" stdout P last without newline"));
        let time = entries[0].split(' ').next().expect("time");
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("0.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let mut sink = Sink {
            path: path.clone(),
            file,
            size: MAX_SIZE,
        };
        for _ in 0..(MAX_FILES + 3) {
            sink.write("stdout", 'F', b"entry").expect("write");
            sink.size = MAX_SIZE;
        }
        let files = fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(files, MAX_FILES);
    }
}
