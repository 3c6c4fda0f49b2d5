//! Address management for one node's podCIDR: one file per address in use, named by the
//! address and holding the pod's UID, so a restarted kubelet hands every pod the address it
//! had. It owns allocation and release only; it knows nothing of interfaces.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::Error;

/// The addresses of one podCIDR, kept under `dir`.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

impl Ipam {
    /// Opens (creating) the allocation directory of `cidr`. A directory per CIDR keeps a
    /// node whose podCIDR changed from handing out addresses of its old range.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Ipam, Error> {
        let dir = state_dir
            .join("ipam")
            .join(cidr.to_string().replace('/', "_"));
        fs::create_dir_all(&dir).map_err(|source| Error::io("creating", &dir, source))?;
        Ok(Ipam { dir, cidr })
    }

    /// The address `pod` holds, allocating the lowest free one when it holds none.
    pub fn assign(&self, pod: &str) -> Result<Ipv4Addr, Error> {
        if let Some(address) = self.address_of(pod)? {
            return Ok(address);
        }
        // The network address is not a host, the first host is left for a gateway, and the
        // broadcast address is not a host either.
        for address in self.cidr.hosts().skip(1) {
            let path = self.dir.join(address.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(pod.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|source| Error::io("writing", &path, source))?;
                    return Ok(address);
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::io("creating", &path, source)),
            }
        }
        Err(Error::Exhausted(self.cidr))
    }

    /// The address `pod` holds, if any.
    pub fn address_of(&self, pod: &str) -> Result<Option<Ipv4Addr>, Error> {
        Ok(self
            .holders()?
            .into_iter()
            .find_map(|(address, holder)| (holder == pod).then_some(address)))
    }

    /// Frees every address `pod` holds; freeing nothing is not an error.
    pub fn release(&self, pod: &str) -> Result<(), Error> {
        for (address, holder) in self.holders()? {
            if holder == pod {
                let path = self.dir.join(address.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(Error::io("removing", &path, source)),
                }
            }
        }
        Ok(())
    }

    /// Every address in use and the pod that holds it.
    pub fn holders(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let entries =
            fs::read_dir(&self.dir).map_err(|source| Error::io("reading", &self.dir, source))?;
        let mut holders = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::io("reading", &self.dir, source))?;
            // Anything that is not an address (an editor's backup, say) is not ours to judge.
            let Some(address) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let holder =
                fs::read_to_string(&path).map_err(|source| Error::io("reading", &path, source))?;
            holders.push((address, holder));
        }
        Ok(holders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_survive_a_restart_and_are_reused_after_release() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cidr: Ipv4Net = "10.1.2.0/29".parse().expect("cidr");
        let ipam = Ipam::open(dir.path(), cidr).expect("open");
        let a = ipam.assign("pod-a").expect("a");
        let b = ipam.assign("pod-b").expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(b, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(ipam.assign("pod-a").expect("again"), a);

        let reopened = Ipam::open(dir.path(), cidr).expect("reopen");
        assert_eq!(reopened.address_of("pod-b").expect("lookup"), Some(b));
        reopened.release("pod-a").expect("release");
        assert_eq!(reopened.assign("pod-c").expect("c"), a);
    }

    #[test]
    fn a_full_range_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cidr: Ipv4Net = "10.1.2.0/30".parse().expect("cidr");
        let ipam = Ipam::open(dir.path(), cidr).expect("open");
        ipam.assign("pod-a").expect("the one free address");
        let error = ipam.assign("pod-b").expect_err("full");
        assert!(error.to_string().contains("10.1.2.0/30"), "{error}");
    }
}
