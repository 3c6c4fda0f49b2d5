//! Pod networking for Basalt's kubelet, with rtnetlink and no CNI binaries.
//!
//! Each pod gets a network namespace pinned under the kubelet's state directory, a veth pair
//! whose pod end is `eth0`, and an address from the node's podCIDR. The host side is routed,
//! not bridged: the pod holds its address as a /32 and reaches everything through a
//! link-local gateway (169.254.1.1) that only exists as a permanent neighbour entry pointing at
//! the host end's MAC; the host holds a /32 route and a permanent neighbour entry for the pod.
//! Nothing ever ARPs, no address is spent on a gateway, and a pod sees no other pod's L2
//! traffic — the choice Calico makes, for the same reasons. Forwarding between pods and nodes
//! is the node's job (`ip_forward`), which [`PodNetwork::open`] turns on.
//!
//! This crate owns namespaces, links, addresses, routes and IPAM; it does not know about pods
//! beyond their UIDs, and routes to other nodes' podCIDRs live in [`routes`].

mod ipam;
mod netns;
pub mod routes;

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha2::{Digest, Sha256};

pub use ipam::Ipam;

/// The pods' gateway: never assigned to an interface, only resolved by a static neighbour.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What can go wrong setting up or tearing down a pod's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or namespace operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("{action}: {source}")]
    Netlink {
        /// What was being done.
        action: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The podCIDR has no free address left.
    #[error("no free address left in the node's podCIDR {0}")]
    Exhausted(Ipv4Net),
}

impl Error {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
        let action = action.into();
        move |source| Error::Netlink { action, source }
    }
}

/// A pod's place on the network once set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// The pinned network namespace, for the OCI spec's `linux.namespaces[].path`.
    pub netns: PathBuf,
}

/// The pod networks of one node.
#[derive(Debug)]
pub struct PodNetwork {
    netns_dir: PathBuf,
    ipam: Ipam,
    host: Handle,
}

impl PodNetwork {
    /// Opens the pod networks kept under `state_dir` for a node with `pod_cidr`, in the
    /// network namespace this process runs in (the node's).
    pub async fn open(state_dir: &Path, pod_cidr: Ipv4Net) -> Result<PodNetwork, Error> {
        let netns_dir = state_dir.join("netns");
        fs::create_dir_all(&netns_dir)
            .map_err(|source| Error::io("creating", &netns_dir, source))?;
        let forwarding = Path::new("/proc/sys/net/ipv4/ip_forward");
        fs::write(forwarding, "1").map_err(|source| Error::io("writing", forwarding, source))?;
        let (connection, host, _) = rtnetlink::new_connection().map_err(|source| {
            Error::io(
                "opening netlink in",
                Path::new("the node's namespace"),
                source,
            )
        })?;
        tokio::spawn(connection);
        Ok(PodNetwork {
            netns_dir,
            ipam: Ipam::open(state_dir, pod_cidr)?,
            host,
        })
    }

