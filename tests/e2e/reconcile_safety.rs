//! Reconcile safety end to end (being written).
