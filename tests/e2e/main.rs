//! End-to-end tests: the real `feishu-bridge` binary (one test binary).

mod commands;
mod convert;
mod daemon;
mod feishu;
mod google;
mod hardening;
mod listener;
mod output;
mod reconcile_safety;
mod rooms;
mod store_damage;