    /// Where the namespace of pod `uid` is pinned.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(uid)
    }

    /// The node's end of pod `uid`'s veth pair (its counters are the pod's traffic, with
    /// receive and transmit swapped).
    pub fn host_interface(uid: &str) -> String {
        Names::of(uid).host
    }

    /// The address pod `uid` holds, if its network was set up.
    pub fn address_of(&self, uid: &str) -> Result<Option<Ipv4Addr>, Error> {
        self.ipam.address_of(uid)
    }

    /// The UIDs of every pod with a network on this node, whatever the API says.
    pub fn pods(&self) -> Result<Vec<String>, Error> {
        let mut pods: Vec<String> = self
            .ipam
            .holders()?
            .into_iter()
            .map(|(_, holder)| holder)
            .collect();
        let entries = fs::read_dir(&self.netns_dir)
            .map_err(|source| Error::io("reading", &self.netns_dir, source))?;
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                pods.push(name.to_string());
            }
        }
        pods.sort();
        pods.dedup();
        Ok(pods)
    }

    /// Sets up pod `uid`'s network, or finishes a half-done setup; returns its address.
    pub async fn set_up(&self, uid: &str) -> Result<PodAddress, Error> {
        let ip = self.ipam.assign(uid)?;
        let netns = self.netns_path(uid);
        let pod = netns::create(&netns).await?;
        let names = Names::of(uid);

        // A pair left by an interrupted setup is replaced, not patched up.
        if let Some(index) = link_index(&self.host, &names.host).await? {
            self.host
                .link()
                .del(index)
                .execute()
                .await
                .map_err(Error::netlink(format!(
                    "deleting the stale link {}",
                    names.host
                )))?;
        }
        if let Some(index) = link_index(&pod, "eth0").await? {
            pod.link()
                .del(index)
                .execute()
                .await
                .map_err(Error::netlink("deleting the pod's stale eth0"))?;
        }

        let netns_file =
            fs::File::open(&netns).map_err(|source| Error::io("opening", &netns, source))?;
        // The pod end is born in the pod's namespace, so it never appears on the host.
        let peer = LinkUnspec::new_with_name("eth0")
            .address(names.pod_mac.to_vec())
            .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&netns_file))
            .build();
        let pair = LinkVeth::new(&names.host, "eth0")
            .address(names.host_mac.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .up()
            .build();
        self.host
            .link()
            .add(pair)
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "creating the veth pair {}",
                names.host
            )))?;
        drop(netns_file);
        let host_index =
            link_index(&self.host, &names.host)
                .await?
                .ok_or_else(|| Error::Netlink {
                    action: format!("finding {} after creating it", names.host),
                    source: rtnetlink::Error::RequestFailed,
                })?;
        self.host
            .neighbours()
            .add(host_index, ip.into())
            .link_layer_address(&names.pod_mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("adding the neighbour {ip}")))?;
        self.host
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(ip, 32)
                    .output_interface(host_index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("routing {ip} to {}", names.host)))?;

        configure_pod_side(&pod, ip, names.host_mac).await?;
        Ok(PodAddress { ip, netns })
    }

    /// Removes pod `uid`'s network and frees its address; what is already gone is skipped.
    pub async fn tear_down(&self, uid: &str) -> Result<(), Error> {
        let names = Names::of(uid);
        // Deleting the host end takes the pod end, the route and the neighbour with it.
        if let Some(index) = link_index(&self.host, &names.host).await? {
            self.host
                .link()
                .del(index)
                .execute()
                .await
                .map_err(Error::netlink(format!("deleting {}", names.host)))?;
        }
        netns::remove(&self.netns_path(uid))?;
        self.ipam.release(uid)
    }
}

async fn configure_pod_side(pod: &Handle, ip: Ipv4Addr, gateway_mac: [u8; 6]) -> Result<(), Error> {
    let lo = link_index(pod, "lo").await?;
    if let Some(lo) = lo {
        pod.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(Error::netlink("bringing the pod's lo up"))?;
    }
    let eth0 = link_index(pod, "eth0")
        .await?
        .ok_or_else(|| Error::Netlink {
            action: "finding the pod's eth0".to_string(),
            source: rtnetlink::Error::RequestFailed,
        })?;
    pod.address()
        .add(eth0, ip.into(), 32)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!("adding {ip}/32 to the pod's eth0")))?;
    pod.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(Error::netlink("bringing the pod's eth0 up"))?;
    pod.neighbours()
        .add(eth0, GATEWAY.into())
        .link_layer_address(&gateway_mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink("adding the gateway's neighbour entry"))?;
    pod.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(GATEWAY, 32)
                .output_interface(eth0)
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(Error::netlink("routing the gateway"))?;
    pod.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(GATEWAY)
                .output_interface(eth0)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(Error::netlink("adding the pod's default route"))?;
    Ok(())
}

/// The index of the link called `name` in `handle`'s namespace, if there is one.
async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers a lookup by a name it does not have with ENODEV.
        Err(rtnetlink::Error::NetlinkError(message))
            if message.raw_code() == -nix::libc::ENODEV =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Netlink {
            action: format!("looking up {name}"),
            source,
        }),
    }
}

/// The host end's name and both MACs, derived from the pod's UID so that a restarted kubelet
/// finds them again without keeping them anywhere.
struct Names {
    host: String,
    host_mac: [u8; 6],
    pod_mac: [u8; 6],
}

impl Names {
    fn of(uid: &str) -> Names {
        let digest = Sha256::digest(uid.as_bytes());
        let hex: String = digest[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        // Locally administered, unicast.
        let mac = |seed: &[u8]| [0x0a, 0x58, seed[0], seed[1], seed[2], seed[3]];
        Names {
            // IFNAMSIZ leaves 15 characters.
            host: format!("bsl{}", &hex[..12]),
            host_mac: mac(&digest[6..10]),
            pod_mac: mac(&digest[10..14]),
        }
    }
}
