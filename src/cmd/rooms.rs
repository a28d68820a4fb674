//! `feishu-bridge rooms …`: the meeting-room system (README "Meeting rooms").
//!
//! `list`, `bookings`, `explain`, `approve`, `decline`. With the store free
//! they work on it directly (an approval then waits in the outbox for the
//! daemon); while a daemon holds it they go through its admin endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bridge_rooms::doc::{BookingDoc, Status};
use bridge_rooms::{
    AdminDecision, BusyFn, Mapping, ProjectionRoom, ReplicaRoom, RoomCalendar, RoomView, Rooms,
    Selector, Settings,
};
use bridge_sinks::config::{RoomEnv, RoomTarget};
use bridge_store::Store;
use serde_json::{Value, json};

use crate::app;
use crate::config::Loaded;
use crate::config::rooms::{RoomMap, RoomSelector};
use crate::sinks::Handle;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, global = true, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Each mapped room, its effective booking rules and where they came from.
    List,
    /// Every booking and its current decision.
    Bookings {
        /// Only bookings waiting for `rooms approve|decline`.
        #[arg(long)]
        pending: bool,
    },
    /// Every decision of one booking and why (`<room>/<uid>/<original_time>`).
    Explain { booking: String },
    /// Accept a pending booking (conflicts are checked again).
    Approve { booking: String },
    /// Decline a pending booking.
    Decline {
        booking: String,
        /// Kept with the decision.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// The room system's settings from the configuration, with each mapping's
/// target built: a busy-only ICS file or feed per room through the
/// projection, or a sink of the mapping's replica kind pointed at the
/// room's own calendar (Google `calendar_id`) or mailbox (EWS, Graph).
/// `handles` are the daemon's sinks (a room feed is served by the feed sink
/// the daemon runs); without them a feed sink is built for the command.
pub(crate) async fn settings(
    loaded: &Loaded,
    store: &Store,
    handles: &[Handle],
) -> anyhow::Result<Option<Settings>> {
    let Some(r) = &loaded.rooms else {
        return Ok(None);
    };
    let mut maps = Vec::new();
    for m in &r.maps {
        let target = match m.sink {
            None => None,
            Some(i) => Some(target(loaded, store, handles, m, i).await?),
        };
        maps.push(Mapping {
            label: m.label.clone(),
            selector: match &m.selector {
                RoomSelector::Room(v) => Selector::Room(v.clone()),
                RoomSelector::Custom(v) => Selector::Custom(v.clone()),
                RoomSelector::Level(v) => Selector::Level(v.clone()),
            },
            target,
        });
    }
    Ok(Some(Settings {
        timezone: r.timezone,
        reply: r.reply,
        max_conflict_instances: r.max_conflict_instances,
        maps,
        refresh: Duration::from_secs(r.refresh_minutes * 60),
        retry_base: Duration::from_secs(r.retry_base_seconds),
        retry_max: Duration::from_secs(600),
    }))
}

/// The records of what a replica holds for the rooms: a state scope of
/// their own, next to the sink's.
fn room_state(store: &Store, sink_id: &str) -> Arc<dyn bridge_engine::StateStore> {
    Arc::new(bridge_engine::SinkState::new(
        store.clone(),
        format!("rooms@{sink_id}"),
    ))
}

async fn target(
    loaded: &Loaded,
    store: &Store,
    handles: &[Handle],
    m: &RoomMap,
    i: usize,
) -> anyhow::Result<Arc<dyn RoomCalendar>> {
    let configured = &loaded.sinks[i].target;
    let id = configured.id();
    // Validation guarantees it for the kinds that need it.
    let place = m.mailbox.as_deref().or(m.calendar_id.as_deref());
    let env = RoomEnv {
        sink: configured
            .build_env(store, &bridge_sinks::feed::FeedBook::new())
            .await?,
        running: handles.iter().find(|h| h.id() == id).map(Handle::built),
        room_state: room_state(
            store,
            &match place {
                Some(p) => format!("{id}/{p}"),
                None => id.clone(),
            },
        ),
    };
    let room = configured
        .config()
        .room(env, place)
        .map_err(|e| anyhow::anyhow!("{}: {e}", m.label))?;
    Ok(match room {
        RoomTarget::Projection { target, what } => Arc::new(ProjectionRoom::new(target, what)),
        RoomTarget::Replica {
            replica,
            busy,
            what,
        } => Arc::new(ReplicaRoom::new(
            replica,
            room_state(store, &id),
            busy.map(|b| Arc::new(BusyFn::new(b.what, move |from, to| (b.f)(from, to))) as _),
            what,
        )),
    })
}

/// The room system on `store` (no network until it is asked to).
pub(crate) async fn build(
    loaded: &Loaded,
    store: Store,
    handles: &[Handle],
) -> anyhow::Result<Option<Arc<Rooms>>> {
    let Some(settings) = settings(loaded, &store, handles).await? else {
        return Ok(None);
    };
    let client = Arc::new(app::feishu_client(loaded, app::client_config(loaded))?);
    Ok(Some(Arc::new(Rooms::new(client, store, settings))))
}

// ----- views shared with the daemon's admin routes ----------------------------------

pub(crate) fn booking_json(b: &BookingDoc) -> Value {
    let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
    v["id"] = json!(b.id());
    v
}

pub(crate) async fn list_json(rooms: &Rooms) -> anyhow::Result<Value> {
    let list: Vec<RoomView> = rooms.list().await?;
    Ok(json!({ "rooms": list }))
}

pub(crate) async fn bookings_json(rooms: &Rooms, pending: bool) -> anyhow::Result<Value> {
    let list: Vec<Value> = rooms
        .bookings()
        .await?
        .iter()
        .filter(|b| !pending || b.status == Status::Pending)
        .map(booking_json)
        .collect();
    Ok(json!({ "bookings": list }))
}

pub(crate) async fn decide_json(
    rooms: &Rooms,
    booking: &str,
    what: AdminDecision,
) -> anyhow::Result<Value> {
    let b = rooms.admin_decide(booking, what).await?;
    Ok(booking_json(&b))
}

// ----- text output -------------------------------------------------------------------

fn hhmm(s: i64) -> String {
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

#[allow(clippy::print_stdout)]
fn print_list(v: &Value) {
    let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
    if rooms.is_empty() {
        println!("no room mapped yet (the daemon reads the registry when it starts)");
    }
    for r in rooms {
        let room = &r["room"];
        let rules = &r["rules"];
        println!(
            "{} {} (capacity {}, custom id {:?}) [{}]",
            room["room_id"].as_str().unwrap_or(""),
            room["name"].as_str().unwrap_or(""),
            room["capacity"],
            room["custom_room_id"].as_str().unwrap_or(""),
            r["mapping"].as_str().unwrap_or("")
        );
        println!(
            "  target: {}",
            r["target"]
                .as_str()
                .unwrap_or("none (decisions and replies only)")
        );
        let t = &rules["time"];
        if t["enabled"].as_bool() == Some(true) {
            println!(
                "  time: {} days ahead, daily {}–{}, at most {} h   (from {})",
                t["days_in_advance"],
                hhmm(t["start_s"].as_i64().unwrap_or(0)),
                hhmm(t["end_s"].as_i64().unwrap_or(86_400)),
                t["max_duration_hours"],
                rules["time_from"].as_str().unwrap_or("")
            );
        } else {
            println!(
                "  time: no restrictions   (from {})",
                rules["time_from"].as_str().unwrap_or("")
            );
        }
        let s = &rules["scope"];
        if s["allow_all"].as_bool() == Some(true) {
            println!(
                "  who: everyone   (from {})",
                rules["scope_from"].as_str().unwrap_or("")
            );
        } else {
            println!(
                "  who: {} users, {} departments   (from {})",
                s["users"].as_array().map_or(0, Vec::len),
                s["departments"].as_array().map_or(0, Vec::len),
                rules["scope_from"].as_str().unwrap_or("")
            );
        }
        let a = &rules["approval"];
        if a["enabled"].as_bool() == Some(true) {
            println!(
                "  approval: {}   (from {})",
                if a["every_booking"].as_bool() == Some(true) {
                    "every booking".to_owned()
                } else {
                    format!("bookings longer than {} h", a["meeting_duration_hours"])
                },
                rules["approval_from"].as_str().unwrap_or("")
            );
        } else {
            println!(
                "  approval: none   (from {})",
                rules["approval_from"].as_str().unwrap_or("")
            );
        }
        println!(
            "  bookings: {} accepted, {} declined, {} pending",
            r["accepted"], r["declined"], r["pending"]
        );
    }
}

#[allow(clippy::print_stdout)]
fn print_bookings(v: &Value) {
    let list = v["bookings"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no bookings");
    }
    for b in list {
        let last = b["decisions"]
            .as_array()
            .and_then(|d| d.last())
            .cloned()
            .unwrap_or(Value::Null);
        println!(
            "{:<9} {}  {:?}  {}",
            b["status"].as_str().unwrap_or(""),
            b["id"].as_str().unwrap_or(""),
            b["summary"].as_str().unwrap_or(""),
            last["reasons"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .unwrap_or("")
        );
    }
}

#[allow(clippy::print_stdout)]
fn print_explain(b: &Value) {
    println!(
        "booking {}  {:?}  now {}",
        b["id"].as_str().unwrap_or(""),
        b["summary"].as_str().unwrap_or(""),
        b["status"].as_str().unwrap_or("")
    );
    println!(
        "  organizer {}, {} instance(s){}",
        b["organizer"]
            .as_array()
            .and_then(|o| o.first())
            .and_then(Value::as_str)
            .unwrap_or("(unknown)"),
        b["instances"].as_array().map_or(0, Vec::len),
        if b["series"].as_bool() == Some(true) {
            ", a series"
        } else {
            ""
        }
    );
    for d in b["decisions"].as_array().into_iter().flatten() {
        println!(
            "  decision {} ({}, at {}): {}",
            d["n"],
            d["trigger"].as_str().unwrap_or(""),
            d["at"],
            d["status"].as_str().unwrap_or("")
        );
        for r in d["reasons"].as_array().into_iter().flatten() {
            println!("    because: {}", r.as_str().unwrap_or(""));
        }
        for p in d["passed"].as_array().into_iter().flatten() {
            println!("    passed: {}", p.as_str().unwrap_or(""));
        }
        for r in d["replies"].as_array().into_iter().flatten() {
            println!(
                "    reply {} for original_time {}: {}",
                r["status"].as_str().unwrap_or(""),
                r["original_time"],
                r["state"].as_str().unwrap_or("")
            );
        }
    }
}

// ----- the command -------------------------------------------------------------------

/// Through the daemon's admin endpoint.
async fn via_daemon(loaded: &Loaded, what: &What) -> anyhow::Result<Value> {
    let (method, path, body) = match what {
        What::List => (reqwest::Method::GET, "/admin/rooms".to_owned(), None),
        What::Bookings { pending } => (
            reqwest::Method::GET,
            format!("/admin/rooms/bookings?pending={pending}"),
            None,
        ),
        What::Explain { booking } => (
            reqwest::Method::GET,
            "/admin/rooms/booking".to_owned(),
            Some(json!({ "booking": booking })),
        ),
        What::Approve { booking } => (
            reqwest::Method::POST,
            "/admin/rooms/decide".to_owned(),
            Some(json!({ "booking": booking, "approve": true })),
        ),
        What::Decline { booking, reason } => (
            reqwest::Method::POST,
            "/admin/rooms/decide".to_owned(),
            Some(json!({ "booking": booking, "approve": false, "reason": reason })),
        ),
    };
    let (url, mut req) = app::admin_request(loaded, method, &path, Duration::from_secs(60))?;
    if let Some(b) = body {
        if matches!(what, What::Explain { .. }) {
            req = req.query(&[("booking", b["booking"].as_str().unwrap_or(""))]);
        } else {
            req = req.json(&b);
        }
    }
    let resp = req.send().await.with_context(|| {
        format!("the store is in use (a daemon?) but its admin endpoint {url} does not answer")
    })?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .context("the daemon's answer is not JSON")?;
    if !status.is_success() {
        anyhow::bail!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("the daemon refused the request")
        );
    }
    Ok(v)
}

async fn direct(loaded: &Loaded, store: Store, what: &What) -> anyhow::Result<Value> {
    let rooms = build(loaded, store, &[])
        .await?
        .context("no [rooms] in the configuration")?;
    rooms.load_mapping().await?;
    Ok(match what {
        What::List => list_json(&rooms).await?,
        What::Bookings { pending } => bookings_json(&rooms, *pending).await?,
        What::Explain { booking } => booking_json(&rooms.find(booking).await?),
        What::Approve { booking } => decide_json(&rooms, booking, AdminDecision::Approve).await?,
        What::Decline { booking, reason } => {
            decide_json(
                &rooms,
                booking,
                AdminDecision::Decline {
                    reason: reason.clone(),
                },
            )
            .await?
        }
    })
}

/// Whether `explain`'s argument names a room booking.
pub(crate) fn is_booking_id(id: &str) -> bool {
    id.starts_with("omm_") && id.contains('/')
}

/// `explain <room>/<uid>/<original_time>`: as `rooms explain`.
pub(crate) async fn explain(
    config: &std::path::Path,
    booking: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    run(Args {
        config: config.to_owned(),
        json,
        what: What::Explain {
            booking: booking.to_owned(),
        },
    })
    .await
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    if loaded.rooms.is_none() {
        anyhow::bail!("no [rooms] section in {}", args.config.display());
    }
    let v = match app::open_store(&loaded).await {
        Ok(store) => direct(&loaded, store, &args.what).await?,
        Err(e) if app::is_locked(&e) => via_daemon(&loaded, &args.what).await?,
        Err(e) => return Err(e),
    };
    if args.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    match &args.what {
        What::List => print_list(&v),
        What::Bookings { .. } => print_bookings(&v),
        What::Explain { .. } | What::Approve { .. } | What::Decline { .. } => print_explain(&v),
    }
    Ok(ExitCode::SUCCESS)
}
