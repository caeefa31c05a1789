//! Source-address allowlist: load time of the real published range files and
//! lookup cost over the merged set.
//!
//! `cargo bench --bench ranges` measures; under `cargo test` (no `--bench`
//! argument) it runs once as a quick correctness check.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wif_proxy::config::{RangeFormat, RangeSourceConfig};
use wif_proxy::parse_ranges as parse;
use wif_proxy::IpSet;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"));
    let runs = if measuring { 7 } else { 1 };
    let mut sets = Vec::new();
    for (file, format) in [("azure-servicetags.json", RangeFormat::Azure), ("aws-ip-ranges.json", RangeFormat::Aws)] {
        let path = dir.join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipping {file}: {} not found", path.display());
            continue;
        };
        let src = RangeSourceConfig::unfiltered("bench", format);
        let mut times = Vec::new();
        let mut set = IpSet::default();
        let mut n = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let nets = parse(&src, black_box(&bytes)).expect("parses");
            set = IpSet::new(&nets);
            times.push(started.elapsed());
            n = nets.len();
        }
        let (v4, v6) = set.ranges();
        println!(
            "load {file}: {n} prefixes -> {v4} IPv4 + {v6} IPv6 merged ranges; median {:.1} ms (read + parse + merge)",
            median(times).as_secs_f64() * 1e3
        );
        sets.push((file, set));
    }

    // Lookups of pseudo-random addresses, half IPv4, half IPv6.
    let lookups: usize = if measuring { 4_000_000 } else { 1_000 };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ips: Vec<IpAddr> = (0..4096)
        .map(|i| {
            let r = next();
            if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(r as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from((u128::from(r) << 64) | u128::from(next()) | (0x2u128 << 124)))
            }
        })
        .collect();
    for (file, set) in &sets {
        let started = Instant::now();
        let mut hits = 0usize;
        for i in 0..lookups {
            hits += usize::from(set.contains(black_box(ips[i & 4095])));
        }
        let per = started.elapsed().as_nanos() as f64 / lookups as f64;
        println!("lookup in {file}: {per:.1} ns per lookup ({hits} of {lookups} inside)");
        assert!(hits < lookups);
    }
}
