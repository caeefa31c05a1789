//! Connection caps: how many connections a set of listeners holds in all,
//! and how many of them one client address may hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps shared by the listeners that count against one budget (the
/// public listener and the plain-HTTP one beside it; the admin listener has
/// its own).
#[derive(Debug)]
pub struct ConnCaps {
    max: usize,
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

/// One admitted connection's place under the caps; freed when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    _total: OwnedSemaphorePermit,
    _per_ip: Option<PerIpSlot>,
}

impl ConnCaps {
    pub fn new(max: usize) -> Arc<ConnCaps> {
        Arc::new(ConnCaps { max, total: Arc::new(Semaphore::new(max)), per_ip: Arc::default() })
    }

    /// A place among `max` connections, taken before anything is read.
    pub fn try_total(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.total).try_acquire_owned().ok()
    }

    /// Adds the per-address count for `ip` to a place taken with
    /// [`try_total`](Self::try_total); `max_per_ip = None` counts nothing.
    pub fn admit(&self, total: OwnedSemaphorePermit, ip: IpAddr, max_per_ip: Option<usize>) -> Option<ConnSlot> {
        let per_ip = match max_per_ip {
            Some(max) => Some(self.per_ip.acquire(ip, max)?),
            None => None,
        };
        Some(ConnSlot { _total: total, _per_ip: per_ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.total.available_permits()
    }

    /// Waits up to `grace` for every connection to end; `false` if some are
    /// still open then.
    pub async fn drained(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.total.acquire_many(all)).await.is_ok()
    }
}

/// Open connections per client address. Bounded by `max_connections`
/// entries, since every entry is an open connection.
#[derive(Debug, Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
struct PerIpSlot {
    tracker: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut counts = self.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot { tracker: Arc::clone(self), ip })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.tracker.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_address_caps() {
        let caps = ConnCaps::new(3);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let one = caps.admit(caps.try_total().expect("room"), a, Some(1)).expect("first from a");
        assert!(caps.admit(caps.try_total().expect("room"), a, Some(1)).is_none(), "second from a");
        let two = caps.admit(caps.try_total().expect("room"), b, Some(1)).expect("b");
        let three = caps.admit(caps.try_total().expect("room"), a, None).expect("a, uncapped");
        assert!(caps.try_total().is_none(), "total reached");
        assert_eq!(caps.open(), 3);
        drop((one, two, three));
        assert_eq!(caps.open(), 0);
        assert!(caps.admit(caps.try_total().expect("room"), a, Some(1)).is_some(), "a's count was freed");
    }
}
