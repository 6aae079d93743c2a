//! Country of a client IP from the embedded RIR allocation table (`iptocc`); no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// ISO 3166-1 alpha-2 code of the country the address is allocated to. `None` for private,
/// loopback, link-local and other non-public addresses, and for unknown ones.
pub fn country(ip: IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let public = match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    };
    if !public {
        return None;
    }
    let code = iptocc::country_code(ip)?;
    let valid = code.len() == 2
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && !matches!(code, "ZZ" | "EU" | "AP");
    valid.then(|| code.to_owned())
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // 100.64.0.0/10 carrier-grade NAT
    let benchmarking = a == 198 && (b == 18 || b == 19);
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || benchmarking
        || a == 0
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    let documentation = first == 0x2001 && ip.segments()[1] == 0x0db8;
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || unique_local
        || link_local
        || documentation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("8.8.8.8", Some("US")),
            ("1.1.1.1", Some("AU")),
            ("1.0.16.1", Some("JP")),
            ("2001:4860:4860::8888", Some("US")),
            ("::ffff:8.8.8.8", Some("US")),
            ("10.0.0.1", None),
            ("172.16.5.4", None),
            ("192.168.1.1", None),
            ("127.0.0.1", None),
            ("169.254.1.1", None),
            ("100.64.0.1", None),
            ("0.0.0.0", None),
            ("255.255.255.255", None),
            ("192.0.2.1", None),
            ("::1", None),
            ("::", None),
            ("fe80::1", None),
            ("fd00::1", None),
            ("2001:db8::1", None),
            ("::ffff:192.168.0.1", None),
        ];
        for (ip, expected) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(country(ip).as_deref(), *expected, "{ip}");
        }
    }
}
