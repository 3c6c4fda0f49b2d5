//! Named network namespaces without `ip netns`: a namespace is kept alive by bind-mounting it
//! onto a file, so that it outlives the thread that made it and runc can join it by path.
//! This module also opens rtnetlink connections inside a namespace; it does not configure
//! anything in one.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::Handle;

use crate::Error;

/// Makes a new network namespace pinned at `path` and returns a netlink handle inside it.
/// A namespace already pinned there is reused, so a retried setup does not leak one.
pub async fn create(path: &Path) -> Result<Handle, Error> {
    if is_pinned(path)? {
        return enter(path).await;
    }
    let path = path.to_path_buf();
    let runtime = tokio::runtime::Handle::current();
    // unshare() moves only the calling thread, so a throwaway thread makes the namespace and
    // its netlink socket; the socket stays bound to the namespace after the thread is gone.
    let (connection, handle) = tokio::task::spawn_blocking(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| {
            Error::io("unsharing the network namespace for", &path, errno.into())
        })?;
        File::create(&path).map_err(|source| Error::io("creating", &path, source))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| Error::io("pinning the network namespace at", &path, errno.into()))?;
        let _runtime = runtime.enter();
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|source| Error::io("opening netlink in", &path, source))?;
        Ok::<_, Error>((connection, handle))
    })
    .await
    .map_err(|join| {
        Error::io(
            "creating",
            Path::new("a network namespace"),
            io::Error::other(join),
        )
    })??;
    tokio::spawn(connection);
    Ok(handle)
}

/// A netlink handle inside the namespace pinned at `path`.
pub async fn enter(path: &Path) -> Result<Handle, Error> {
    let path = path.to_path_buf();
    let runtime = tokio::runtime::Handle::current();
    let (connection, handle) = tokio::task::spawn_blocking(move || {
        let file = File::open(&path).map_err(|source| Error::io("opening", &path, source))?;
        // A blocking-pool thread is reused by other tasks later: it must go back where it was.
        let home = File::open("/proc/thread-self/ns/net").map_err(|source| {
            Error::io("opening", Path::new("/proc/thread-self/ns/net"), source)
        })?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::io("entering", &path, errno.into()))?;
        let opened = {
            let _runtime = runtime.enter();
            rtnetlink::new_connection()
        };
        setns(&home, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::io("leaving", &path, errno.into()))?;
        let (connection, handle, _) =
            opened.map_err(|source| Error::io("opening netlink in", &path, source))?;
        Ok::<_, Error>((connection, handle))
    })
    .await
    .map_err(|join| {
        Error::io(
            "entering",
            Path::new("a network namespace"),
            io::Error::other(join),
        )
    })??;
    tokio::spawn(connection);
    Ok(handle)
}

/// Unpins the namespace at `path` and removes the file. The namespace itself goes when its
/// last process has gone, taking the pod's end of the veth (and so the pair) with it.
pub fn remove(path: &Path) -> Result<(), Error> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(Error::io("unpinning", path, errno.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::io("removing", path, source)),
    }
}

/// Whether a namespace is pinned at `path` (a file with nothing mounted on it is a leftover
/// of a crash between creating the file and mounting).
fn is_pinned(path: &Path) -> Result<bool, Error> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| Error::io("reading", Path::new("/proc/self/mountinfo"), source))?;
    let Some(wanted) = path.to_str() else {
        return Ok(false);
    };
    let pinned = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted);
    if !pinned && path.exists() {
        fs::remove_file(path).map_err(|source| Error::io("removing", path, source))?;
    }
    Ok(pinned)
}
