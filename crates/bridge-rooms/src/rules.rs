//! Booking rules: what each node (room or level) sets, and the effective
//! rules of a room resolved through its level path.
//!
//! Resolution (the reading `rooms.md` §5 supports; the emulator implements
//! the same): walk from the tenant root down to the room; a node's own
//! sub-object (`approve_config`, `time_config`, `reserve_scope_config`)
//! replaces the inherited one, except that a level whose sub-object has
//! `if_cover_child_scope` set overrides every descendant's own (the walk
//! stops taking that sub-object below it). Nodes that set nothing inherit.
//! The tenant root's answer, or the documented defaults when even that is
//! missing, starts the walk.

use bridge_feishu::hint::UserIds;
use bridge_feishu::rooms::NodeRules;
use serde::{Deserialize, Serialize};

/// `approve_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub enabled: bool,
    /// `approval_condition = 0`: every booking needs approval; otherwise
    /// only bookings longer than `meeting_duration_hours`.
    pub every_booking: bool,
    pub meeting_duration_hours: f64,
    pub approvers: Vec<String>,
}

impl Default for ApprovalRule {
    fn default() -> Self {
        Self {
            enabled: false,
            every_booking: true,
            meeting_duration_hours: 99.0,
            approvers: Vec::new(),
        }
    }
}

/// `time_config`; seconds of day in the configured `[rooms] timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRule {
    pub enabled: bool,
    pub days_in_advance: i64,
    pub opening_hour_s: i64,
    pub start_s: i64,
    pub end_s: i64,
    pub max_duration_hours: i64,
    pub cover_children: bool,
}

impl Default for TimeRule {
    fn default() -> Self {
        Self {
            enabled: false,
            days_in_advance: 365,
            opening_hour_s: 28_800,
            start_s: 0,
            end_s: 86_400,
            max_duration_hours: 2,
            cover_children: false,
        }
    }
}

/// `reserve_scope_config`: who may book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRule {
    pub allow_all: bool,
    /// Any id of each allowed user (open_id, user_id, union_id).
    pub users: Vec<Vec<String>>,
    /// open_department_ids.
    pub departments: Vec<String>,
    pub cover_children: bool,
}

impl Default for ScopeRule {
    fn default() -> Self {
        Self {
            allow_all: true,
            users: Vec::new(),
            departments: Vec::new(),
            cover_children: false,
        }
    }
}

/// What one node sets (stored per node; `None` = inherits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSet {
    pub approval: Option<ApprovalRule>,
    pub time: Option<TimeRule>,
    pub scope: Option<ScopeRule>,
}

fn ids(u: &UserIds) -> Vec<String> {
    [&u.open_id, &u.user_id, &u.union_id]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect()
}

impl NodeSet {
    /// From the API's (or the event's) view of one node. The event carries
    /// no `if_cover_child_scope`: `cover` keeps what the store had.
    pub fn from_api(n: &NodeRules) -> Self {
        Self {
            approval: n.approval.as_ref().map(|a| ApprovalRule {
                enabled: a.approval_switch == Some(1),
                every_booking: a.approval_condition.unwrap_or(0) == 0,
                meeting_duration_hours: a.meeting_duration_hours.unwrap_or(99.0),
                approvers: a.approvers.iter().flat_map(ids).collect(),
            }),
            time: n.time.as_ref().map(|(t, cover)| {
                let d = TimeRule::default();
                TimeRule {
                    enabled: t.time_switch == Some(1),
                    days_in_advance: t.days_in_advance.unwrap_or(d.days_in_advance),
                    opening_hour_s: t.opening_hour_s.unwrap_or(d.opening_hour_s),
                    start_s: t.start_time_s.unwrap_or(d.start_s),
                    end_s: t.end_time_s.unwrap_or(d.end_s),
                    max_duration_hours: t.max_duration_hours.unwrap_or(d.max_duration_hours),
                    cover_children: *cover,
                }
            }),
            scope: n.scope.as_ref().map(|(s, cover)| ScopeRule {
                allow_all: s.allow_all_users.unwrap_or(1) == 1,
                users: s
                    .allow_users
                    .iter()
                    .map(ids)
                    .filter(|v| !v.is_empty())
                    .collect(),
                departments: s
                    .allow_depts
                    .iter()
                    .filter_map(|d| d.department_id.clone())
                    .collect(),
                cover_children: *cover,
            }),
        }
    }
}

/// The rules in force for one room, with the node each came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    pub approval: ApprovalRule,
    pub time: TimeRule,
    pub scope: ScopeRule,
    /// Node ids (`"0"` = tenant root, `"default"` = documented defaults).
    pub approval_from: String,
    pub time_from: String,
    pub scope_from: String,
}

/// Resolves the rules of the node path `root -> … -> room`, each with what
/// the store knows it sets (`None`: unknown or nothing set).
pub fn resolve<'a>(path: impl IntoIterator<Item = (&'a str, Option<&'a NodeSet>)>) -> Effective {
    let mut e = Effective {
        approval_from: "default".into(),
        time_from: "default".into(),
        scope_from: "default".into(),
        ..Effective::default()
    };
    let (mut time_locked, mut scope_locked) = (false, false);
    for (node, set) in path {
        let Some(set) = set else {
            continue;
        };
        if let Some(a) = &set.approval {
            e.approval = a.clone();
            e.approval_from = node.to_owned();
        }
        if let Some(t) = &set.time
            && !time_locked
        {
            e.time = t.clone();
            e.time_from = node.to_owned();
            time_locked = t.cover_children;
        }
        if let Some(s) = &set.scope
            && !scope_locked
        {
            e.scope = s.clone();
            e.scope_from = node.to_owned();
            scope_locked = s.cover_children;
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(max: i64, cover: bool) -> NodeSet {
        NodeSet {
            time: Some(TimeRule {
                enabled: true,
                max_duration_hours: max,
                cover_children: cover,
                ..TimeRule::default()
            }),
            ..NodeSet::default()
        }
    }

    #[test]
    fn own_wins_unless_an_ancestor_covers() {
        let (level, room) = (time(3, false), time(5, false));
        let e = resolve([("0", None), ("omb_a", Some(&level)), ("omm_r", Some(&room))]);
        assert_eq!(
            (e.time.max_duration_hours, e.time_from.as_str()),
            (5, "omm_r")
        );
        let level = time(3, true);
        let e = resolve([("0", None), ("omb_a", Some(&level)), ("omm_r", Some(&room))]);
        assert_eq!(
            (e.time.max_duration_hours, e.time_from.as_str()),
            (3, "omb_a")
        );
        let e = resolve([
            ("0", None),
            ("omb_a", Some(&NodeSet::default())),
            ("omm_r", None),
        ]);
        assert_eq!(e.time_from, "default");
        assert!(e.scope.allow_all);
    }
}
