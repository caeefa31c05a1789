//! A set of IP address ranges with O(log n) membership.
//!
//! Prefixes are turned into inclusive integer ranges, sorted and merged once;
//! a lookup is one binary search over a flat vector. IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`, as a dual-stack listener reports IPv4 peers)
//! are looked up as the IPv4 address they are.

use std::net::IpAddr;

use ipnet::IpNet;

/// An immutable, merged set of address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Builds the set from any prefixes (duplicates and overlaps are fine).
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> IpSet {
        let (v4, v6) = bounds(nets);
        IpSet { v4: merge(v4), v6: merge(v6) }
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Number of merged ranges (IPv4, IPv6).
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

/// The inclusive integer ranges of `nets`, by family, unsorted.
#[allow(clippy::type_complexity)]
pub(super) fn bounds<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> (Vec<(u32, u32)>, Vec<(u128, u128)>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        match net.trunc() {
            IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    (v4, v6)
}

/// Sorts `ranges` and merges the overlapping and adjacent ones.
pub(super) fn merge<T: Copy + Ord + num_like::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent: extend.
            Some(last) if start <= last.1 || last.1.checked_inc() == Some(start) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // First range starting after x; the one before it is the only candidate.
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && x <= ranges[i - 1].1
}

pub(super) mod num_like {
    pub trait One: Sized {
        fn checked_inc(self) -> Option<Self>;
        /// `self - 1`; the caller knows `self` is not zero.
        fn dec(self) -> Self;
    }
    impl One for u32 {
        fn checked_inc(self) -> Option<Self> {
            self.checked_add(1)
        }
        fn dec(self) -> Self {
            self - 1
        }
    }
    impl One for u128 {
        fn checked_inc(self) -> Option<Self> {
            self.checked_add(1)
        }
        fn dec(self) -> Self {
            self - 1
        }
    }
}

/// Parses a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        let v: Vec<IpNet> = nets.iter().map(|s| parse_net(s).expect("net")).collect();
        IpSet::new(&v)
    }

    #[test]
    fn membership_and_merging() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8", "192.168.1.7", "2001:db8::/32", "10.0.0.5/8"]);
        assert_eq!(s.ranges(), (2, 1), "overlapping and adjacent IPv4 ranges merge");
        for ip in ["10.0.0.0", "11.255.255.255", "192.168.1.7", "2001:db8::1", "::ffff:10.2.3.4"] {
            assert!(s.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["9.255.255.255", "12.0.0.0", "192.168.1.8", "2001:db9::", "::1"] {
            assert!(!s.contains(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn extremes() {
        let s = set(&["0.0.0.0/0", "::/0"]);
        assert!(s.contains("255.255.255.255".parse().unwrap()));
        assert!(s.contains("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()));
        assert!(!IpSet::default().contains("1.2.3.4".parse().unwrap()));
    }
}
