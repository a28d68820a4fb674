//! End-to-end tests: the real `feishu-bridge` binary (one test binary).

mod commands;
mod convert;
mod daemon;
mod ews;
mod feeds;
mod feishu;
mod fidelity;
mod google;
mod graph;
mod hardening;
mod inspect;
mod listener;
mod output;
mod packaging;
mod paths;
mod reconcile_safety;
mod replica;
mod rooms;
mod sandbox;
mod store_damage;
