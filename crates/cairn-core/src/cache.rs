//! Bounded, expiring copies of recent lookups, for the hot paths that would otherwise read the
//! same record from the database on every request (a bearer token, a datastore, an endpoint).
//!
//! Two rules make such a cache safe to put in front of a database that this process writes:
//! every write through this process empties it ([`LookupCache::clear`]), and a lookup that read
//! the database *before* such a write cannot store its stale answer *after* it. The second is a
//! generation number: [`LookupCache::get`] hands a miss the generation it saw, and
//! [`LookupCache::fill`] stores nothing if a clear happened since. Expiry (`ttl`) bounds how long
//! a change made by another server process sharing the database can go unseen here.
//!
//! The size is bounded too, because keys may come from the outside (an endpoint name in a URL):
//! at the bound, expired entries go first, then everything.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// See the module documentation.
#[derive(Debug)]
pub struct LookupCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    ttl: Option<Duration>,
    max_entries: usize,
}

#[derive(Debug)]
struct Inner<K, V> {
    entries: HashMap<K, (Instant, V)>,
    generation: u64,
}

/// A lookup that missed, carrying the generation it saw: pass it to [`LookupCache::fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Miss(u64);

impl<K: Eq + Hash, V: Clone> LookupCache<K, V> {
    /// Entries live `ttl` (`None`: until the next clear), at most `max_entries` of them.
    pub fn new(ttl: Option<Duration>, max_entries: usize) -> Self {
        LookupCache {
            inner: Mutex::new(Inner { entries: HashMap::new(), generation: 0 }),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    // Nothing a holder does can leave the map half-changed, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, at: Instant) -> bool {
        self.ttl.is_none_or(|ttl| at.elapsed() < ttl)
    }

    /// The value stored for `key` if it has not expired; otherwise what to fill it with.
    pub fn get<Q>(&self, key: &Q) -> Result<V, Miss>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.lock();
        match inner.entries.get(key) {
            Some((at, v)) if self.fresh(*at) => Ok(v.clone()),
            _ => Err(Miss(inner.generation)),
        }
    }

    /// Stores what a missed lookup found, unless the cache was cleared since the miss.
    pub fn fill(&self, miss: Miss, key: K, value: V) {
        let mut inner = self.lock();
        if inner.generation != miss.0 {
            return;
        }
        if inner.entries.len() >= self.max_entries {
            inner.entries.retain(|_, (at, _)| self.fresh(*at));
            if inner.entries.len() >= self.max_entries {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, (Instant::now(), value));
    }

    /// Forgets everything, and every lookup still in flight.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    /// How many entries are held (expired ones included until they are pushed out).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// The cached value of `key`, or `load`'s answer, stored when `keep` accepts it.
    pub async fn get_or_load<Q, E, Fut>(
        &self,
        key: &Q,
        load: impl FnOnce() -> Fut,
        keep: impl FnOnce(&V) -> bool,
    ) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let miss = match self.get(key) {
            Ok(hit) => return Ok(hit),
            Err(miss) => miss,
        };
        let value = load().await?;
        if keep(&value) {
            self.fill(miss, key.to_owned(), value.clone());
        }
        Ok(value)
    }

    /// A guard that clears the cache when dropped: a write holds one for its whole duration, so
    /// the cache is emptied once the write is done, whether it succeeded or not (a lookup during
    /// the write may otherwise keep the old state until the next clear).
    pub fn clear_after(&self) -> ClearOnDrop<'_, K, V> {
        ClearOnDrop(self)
    }
}

/// See [`LookupCache::clear_after`].
pub struct ClearOnDrop<'a, K: Eq + Hash, V: Clone>(&'a LookupCache<K, V>);

impl<K: Eq + Hash, V: Clone> Drop for ClearOnDrop<'_, K, V> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_after_a_clear_is_dropped() {
        let c: LookupCache<String, u32> = LookupCache::new(None, 10);
        let miss = c.get("a").unwrap_err();
        c.clear();
        c.fill(miss, "a".into(), 1);
        assert!(c.get("a").is_err(), "a lookup that began before the clear stored its answer");
        let miss = c.get("a").unwrap_err();
        c.fill(miss, "a".into(), 2);
        assert_eq!(c.get("a"), Ok(2));
    }

    #[test]
    fn entries_expire() {
        let c: LookupCache<&str, u32> = LookupCache::new(Some(Duration::from_millis(30)), 10);
        c.fill(c.get("a").unwrap_err(), "a", 1);
        assert_eq!(c.get("a"), Ok(1));
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get("a").is_err());
    }

    #[test]
    fn the_size_stays_bounded_and_fresh_entries_survive_a_sweep_of_expired_ones() {
        let c: LookupCache<u32, u32> = LookupCache::new(Some(Duration::from_millis(30)), 4);
        for k in 0..3 {
            c.fill(c.get(&k).unwrap_err(), k, k);
        }
        std::thread::sleep(Duration::from_millis(40));
        c.fill(c.get(&10).unwrap_err(), 10, 10);
        c.fill(c.get(&11).unwrap_err(), 11, 11);
        // The bound was reached at the fifth: the three expired went, the fresh one stayed.
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&10), Ok(10));
        for k in 100..1000 {
            c.fill(c.get(&k).unwrap_err(), k, k);
            assert!(c.len() <= 4);
        }
    }

    #[test]
    fn clear_after_clears_when_the_guard_goes() {
        let c: LookupCache<&str, u32> = LookupCache::new(None, 10);
        c.fill(c.get("a").unwrap_err(), "a", 1);
        {
            let _guard = c.clear_after();
            assert_eq!(c.get("a"), Ok(1));
        }
        assert_eq!(c.len(), 0);
    }
}
