//! What a listener bound to every interface (`0.0.0.0` or `::`) is reached at: the swarm
//! reports such a listener's addresses one at a time, an interface each, as it learns them, so
//! the first one (what `Client::listen` returns, often 127.0.0.1) is only one of several.
//! [`expand`] lists them all, from this host's interfaces at the moment it is called, for the
//! binaries' logs and `--addr-file`.

use std::net::IpAddr;

use libp2p::multiaddr::{Multiaddr, Protocol};

/// The addresses a listener asked for at `requested` and reported at `bound` (its first
/// address, with the real port) is reached at. When `requested` has an unspecified IP
/// (`0.0.0.0`, `::`): `bound` once for each of this host's interface addresses of that family
/// in place of its IP, loopback last, the others in address order; IPv6 link-local addresses
/// are left out (they cannot be dialled without a zone). Otherwise, or when the host's
/// interfaces cannot be read, `bound` alone.
pub fn expand(requested: &Multiaddr, bound: &Multiaddr) -> Vec<Multiaddr> {
    let unspecified = match requested.iter().next() {
        Some(Protocol::Ip4(ip)) if ip.is_unspecified() => IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) if ip.is_unspecified() => IpAddr::V6(ip),
        _ => return vec![bound.clone()],
    };
    let addr = bound;
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => {
            let ips = interfaces.iter().map(|i| i.ip()).collect::<Vec<_>>();
            let expanded = with_ips(addr, unspecified, ips);
            if expanded.is_empty() { vec![bound.clone()] } else { expanded }
        }
        Err(error) => {
            tracing::debug!(%error, "cannot list the network interfaces");
            vec![bound.clone()]
        }
    }
}

/// `addr` with each of `ips` of the family of `unspecified` in place of its first component,
/// sorted (loopback last) and without repeats.
fn with_ips(addr: &Multiaddr, unspecified: IpAddr, mut ips: Vec<IpAddr>) -> Vec<Multiaddr> {
    ips.retain(|ip| match (ip, unspecified) {
        (IpAddr::V4(_), IpAddr::V4(_)) => true,
        (IpAddr::V6(v6), IpAddr::V6(_)) => !v6.is_unicast_link_local(),
        _ => false,
    });
    ips.sort_by_key(|ip| (ip.is_loopback(), *ip));
    ips.dedup();
    ips.into_iter()
        .map(|ip| {
            let host = match ip {
                IpAddr::V4(v4) => Protocol::Ip4(v4),
                IpAddr::V6(v6) => Protocol::Ip6(v6),
            };
            std::iter::once(host).chain(addr.iter().skip(1)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_unspecified_ip_becomes_each_interface_ip_of_its_family() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "10.77.0.1", "::1", "fe80::1", "2001:db8::7", "192.168.1.4", "10.77.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let v4 = ma("/ip4/0.0.0.0/udp/4001/quic-v1");
        let got = with_ips(&v4, "0.0.0.0".parse().unwrap(), ips.clone());
        assert_eq!(
            got,
            vec![
                ma("/ip4/10.77.0.1/udp/4001/quic-v1"),
                ma("/ip4/192.168.1.4/udp/4001/quic-v1"),
                ma("/ip4/127.0.0.1/udp/4001/quic-v1")
            ]
        );
        let got = with_ips(&ma("/ip6/::/tcp/4001"), "::".parse().unwrap(), ips);
        assert_eq!(got, vec![ma("/ip6/2001:db8::7/tcp/4001"), ma("/ip6/::1/tcp/4001")], "no link-local");
    }

    #[test]
    fn a_specific_address_is_kept_and_every_interface_includes_loopback() {
        let a = ma("/ip4/127.0.0.1/tcp/4001");
        assert_eq!(expand(&a, &a), vec![a.clone()]);
        // The swarm reports 127.0.0.1 first for a listener on 0.0.0.0: the rest are added.
        let all = expand(&ma("/ip4/0.0.0.0/tcp/0"), &a);
        assert!(all.contains(&ma("/ip4/127.0.0.1/tcp/4001")), "{all:?}");
        assert!(all.iter().all(|a| !a.to_string().starts_with("/ip4/0.0.0.0")), "{all:?}");
    }
}
