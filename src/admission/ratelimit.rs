//! Request rate limits: one quota per client address and one for everybody.
//!
//! Built on governor's GCRA. Clients are keyed by address, IPv6 grouped by a
//! prefix (default /64: one subscriber, one bucket). The per-client state
//! store is ours, so its memory is bounded:
//!
//! * at most `max_clients` addresses are tracked; beyond that, new addresses
//!   share one bucket (strict by construction: everyone in it shares one
//!   client's quota), so an address-rotation flood cannot grow memory;
//! * a sweeper drops addresses idle long enough for their bucket to be full
//!   again (forgetting them changes nothing) and shrinks the map.
//!
//! Each tracked address costs about 100 bytes (key, GCRA state, last-seen
//! stamp, map overhead), so the default 100,000 addresses stay under ~10 MiB
//! (up to twice that transiently, before a sweep shrinks the table).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::net::ipset::IpSet;

/// A client's bucket key: an IPv4 address or an IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6(u128),
}

impl ClientKey {
    pub fn of(ip: IpAddr, v6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(u32::from(a)),
            IpAddr::V6(a) => {
                let mask = if v6_prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(v6_prefix.min(128))) };
                ClientKey::V6(u128::from(a) & mask)
            }
        }
    }
}

type Keyed = RateLimiter<ClientKey, CappedStore, DefaultClock, NoOpMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

/// The request rate limits of one configuration.
pub struct RateLimit {
    config: RateLimitConfig,
    per_client: Keyed,
    global: Direct,
    exempt: IpSet,
    clock: DefaultClock,
    /// Shares its map with the copy governor owns (governor keeps that private).
    store: CappedStore,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("config", &self.config).field("tracked", &self.tracked()).finish()
    }
}

impl RateLimit {
    /// Builds the limiter and starts its sweeper (which stops when it is dropped).
    pub fn new(config: &RateLimitConfig) -> Arc<RateLimit> {
        let clock = DefaultClock::default();
        let quota = |rate: u32, burst: u32| {
            Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        // A bucket is full again `burst / rate` seconds after its last use.
        let refill = Duration::from_secs_f64(f64::from(config.per_client_burst) / f64::from(config.per_client.max(1)));
        let store = CappedStore::new(config.max_clients, refill + Duration::from_secs(1));
        let limiter = Arc::new(RateLimit {
            per_client: RateLimiter::new(
                quota(config.per_client, config.per_client_burst),
                store.clone(),
                clock.clone(),
            ),
            store,
            global: RateLimiter::new(
                quota(config.global, config.global_burst),
                InMemoryState::default(),
                clock.clone(),
            ),
            exempt: config.exempt.clone(),
            config: config.clone(),
            clock,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep_forever(Arc::downgrade(&limiter)));
        }
        limiter
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Admits one request from `ip`, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.exempt.contains(ip) {
            return Ok(());
        }
        let key = ClientKey::of(ip, self.config.ipv6_prefix);
        self.per_client.check_key(&key).map_err(|n| n.wait_time_from(self.clock.now()))?;
        self.global.check().map_err(|n| n.wait_time_from(self.clock.now()))
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.store.map.len()
    }

    /// Forgets idle addresses and returns memory to the allocator.
    pub fn sweep(&self) {
        self.store.sweep();
    }
}

async fn sweep_forever(limiter: Weak<RateLimit>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match limiter.upgrade() {
            Some(l) => l.sweep(),
            None => return,
        }
    }
}

/// governor state store with a bound on tracked keys.
#[derive(Clone)]
pub struct CappedStore {
    map: Arc<DashMap<ClientKey, Tracked>>,
    cap: usize,
    overflow: Arc<Tracked>,
    idle_after: Duration,
    epoch: Instant,
}

#[derive(Default)]
struct Tracked {
    state: InMemoryState,
    /// Milliseconds since the store's epoch.
    last_seen: AtomicU64,
}

impl CappedStore {
    fn new(cap: usize, idle_after: Duration) -> CappedStore {
        CappedStore {
            map: Arc::new(DashMap::new()),
            cap,
            overflow: Arc::new(Tracked::default()),
            idle_after,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn sweep(&self) {
        let cutoff = self.now_ms().saturating_sub(self.idle_after.as_millis() as u64);
        self.map.retain(|_, t| t.last_seen.load(Ordering::Relaxed) >= cutoff);
        self.map.shrink_to_fit();
    }
}

impl StateStore for CappedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let now = self.now_ms();
        if let Some(t) = self.map.get(key) {
            t.last_seen.store(now, Ordering::Relaxed);
            return t.state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.map.len() >= self.cap {
            return self.overflow.state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let t = self.map.entry(*key).or_default();
        t.last_seen.store(now, Ordering::Relaxed);
        t.state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            per_client: 5,
            per_client_burst: 5,
            global: 1_000_000,
            global_burst: 1_000_000,
            ipv6_prefix: 64,
            exempt: IpSet::default(),
            max_clients,
        }
    }

    #[test]
    fn per_client_buckets_are_independent() {
        let l = RateLimit::new(&config(100));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert!(l.check(b).is_ok(), "another client is unaffected");
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let l = RateLimit::new(&config(100));
        for i in 0..5u16 {
            assert!(l.check(format!("2001:db8:1:2::{i:x}").parse().unwrap()).is_ok());
        }
        assert!(l.check("2001:db8:1:2:ffff::1".parse().unwrap()).is_err(), "same /64, same bucket");
        assert!(l.check("2001:db8:1:3::1".parse().unwrap()).is_ok(), "next /64");
    }

    #[test]
    fn address_rotation_cannot_grow_memory() {
        let l = RateLimit::new(&config(1000));
        let mut limited = 0;
        for i in 0..200_000u128 {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64));
            if l.check(IpAddr::V6(ip)).is_err() {
                limited += 1;
            }
        }
        assert!(l.tracked() <= 1000, "tracked {}", l.tracked());
        assert!(limited > 190_000, "overflow addresses share one strict bucket: {limited}");
    }

    #[test]
    fn idle_addresses_are_swept() {
        let l = RateLimit::new(&config(100));
        l.check("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(l.tracked(), 1);
        // Pretend the entry was last seen long ago.
        for t in l.store.map.iter() {
            t.last_seen.store(0, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5));
        let mut store = l.store.clone();
        store.idle_after = Duration::from_millis(1);
        store.sweep();
        assert_eq!(l.tracked(), 0);
    }
}
