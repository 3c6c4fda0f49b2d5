//! Routes to the other nodes' podCIDRs (host-gw): one route per node, via that node's
//! InternalIP, kept equal to the set the caller asks for. Basalt's routes carry their own
//! protocol number, so the sync removes only routes it made and never touches anyone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::Error;

/// The protocol number on Basalt's routes (`ip route show proto 186`).
pub const PROTOCOL: u8 = 186;

/// Makes the routes in `handle`'s namespace for other nodes' podCIDRs exactly `wanted`
/// (podCIDR → the node's address).
pub async fn sync(handle: &Handle, wanted: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Result<(), Error> {
    let mut present: BTreeMap<Ipv4Net, (Ipv4Addr, rtnetlink::packet_route::route::RouteMessage)> =
        BTreeMap::new();
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes
        .try_next()
        .await
        .map_err(Error::netlink("listing routes"))?
    {
        if route.header.protocol != RouteProtocol::Other(PROTOCOL) {
            continue;
        }
        let mut destination = None;
        let mut gateway = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(address)) => {
                    destination = Some(*address)
                }
                RouteAttribute::Gateway(RouteAddress::Inet(address)) => gateway = Some(*address),
                _ => {}
            }
        }
        if let (Some(destination), Some(gateway)) = (destination, gateway)
            && let Ok(cidr) = Ipv4Net::new(destination, route.header.destination_prefix_length)
        {
            present.insert(cidr, (gateway, route));
        }
    }

    for (cidr, (gateway, route)) in present.iter() {
        if wanted.get(cidr) != Some(gateway) {
            handle
                .route()
                .del(route.clone())
                .execute()
                .await
                .map_err(Error::netlink(format!("removing the route to {cidr}")))?;
        }
    }
    for (cidr, gateway) in wanted {
        if present.get(cidr).map(|(present, _)| present) == Some(gateway) {
            continue;
        }
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(cidr.network(), cidr.prefix_len())
                    .gateway(*gateway)
                    .protocol(RouteProtocol::Other(PROTOCOL))
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("routing {cidr} via {gateway}")))?;
    }
    Ok(())
}

impl crate::PodNetwork {
    /// Routes other nodes' podCIDRs via their addresses (see [`sync`]).
    pub async fn route_nodes(&self, wanted: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Result<(), Error> {
        sync(&self.host, wanted).await
    }
}
