//! End-to-end tests: the real `feishu-bridge` binary (one test binary).

mod commands;
mod convert;
mod daemon;
mod ews;
mod ews_more;
mod ews_ntlm;
mod feeds;
mod feishu;
mod fidelity;
mod google;
mod graph;
mod graph_more;
mod hardening;
mod inspect;
mod listener;
mod output;
mod packaging;
mod paths;
mod reconcile_safety;
mod replica;
mod rooms;
mod rooms_replica;
mod sandbox;
mod store_damage;
