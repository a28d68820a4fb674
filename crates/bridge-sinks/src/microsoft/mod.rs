//! What the two Microsoft targets (EWS on premises, Graph for Exchange
//! Online) share: Windows time zones, the mapping of RRULEs to Microsoft's
//! recurrence patterns, and the names of the extended properties that tag
//! our items. Both targets use the same recurrence model (six patterns,
//! three ranges; `sinks-api.md` B.5 and B.12), so the mapping is written
//! once here and each target only spells it in its own wire format.

pub mod exact;
pub mod recurrence;
pub mod tag;
pub mod zones;
