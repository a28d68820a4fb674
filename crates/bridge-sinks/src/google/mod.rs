//! The Google Calendar v3 target: deterministic event ids and the event
//! resource (pure), auth, a rate-limited retrying client with batching, and
//! the sink.
//!
//! See `sinks-api.md` A.3 (resource), A.4 (ids), A.5 (recurrence), A.7
//! (extendedProperties).

pub mod auth;
pub mod authorize;
pub mod batch;
pub mod client;
pub mod config;
pub mod error;
pub mod freebusy;
pub mod ids;
pub mod limit;
pub mod request;
pub mod resource;
pub mod sink;

pub use auth::{
    Authorization, CALENDAR_SCOPE, Credentials, DEFAULT_AUTH_URL, DEFAULT_TOKEN_URL, InstalledApp,
    Secret, ServiceAccountKey,
};
pub use client::{
    ApiRequest, ApiResponse, CallStats, GoogleClient, GoogleClientConfig, Listing, Method,
    calendar_path, event_path, events_path,
};
pub use error::GoogleError;

pub use ids::{event_id, instance_id, is_valid_event_id};
pub use resource::{GoogleOptions, Series, to_resource, to_resource_in};
pub use sink::{
    GoogleSink, GoogleSinkConfig, OnTargetDelete, TargetCalendar, series_id, stored_refresh_token,
    token_name,
};
