//! Address ranges labelled with the first of several prefix lists that
//! contains them: which source a client belongs to, in one binary search.
//!
//! Built once per list of sources: each list's prefixes are merged, the
//! parts already claimed by an earlier list are cut away, and what is left
//! keeps the list's index. The result is one flat, sorted vector of disjoint
//! ranges per address family, as in [`IpSet`](super::ipset::IpSet), so a
//! lookup costs the same as a membership test.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ipset::{bounds, merge, num_like::One};

/// An immutable map from address ranges to the index of the first list
/// that contains them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpMap {
    v4: Vec<(u32, u32, u16)>,
    v6: Vec<(u128, u128, u16)>,
}

impl IpMap {
    /// Builds the map; list `i` labels its addresses `i` unless an earlier
    /// list has them. Lists past `u16::MAX` are ignored (sources come from
    /// configuration; there are a handful).
    pub fn new<'a>(lists: impl IntoIterator<Item = &'a [IpNet]>) -> IpMap {
        let (mut v4, mut v6) = (Labelled::default(), Labelled::default());
        for (i, nets) in lists.into_iter().enumerate().take(usize::from(u16::MAX)) {
            let (a, b) = bounds(nets);
            v4.add(merge(a), i as u16);
            v6.add(merge(b), i as u16);
        }
        IpMap { v4: v4.finish(), v6: v6.finish() }
    }

    /// The index of the first list that contains `ip` (IPv4-mapped IPv6
    /// addresses as the IPv4 address they are).
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<usize> {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

/// One family while the map is built: what is labelled, and everything
/// claimed so far (merged).
struct Labelled<T> {
    ranges: Vec<(T, T, u16)>,
    claimed: Vec<(T, T)>,
}

impl<T> Default for Labelled<T> {
    fn default() -> Self {
        Labelled { ranges: Vec::new(), claimed: Vec::new() }
    }
}

impl<T: Copy + Ord + One> Labelled<T> {
    /// Adds a merged list under `label`, minus what earlier lists claimed.
    fn add(&mut self, merged: Vec<(T, T)>, label: u16) {
        self.ranges.extend(subtract(&merged, &self.claimed).into_iter().map(|(s, e)| (s, e, label)));
        let mut all = std::mem::take(&mut self.claimed);
        all.extend(merged);
        self.claimed = merge(all);
    }

    /// Sorted, with adjacent ranges of one label joined.
    fn finish(mut self) -> Vec<(T, T, u16)> {
        self.ranges.sort_unstable();
        let mut out: Vec<(T, T, u16)> = Vec::with_capacity(self.ranges.len());
        for (start, end, label) in self.ranges {
            match out.last_mut() {
                Some(last) if last.2 == label && last.1.checked_inc() == Some(start) => last.1 = end,
                _ => out.push((start, end, label)),
            }
        }
        out.shrink_to_fit();
        out
    }
}

/// The parts of the sorted, disjoint ranges `a` outside the sorted,
/// disjoint ranges `b`.
fn subtract<T: Copy + Ord + One>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(start, end) in a {
        while j < b.len() && b[j].1 < start {
            j += 1;
        }
        let mut from = Some(start);
        let mut k = j;
        while let Some(s) = from {
            let Some(&(b_start, b_end)) = b.get(k).filter(|r| r.0 <= end) else { break };
            if b_start > s {
                out.push((s, b_start.dec()));
            }
            from = b_end.checked_inc().filter(|n| *n <= end).map(|n| n.max(s));
            k += 1;
        }
        if let Some(s) = from {
            out.push((s, end));
        }
    }
    out
}

#[inline]
fn find<T: Copy + Ord>(ranges: &[(T, T, u16)], x: T) -> Option<usize> {
    // First range starting after x; the one before it is the only candidate.
    let i = ranges.partition_point(|&(start, _, _)| start <= x);
    let &(_, end, label) = ranges.get(i.checked_sub(1)?)?;
    (x <= end).then_some(usize::from(label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ipset::parse_net;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_net(s).expect("net")).collect()
    }

    fn map(lists: &[&[&str]]) -> IpMap {
        let owned: Vec<Vec<IpNet>> = lists.iter().map(|l| nets(l)).collect();
        IpMap::new(owned.iter().map(|v| v.as_slice()))
    }

    #[test]
    fn the_first_list_that_contains_an_address_names_it() {
        let m = map(&[
            &["10.1.0.0/16", "2001:db8:1::/48"],
            &["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"],
            &["10.0.0.0/8", "172.16.0.0/12"],
        ]);
        for (ip, want) in [
            ("10.1.2.3", Some(0)),
            ("10.0.255.255", Some(1)),
            ("10.2.0.0", Some(1)),
            ("10.255.255.255", Some(1)),
            ("192.168.1.7", Some(1)),
            ("::ffff:192.168.1.7", Some(1)),
            ("172.31.255.255", Some(2)),
            ("2001:db8:1::5", Some(0)),
            ("2001:db8:2::5", Some(1)),
            ("192.168.1.8", None),
            ("9.255.255.255", None),
            ("2001:db9::", None),
        ] {
            assert_eq!(m.get(ip.parse().unwrap()), want, "{ip}");
        }
        assert_eq!(map(&[]).get("1.2.3.4".parse().unwrap()), None);
    }

    #[test]
    fn extremes_and_holes() {
        let m = map(&[&["0.0.0.0/32", "255.255.255.255/32", "128.0.0.0/24"], &["0.0.0.0/0", "::/0"], &["::1"]]);
        assert_eq!(m.get("0.0.0.0".parse().unwrap()), Some(0));
        assert_eq!(m.get("0.0.0.1".parse().unwrap()), Some(1));
        assert_eq!(m.get("127.255.255.255".parse().unwrap()), Some(1));
        assert_eq!(m.get("128.0.0.255".parse().unwrap()), Some(0));
        assert_eq!(m.get("128.0.1.0".parse().unwrap()), Some(1));
        assert_eq!(m.get("255.255.255.254".parse().unwrap()), Some(1));
        assert_eq!(m.get("255.255.255.255".parse().unwrap()), Some(0));
        assert_eq!(m.get("::1".parse().unwrap()), Some(1), "claimed by the earlier ::/0");
        assert_eq!(m.get("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()), Some(1));
    }

    /// Against the obvious linear scan, on many overlapping random lists.
    #[test]
    fn agrees_with_a_linear_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20 {
            let lists: Vec<Vec<IpNet>> = (0..4)
                .map(|_| {
                    (0..8)
                        .map(|_| {
                            let addr = std::net::Ipv4Addr::from((next() as u32) & 0x0fff_ffff);
                            IpNet::new(IpAddr::V4(addr), 8 + (next() % 25) as u8).expect("prefix").trunc()
                        })
                        .collect()
                })
                .collect();
            let m = IpMap::new(lists.iter().map(|v| v.as_slice()));
            for _ in 0..500 {
                let ip = IpAddr::V4(std::net::Ipv4Addr::from((next() as u32) & 0x0fff_ffff));
                let want = lists.iter().position(|l| l.iter().any(|n| n.contains(&ip)));
                assert_eq!(m.get(ip), want, "{ip} in {lists:?}");
            }
        }
    }
}
