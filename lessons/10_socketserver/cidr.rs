//! Lesson 10: networks in CIDR notation, for the server's `--allow` (its
//! `verify_request`). Python has them in its `ipaddress` module; here they are a few
//! lines of bit masks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

// ANCHOR: cidr
/// A network in CIDR notation: `127.0.0.0/8`, `10.0.0.0/8`, `::1/128`, `fe80::/10`. A
/// bare address is a network of one (`/32`, `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Is `ip` in this network? An IPv4 client of a dual-stack IPv6 socket shows up as
    /// `::ffff:a.b.c.d`; it is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(network))
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(network)
            }
            _ => false,
        }
    }
}

/// Keeps the first `prefix` of the `width` low bits of `bits`, zeroes the rest.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("'{text}': '{address}' is not an IPv4 or IPv6 address"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= width)
                .ok_or_else(|| {
                    format!("'{text}': the prefix length must be a number from 0 to {width}")
                })?,
        };
        // Like Python's ipaddress.ip_network: host bits set is an error, probably a typo.
        let bits = match network {
            IpAddr::V4(ip) => u128::from(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        let masked = mask(bits, prefix, width);
        if masked != bits {
            let network = match network {
                IpAddr::V4(_) => IpAddr::from(u32::try_from(masked).unwrap_or(0).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
            };
            return Err(format!(
                "'{text}' has host bits set; the network is {network}/{prefix}"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `127.0.0.0/8,::1` to its networks.
pub fn parse_networks(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',').map(|part| part.trim().parse()).collect()
}
// ANCHOR_END: cidr

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_ipv4() {
        let loopback: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains(ip("127.0.0.1")));
        assert!(loopback.contains(ip("127.255.255.255")));
        assert!(!loopback.contains(ip("128.0.0.1")));
        assert!(!loopback.contains(ip("::1")));
        assert_eq!(loopback.to_string(), "127.0.0.0/8");
        let ten: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(!ten.contains(ip("127.0.0.1")));
        assert!(ten.contains(ip("10.200.3.4")));
        let odd: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.127")));
    }

    #[test]
    fn cidr_edges() {
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("::2")));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let every_v6: Cidr = "::/0".parse().unwrap();
        assert!(every_v6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn cidr_ipv6() {
        let link_local: Cidr = "fe80::/10".parse().unwrap();
        assert!(link_local.contains(ip("fe80::1")));
        assert!(link_local.contains(ip("febf::1")));
        assert!(!link_local.contains(ip("fec0::1")));
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
    }

    #[test]
    fn cidr_ipv4_mapped_clients_match_ipv4_networks() {
        let loopback: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains(ip("::ffff:127.0.0.1")));
        assert!(!loopback.contains(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn cidr_errors() {
        for bad in [
            "",
            "abc",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/8/9",
            "::/129",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        let typo = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(typo.contains("the network is 10.0.0.0/8"), "{typo}");
        let typo6 = "fe80::1/10".parse::<Cidr>().unwrap_err();
        assert!(typo6.contains("the network is fe80::/10"), "{typo6}");
    }

    #[test]
    fn network_lists() {
        let list = parse_networks("127.0.0.0/8, ::1").unwrap();
        assert_eq!(list.len(), 2);
        assert!(parse_networks("127.0.0.0/8,nope").is_err());
    }
}
