//! Fault injection shared by the emulators: deterministic one-shot faults
//! matched by path, and seeded dice for random ones.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
struct OneShot<K> {
    path_contains: String,
    remaining: usize,
    kind: K,
}

/// One-shot faults (in the order they were queued) plus the dice.
#[derive(Debug)]
pub(crate) struct Dice<K> {
    rng: StdRng,
    one_shots: VecDeque<OneShot<K>>,
}

impl<K> Default for Dice<K> {
    fn default() -> Self {
        Self {
            rng: StdRng::from_os_rng(),
            one_shots: VecDeque::new(),
        }
    }
}

impl<K: Clone> Dice<K> {
    /// Re-seeds the dice (`None`: from the OS) for reproducible runs.
    pub(crate) fn reseed(&mut self, seed: Option<u64>) {
        self.rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
    }

    /// The next `n` requests whose path contains `path_contains` get `kind`.
    pub(crate) fn fail_next(&mut self, path_contains: &str, n: usize, kind: K) {
        if n > 0 {
            self.one_shots.push_back(OneShot {
                path_contains: path_contains.to_owned(),
                remaining: n,
                kind,
            });
        }
    }

    /// True with probability `p`.
    pub(crate) fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// Takes one queued fault matching `path`, if any.
    pub(crate) fn take_one_shot(&mut self, path: &str) -> Option<K> {
        let pos = self
            .one_shots
            .iter()
            .position(|o| path.contains(&o.path_contains))?;
        let shot = &mut self.one_shots[pos];
        shot.remaining -= 1;
        let kind = shot.kind.clone();
        if shot.remaining == 0 {
            self.one_shots.remove(pos);
        }
        Some(kind)
    }
}

/// Durations as integer milliseconds on the control APIs.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shots_are_used_up_in_order_and_by_path() {
        let mut d = Dice::<u8>::default();
        d.fail_next("/events", 2, 1);
        d.fail_next("/calendars", 1, 2);
        assert_eq!(d.take_one_shot("/x/calendars/c"), Some(2));
        assert_eq!(d.take_one_shot("/x/calendars/c"), None);
        assert_eq!(d.take_one_shot("/c/events"), Some(1));
        assert_eq!(d.take_one_shot("/c/events"), Some(1));
        assert_eq!(d.take_one_shot("/c/events"), None);
    }

    #[test]
    fn seeded_dice_repeat() {
        let (mut a, mut b) = (Dice::<u8>::default(), Dice::<u8>::default());
        a.reseed(Some(7));
        b.reseed(Some(7));
        let ra: Vec<bool> = (0..50).map(|_| a.roll(0.5)).collect();
        let rb: Vec<bool> = (0..50).map(|_| b.roll(0.5)).collect();
        assert_eq!(ra, rb);
        assert!(!a.roll(0.0));
        assert!(a.roll(1.0));
    }
}
