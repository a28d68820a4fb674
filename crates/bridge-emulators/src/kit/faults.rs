//! Fault injection: deterministic one-shot faults matched by path
//! (`fail_next`) and seeded dice for random ones. What a fault looks like on
//! the wire is the service's business ([`super::Service::fault_answer`]);
//! the kit only decides when one happens and applies delays and truncation.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;

/// What the kit does with a fault before the service sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The service answers with its own error shape instead of the handler.
    Answer,
    /// The handler answers normally after this delay (client timeouts).
    Delay(Duration),
    /// The handler answers normally, the body cut in half.
    Truncate,
}

/// A service's deterministic fault (its public `FaultKind`).
pub(crate) trait Fault: Clone + Send + Sync + 'static {
    fn effect(&self) -> Effect;
}

/// A service's random-fault settings (its public `Faults`).
pub(crate) trait RandomFaults: Clone + Default + DeserializeOwned + Send + 'static {
    type Fault: Fault;
    /// Seed of the dice (random when `None`).
    fn seed(&self) -> Option<u64>;
    /// The random fault of one eligible request, if the dice say so.
    fn roll(&self, dice: &mut Dice) -> Option<Self::Fault>;
}

/// Seeded dice.
#[derive(Debug)]
pub(crate) struct Dice(StdRng);

impl Default for Dice {
    /// Seeded from the OS.
    fn default() -> Self {
        Self::new(None)
    }
}

impl Dice {
    fn new(seed: Option<u64>) -> Self {
        Self(match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        })
    }

    /// True with probability `p`.
    pub(crate) fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.0.random_bool(p.min(1.0))
    }

    /// Rolls for each `(probability, fault)` in order; the first hit wins
    /// (later ones are not rolled, so a seed replays the same faults).
    pub(crate) fn first<K>(&mut self, chances: impl IntoIterator<Item = (f64, K)>) -> Option<K> {
        chances
            .into_iter()
            .find(|(p, _)| self.roll(*p))
            .map(|(_, k)| k)
    }
}

#[derive(Debug)]
struct OneShot<K> {
    path_contains: String,
    remaining: usize,
    kind: K,
}

/// The random-fault settings, the dice and the queued one-shot faults.
#[derive(Debug)]
pub(crate) struct FaultState<R: RandomFaults> {
    settings: R,
    dice: Dice,
    one_shots: VecDeque<OneShot<R::Fault>>,
}

impl<R: RandomFaults> Default for FaultState<R> {
    fn default() -> Self {
        Self {
            settings: R::default(),
            dice: Dice::default(),
            one_shots: VecDeque::new(),
        }
    }
}

impl<R: RandomFaults> FaultState<R> {
    /// New random-fault settings; re-seeds the dice from them.
    pub(crate) fn set(&mut self, settings: R) {
        self.dice = Dice::new(settings.seed());
        self.settings = settings;
    }

    /// The next `n` requests whose path contains `path_contains` get `kind`.
    pub(crate) fn fail_next(&mut self, path_contains: &str, n: usize, kind: R::Fault) {
        if n > 0 {
            self.one_shots.push_back(OneShot {
                path_contains: path_contains.to_owned(),
                remaining: n,
                kind,
            });
        }
    }

    /// Rolls the dice with the probability `p` picks from the settings
    /// (faults outside the request path: dropped sockets, duplicates).
    pub(crate) fn roll(&mut self, p: impl FnOnce(&R) -> f64) -> bool {
        let p = p(&self.settings);
        self.dice.roll(p)
    }

    /// The fault (if any) for a request to `path`: a queued one-shot first,
    /// random ones only when `random_eligible`.
    pub(crate) fn pick(&mut self, path: &str, random_eligible: bool) -> Option<R::Fault> {
        if let Some(pos) = self
            .one_shots
            .iter()
            .position(|o| path.contains(&o.path_contains))
        {
            let shot = &mut self.one_shots[pos];
            shot.remaining -= 1;
            let kind = shot.kind.clone();
            if shot.remaining == 0 {
                self.one_shots.remove(pos);
            }
            return Some(kind);
        }
        if !random_eligible {
            return None;
        }
        self.settings.roll(&mut self.dice)
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
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct K(u8);

    impl Fault for K {
        fn effect(&self) -> Effect {
            Effect::Answer
        }
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    struct Half {
        rate: f64,
        seed: Option<u64>,
    }

    impl RandomFaults for Half {
        type Fault = K;
        fn seed(&self) -> Option<u64> {
            self.seed
        }
        fn roll(&self, dice: &mut Dice) -> Option<K> {
            dice.first([(0.0, K(8)), (self.rate, K(9))])
        }
    }

    #[test]
    fn one_shots_are_used_up_in_order_and_by_path() {
        let mut d = FaultState::<Half>::default();
        d.fail_next("/events", 2, K(1));
        d.fail_next("/calendars", 1, K(2));
        d.fail_next("/never", 0, K(3));
        assert_eq!(d.pick("/x/calendars/c", false), Some(K(2)));
        assert_eq!(d.pick("/x/calendars/c", false), None);
        assert_eq!(d.pick("/c/events", false), Some(K(1)));
        assert_eq!(d.pick("/c/events", false), Some(K(1)));
        assert_eq!(d.pick("/c/events", true), None, "rate 0 never fires");
    }

    #[test]
    fn seeded_dice_repeat_and_only_hit_eligible_requests() {
        let seeded = Half {
            rate: 0.5,
            seed: Some(7),
        };
        let (mut a, mut b) = (FaultState::<Half>::default(), FaultState::default());
        a.set(seeded.clone());
        b.set(seeded);
        let ra: Vec<_> = (0..50).map(|_| a.pick("/p", true)).collect();
        let rb: Vec<_> = (0..50).map(|_| b.pick("/p", true)).collect();
        assert_eq!(ra, rb);
        assert!(ra.contains(&Some(K(9))) && ra.contains(&None));
        assert_eq!(a.pick("/p", false), None);
        assert!(!a.roll(|_| 0.0));
        assert!(a.roll(|_| 1.0));
    }
}
