//! Log lines on paths a client can drive (a refused request, a malformed event, a NACK) are
//! throttled: at most one line per interval from a call site (or per key, e.g. per xDS node),
//! and the next line says how many were held back, so a flood of bad input cannot flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled call site may write, unless it says otherwise.
pub const EVERY: Duration = Duration::from_secs(60);

/// Most keys a [`KeyedThrottle`] tracks; beyond them, the keys share one slot.
pub const MAX_KEYS: usize = 1024;

/// One line per interval from one call site.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// When the last line was written, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new(None) }
    }

    /// `Some(held back since the last line)` when a line may be written now; `None` (and this
    /// one counted as held back) otherwise.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(crate::clock::monotonic())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        slot(&mut s, now, self.every)
    }
}

/// One line per interval per key, for at most [`MAX_KEYS`] keys at a time.
#[derive(Debug)]
pub struct KeyedThrottle {
    every: Duration,
    state: Mutex<Keyed>,
}

#[derive(Debug, Default)]
struct Keyed {
    keys: HashMap<String, Option<(Instant, u64)>>,
    /// Keys beyond [`MAX_KEYS`] share this.
    others: Option<(Instant, u64)>,
    /// When quiet keys were last let go (at most once per interval: a flood of new keys must
    /// not sweep the map on every call).
    swept: Option<Instant>,
}

impl KeyedThrottle {
    /// At most one line per `every` per key.
    pub fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new(Keyed::default()) }
    }

    /// [`Throttle::allow`] for `key`.
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, crate::clock::monotonic())
    }

    fn allow_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Keyed { keys, others, swept } = &mut *s;
        if !keys.contains_key(key)
            && keys.len() >= MAX_KEYS
            && swept.is_none_or(|at| now.duration_since(at) >= self.every)
        {
            *swept = Some(now);
            // Keys quiet for a whole interval have nothing held back worth keeping.
            keys.retain(|_, v| v.is_some_and(|(last, held)| held > 0 || now.duration_since(last) < self.every));
        }
        if let Some(v) = keys.get_mut(key) {
            return slot(v, now, self.every);
        }
        if keys.len() >= MAX_KEYS {
            return slot(others, now, self.every);
        }
        keys.insert(key.to_string(), Some((now, 0)));
        Some(0)
    }
}

fn slot(s: &mut Option<(Instant, u64)>, now: Instant, every: Duration) -> Option<u64> {
    match s {
        Some((last, held)) if now.duration_since(*last) < every => {
            *held += 1;
            None
        }
        Some((_, held)) => {
            let n = *held;
            *s = Some((now, 0));
            Some(n)
        }
        None => {
            *s = Some((now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = crate::clock::monotonic();
        assert_eq!(t.allow_at(t0), Some(0));
        for i in 1..=40_000u64 {
            assert_eq!(t.allow_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(60)), Some(40_000));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn keys_have_their_own_interval_and_their_number_is_bounded() {
        let t = KeyedThrottle::new(Duration::from_secs(60));
        let t0 = crate::clock::monotonic();
        assert_eq!(t.allow_at("a", t0), Some(0));
        assert_eq!(t.allow_at("b", t0), Some(0));
        assert_eq!(t.allow_at("a", t0), None);
        // A flood of new keys: each of the first MAX_KEYS gets a line, the rest share one.
        let lines = (0..100_000).filter(|i| t.allow_at(&format!("node-{i}"), t0).is_some()).count();
        assert_eq!(lines, MAX_KEYS - 2 + 1);
        assert!(t.state.lock().unwrap().keys.len() <= MAX_KEYS);
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(60)), Some(1));
        // An interval later the quiet keys make room for new ones.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(t.allow_at("fresh", later), Some(0));
        assert!(t.state.lock().unwrap().keys.len() < MAX_KEYS);
    }
}
