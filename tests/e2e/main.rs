//! End-to-end tests: the real `feishu-bridge` binary (one test binary).

mod commands;
mod convert;
mod daemon;
mod ews;
mod feishu;
mod google;
mod hardening;
mod inspect;
mod listener;
mod output;
mod packaging;
mod paths;
mod reconcile_safety;
mod sandbox;
mod store_damage;
