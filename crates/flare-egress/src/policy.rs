//! The egress policy: which addresses a tenant's connections may reach.
//!
//! Loopback, private, link-local (cloud metadata), CGNAT, multicast and
//! unspecified addresses are refused unless the operator allows private
//! addresses (`flare server --egress-allow-private`), and Flare's own ports
//! on any such address are refused always, so a function cannot drive
//! Flare's API from inside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a name may take to resolve: a resolver that hangs must not
/// hold a caller (an async callback, a function's proxy session) for ever.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an outbound connection was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The policy refuses the target: a host the function does not list,
    /// or an address it may not reach.
    #[error("{0}")]
    Denied(String),
    /// The target was allowed but could not be reached (no such name,
    /// refused, timed out).
    #[error("{0}")]
    Unreachable(String),
}

/// The egress policy of one server.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Allow loopback and private addresses (tests, a trusted LAN).
    pub allow_private: bool,
    /// Flare's own listening ports (router, API): never a target on a
    /// non-public address.
    pub own_ports: Vec<u16>,
}

/// Whether `ip` is an address on the public internet (as far as a static
/// table can tell).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT.
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking; 240.0.0.0/4, reserved.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // Addresses that carry an IPv4 address are as public as it is: NAT64
    // (64:ff9b::/96), 6to4 (2002::/16), IPv4-compatible (::/96).
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(v4(segments[6], segments[7]));
    }
    if first == 0x2002 {
        return is_public_v4(v4(segments[1], segments[2]));
    }
    if segments[..6] == [0; 6] {
        return is_public_v4(v4(segments[6], segments[7]));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32 documentation, 2001::/32 Teredo (a tunnel to an
        // IPv4 address it hides).
        || (first == 0x2001 && (segments[1] == 0x0db8 || segments[1] == 0)))
}

impl EgressPolicy {
    /// Whether a connection to `addr` is allowed; the reason when not.
    pub fn check(&self, addr: SocketAddr) -> Result<(), EgressError> {
        if is_public(addr.ip()) {
            return Ok(());
        }
        if self.own_ports.contains(&addr.port()) {
            return Err(EgressError::Denied(format!(
                "{addr} is one of Flare's own ports"
            )));
        }
        if !self.allow_private {
            return Err(EgressError::Denied(format!(
                "{addr} is a loopback, private or link-local address (the operator can allow them with --egress-allow-private)"
            )));
        }
        Ok(())
    }

    /// Resolves `host:port` once and checks every address; returns them
    /// all when every one is allowed, so the caller connects only to
    /// checked addresses.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| EgressError::Unreachable(format!("cannot resolve {host}: timed out")))?
                .map_err(|e| EgressError::Unreachable(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(EgressError::Unreachable(format!("{host} has no address")));
        }
        for addr in &addrs {
            self.check(*addr)?;
        }
        Ok(addrs)
    }

    /// Connects to `host:port`: resolved once, every address checked, then
    /// the first of those addresses that answers within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, EgressError> {
        let addrs = self.resolve(host, port).await?;
        connect_checked(&addrs, timeout).await
    }
}

/// Connects to the first of `addrs` (already checked) that answers.
async fn connect_checked(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, EgressError> {
    let mut why = String::new();
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => why = format!("cannot connect to {addr}: {e}"),
            Err(_) => why = format!("cannot connect to {addr}: timed out"),
        }
    }
    Err(EgressError::Unreachable(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for target in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "169.254.169.254:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[2002:a9fe:a9fe::1]:80",
            "[::127.0.0.1]:80",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80",
        ] {
            assert!(policy.check(addr(target)).is_err(), "{target}");
        }
        assert!(policy.check(addr("93.184.216.34:443")).is_ok());
        assert!(policy.check(addr("[2606:4700::1111]:443")).is_ok());
        assert!(policy.check(addr("[64:ff9b::5db8:d822]:443")).is_ok());
    }

    #[test]
    fn allowing_private_addresses_never_opens_flares_own_ports() {
        let policy = EgressPolicy {
            allow_private: true,
            own_ports: vec![8081],
        };
        assert!(policy.check(addr("127.0.0.1:9000")).is_ok());
        let err = policy
            .check(addr("127.0.0.1:8081"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("own ports"), "{err}");
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let policy = EgressPolicy::default();
        let err = policy
            .resolve("localhost", 80)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        let err = policy.resolve("[::1]", 80).await.unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }
}
