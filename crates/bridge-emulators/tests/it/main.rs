//! Integration tests of the emulators over real loopback HTTP / WebSocket.

mod common;
mod ews;
mod ews_ntlm;
mod feishu_auth;
mod feishu_calendars;
mod feishu_events;
mod feishu_limits;
mod feishu_rooms;
mod feishu_webhook;
mod feishu_ws;
mod google_auth;
mod google_batch;
mod google_common;
mod google_events;
mod google_limits;
mod google_recurrence;
mod google_sync;
mod graph;
mod kit;
