//! Integration tests of the Google client against the Google emulator over
//! loopback HTTP.

mod ews_ntlm;
mod google_auth;
mod google_batch;
mod google_common;
mod google_list;
