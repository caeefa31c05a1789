//! Certificates from files, with hot reload: SNI picks the pair whose SANs
//! name the host (exact, then `*.` wildcard, else the first pair). The files
//! are polled every `reload_interval` and re-read on SIGHUP; a new set is
//! installed all at once or not at all, so a broken replacement is refused
//! with one log line and the previous pairs keep serving.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::cert::{fingerprint, load_pair, CertError, Loaded};
use super::Expiry;
use crate::config::CertificateFiles;

/// Serves certificates from files; swaps them atomically on change.
pub(super) struct FilesResolver {
    current: ArcSwap<CertMap>,
    expiry: Expiry,
    /// The configured files and the bytes last seen (loaded or refused).
    watched: Mutex<Vec<(CertificateFiles, Vec<u8>)>>,
}

#[derive(Default)]
struct CertMap {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for FilesResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FilesResolver")
    }
}

impl FilesResolver {
    /// Loads every pair; any that does not load is an error.
    pub(super) fn load(files: &[CertificateFiles], expiry: Expiry) -> Result<FilesResolver, CertError> {
        let mut loaded = Vec::new();
        let mut watched = Vec::new();
        for f in files {
            let (pair, fingerprint) = load_pair(f)?;
            loaded.push(pair);
            watched.push((f.clone(), fingerprint));
        }
        let r =
            FilesResolver { current: ArcSwap::from_pointee(CertMap::default()), expiry, watched: Mutex::new(watched) };
        r.install(&loaded);
        Ok(r)
    }

    fn install(&self, loaded: &[Loaded]) {
        let mut map = CertMap::default();
        let mut expiry = HashMap::new();
        for l in loaded {
            map.default.get_or_insert_with(|| Arc::clone(&l.key));
            for name in &l.names {
                expiry.entry(name.clone()).or_insert(l.not_after);
                match name.strip_prefix("*.") {
                    Some(base) => map.wildcard.entry(base.to_string()).or_insert_with(|| Arc::clone(&l.key)),
                    None => map.by_name.entry(name.clone()).or_insert_with(|| Arc::clone(&l.key)),
                };
            }
        }
        self.current.store(Arc::new(map));
        self.expiry.store(Arc::new(expiry));
    }

    /// Loads every pair again if any file changed; all or nothing.
    pub(super) fn reload(&self, files: &[CertificateFiles]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let same_files = watched.len() == files.len() && watched.iter().zip(files).all(|((w, _), f)| w == f);
        let changed = !same_files || watched.iter().any(|(f, seen)| fingerprint(f).is_ok_and(|now| now != *seen));
        if !changed {
            return;
        }
        let mut loaded = Vec::new();
        let mut next = Vec::new();
        for f in files {
            match load_pair(f) {
                Ok((pair, fp)) => {
                    loaded.push(pair);
                    next.push((f.clone(), fp));
                }
                Err(e) => {
                    tracing::error!("tls: new certificate refused, the previous one keeps serving: {e}");
                    // Remember what was refused so it is reported once, not every poll.
                    for (w, seen) in watched.iter_mut() {
                        if let Ok(fp) = fingerprint(w) {
                            *seen = fp;
                        }
                    }
                    return;
                }
            }
        }
        self.install(&loaded);
        *watched = next;
        tracing::info!(certificates = loaded.len(), "tls: certificates reloaded");
    }
}

impl ResolvesServerCert for FilesResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let map = self.current.load();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(k) = map.by_name.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, base)) = name.split_once('.') {
                if let Some(k) = map.wildcard.get(base) {
                    return Some(Arc::clone(k));
                }
            }
        }
        map.default.clone()
    }
}

/// Re-reads the files every `every` until the resolver is dropped.
pub(super) async fn poll_files(files: Weak<FilesResolver>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(f) = files.upgrade() else { return };
        let list: Vec<CertificateFiles> =
            f.watched.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(c, _)| c.clone()).collect();
        tokio::task::spawn_blocking(move || f.reload(&list)).await.ok();
    }
}
