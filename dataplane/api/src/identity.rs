//! Identity stitching without I/O: which user each `identify()` belongs to, what the user rows
//! become, and which visitors link to whom.
//!
//! A record finds its user by `app_id`, else by email hash (unless that user already has another
//! `app_id`), else — when it carries neither — by the user its visitor is already linked to;
//! otherwise a user is created. With identity verification on, a record whose claim could not
//! be verified ([`zori_core::identity::IdentityProof::Unsigned`]) changes nothing here, and the email beside a signed
//! `app_id` never finds another user. Missing fields of the user are filled, existing ones are kept.
//! The visitor is linked to the user unless it was linked later (by `occurred_at`) to someone
//! else. Replaying records changes nothing, so redelivery is harmless.

use std::collections::HashMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use zori_core::event::IdentifyRecord;

/// A user row as stored (or as it must be written).
#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    pub app_id: Option<String>,
    pub email_hash: Option<String>,
    pub fullname: Option<String>,
    pub traits: Map<String, Value>,
    pub first_identified_at: OffsetDateTime,
    pub last_identified_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExistingUser {
    pub user_id: i64,
    pub state: UserState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExistingIdentity {
    pub visitor_id: String,
    pub user_id: i64,
    pub identified_at: OffsetDateTime,
}

/// A user that exists already, or the n-th of [`Resolution::new_users`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserRef {
    Existing(i64),
    New(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityLink {
    pub visitor_id: String,
    pub user: UserRef,
    pub identified_at: OffsetDateTime,
}

/// The writes an identify batch needs: only what changed.
#[derive(Debug, Default, PartialEq)]
pub struct Resolution {
    pub new_users: Vec<UserState>,
    pub updated_users: Vec<(i64, UserState)>,
    pub links: Vec<IdentityLink>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

struct Working {
    state: UserState,
    changed: bool,
}

/// Resolves `records` (any order; processed by `occurred_at`, then id) against the users and
/// identities they may touch (those with the records' app ids, email hashes or visitor ids).
pub fn resolve(
    users: Vec<ExistingUser>,
    identities: Vec<ExistingIdentity>,
    records: &[&IdentifyRecord],
) -> Resolution {
    let mut states: HashMap<UserRef, Working> = HashMap::new();
    let mut by_app: HashMap<String, UserRef> = HashMap::new();
    let mut by_email: HashMap<String, UserRef> = HashMap::new();
    for user in users {
        let key = UserRef::Existing(user.user_id);
        if let Some(app) = user.state.app_id.clone() {
            by_app.insert(app, key);
        }
        if let Some(email) = user.state.email_hash.clone() {
            by_email.insert(email, key);
        }
        states.insert(
            key,
            Working {
                state: user.state,
                changed: false,
            },
        );
    }
    // visitor → (user, identified_at, changed)
    let mut links: HashMap<String, (UserRef, OffsetDateTime, bool)> = identities
        .into_iter()
        .map(|i| {
            (
                i.visitor_id,
                (UserRef::Existing(i.user_id), i.identified_at, false),
            )
        })
        .collect();
    let mut new_count = 0usize;

    let mut ordered: Vec<&IdentifyRecord> = records.to_vec();
    ordered.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));

    for record in ordered {
        // An identity claim verification could not prove changes nothing (it is kept apart).
        if !record.proof.links() {
            continue;
        }
        let app_id = non_empty(&record.app_id);
        let email = non_empty(&record.email_hash);
        let fullname = non_empty(&record.fullname);
        let at = record.occurred_at;

        let mut user = app_id.and_then(|a| by_app.get(a).copied());
        if user.is_none() && record.proof.email_finds_user(app_id.is_some()) {
            if let Some(candidate) = email.and_then(|e| by_email.get(e).copied()) {
                let candidate_app = states
                    .get(&candidate)
                    .and_then(|w| w.state.app_id.as_deref());
                // Another app user with the same email is a different person.
                if app_id.is_none() || candidate_app.is_none() || candidate_app == app_id {
                    user = Some(candidate);
                }
            }
        }
        if user.is_none() && app_id.is_none() && email.is_none() {
            user = links.get(&record.visitor_id).map(|(u, _, _)| *u);
        }
        let user = match user {
            Some(u) => u,
            None => {
                let key = UserRef::New(new_count);
                new_count += 1;
                states.insert(
                    key,
                    Working {
                        state: UserState {
                            app_id: None,
                            email_hash: None,
                            fullname: None,
                            traits: Map::new(),
                            first_identified_at: at,
                            last_identified_at: at,
                        },
                        changed: true,
                    },
                );
                key
            }
        };

        let Some(working) = states.get_mut(&user) else {
            continue;
        };
        let state = &mut working.state;
        let mut changed = false;
        if state.app_id.is_none() {
            if let Some(app) = app_id.filter(|a| !by_app.contains_key(*a)) {
                state.app_id = Some(app.to_owned());
                by_app.insert(app.to_owned(), user);
                changed = true;
            }
        }
        if state.email_hash.is_none() {
            if let Some(e) = email.filter(|e| !by_email.contains_key(*e)) {
                state.email_hash = Some(e.to_owned());
                by_email.insert(e.to_owned(), user);
                changed = true;
            }
        }
        if state.fullname.is_none() {
            if let Some(name) = fullname {
                state.fullname = Some(name.to_owned());
                changed = true;
            }
        }
        for (key, value) in &record.traits {
            if !state.traits.contains_key(key) {
                state.traits.insert(key.clone(), value.clone());
                changed = true;
            }
        }
        if at < state.first_identified_at {
            state.first_identified_at = at;
            changed = true;
        }
        if at > state.last_identified_at {
            state.last_identified_at = at;
            changed = true;
        }
        working.changed |= changed;

        match links.get_mut(&record.visitor_id) {
            Some((linked, linked_at, dirty)) => {
                if *linked != user && at > *linked_at {
                    *linked = user;
                    *linked_at = at;
                    *dirty = true;
                }
            }
            None => {
                links.insert(record.visitor_id.clone(), (user, at, true));
            }
        }
    }

    let mut resolution = Resolution::default();
    let mut new_users: Vec<(usize, UserState)> = Vec::new();
    for (key, working) in states {
        match key {
            UserRef::New(n) => new_users.push((n, working.state)),
            UserRef::Existing(id) if working.changed => {
                resolution.updated_users.push((id, working.state));
            }
            UserRef::Existing(_) => {}
        }
    }
    new_users.sort_by_key(|(n, _)| *n);
    resolution.new_users = new_users.into_iter().map(|(_, s)| s).collect();
    resolution.updated_users.sort_by_key(|(id, _)| *id);
    let mut changed_links: Vec<IdentityLink> = links
        .into_iter()
        .filter(|(_, (_, _, dirty))| *dirty)
        .map(|(visitor_id, (user, identified_at, _))| IdentityLink {
            visitor_id,
            user,
            identified_at,
        })
        .collect();
    changed_links.sort_by(|a, b| a.visitor_id.cmp(&b.visitor_id));
    resolution.links = changed_links;
    resolution
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use zori_core::identity::IdentityProof;

    use super::*;

    fn record(
        id: &str,
        visitor: &str,
        app_id: Option<&str>,
        email: Option<&str>,
        at: OffsetDateTime,
    ) -> IdentifyRecord {
        IdentifyRecord {
            id: id.to_owned(),
            visitor_id: visitor.to_owned(),
            session_id: "s".to_owned(),
            occurred_at: at,
            received_at: at,
            app_id: app_id.map(str::to_owned),
            email_hash: email.map(str::to_owned),
            fullname: None,
            traits: Map::new(),
            proof: IdentityProof::Unchecked,
        }
    }

    fn existing(id: i64, app_id: Option<&str>, email: Option<&str>) -> ExistingUser {
        ExistingUser {
            user_id: id,
            state: UserState {
                app_id: app_id.map(str::to_owned),
                email_hash: email.map(str::to_owned),
                fullname: Some("Jane".to_owned()),
                traits: Map::new(),
                first_identified_at: datetime!(2025-01-01 0:00 UTC),
                last_identified_at: datetime!(2025-01-01 0:00 UTC),
            },
        }
    }

    #[test]
    fn two_visitors_of_one_app_user_share_a_new_user() {
        let a = record(
            "1",
            "v1",
            Some("u42"),
            Some("h1"),
            datetime!(2025-02-01 0:00 UTC),
        );
        let b = record("2", "v2", Some("u42"), None, datetime!(2025-02-02 0:00 UTC));
        let r = resolve(vec![], vec![], &[&b, &a]);
        assert_eq!(r.new_users.len(), 1);
        assert_eq!(r.new_users[0].app_id.as_deref(), Some("u42"));
        assert_eq!(r.new_users[0].email_hash.as_deref(), Some("h1"));
        assert_eq!(
            r.new_users[0].first_identified_at,
            datetime!(2025-02-01 0:00 UTC)
        );
        assert_eq!(
            r.new_users[0].last_identified_at,
            datetime!(2025-02-02 0:00 UTC)
        );
        assert_eq!(r.links.len(), 2);
        assert!(r.links.iter().all(|l| l.user == UserRef::New(0)));
    }

    #[test]
    fn email_finds_the_user_and_missing_fields_are_filled() {
        let mut rec = record("1", "v9", None, Some("h1"), datetime!(2025-02-01 0:00 UTC));
        rec.fullname = Some("Other Name".to_owned());
        rec.traits.insert("plan".to_owned(), Value::from("pro"));
        let r = resolve(vec![existing(7, None, Some("h1"))], vec![], &[&rec]);
        assert!(r.new_users.is_empty());
        assert_eq!(r.updated_users.len(), 1);
        let (id, state) = &r.updated_users[0];
        assert_eq!(*id, 7);
        assert_eq!(
            state.fullname.as_deref(),
            Some("Jane"),
            "existing name kept"
        );
        assert_eq!(state.traits.get("plan"), Some(&Value::from("pro")));
        assert_eq!(
            r.links,
            vec![IdentityLink {
                visitor_id: "v9".to_owned(),
                user: UserRef::Existing(7),
                identified_at: datetime!(2025-02-01 0:00 UTC),
            }]
        );
    }

    #[test]
    fn app_id_wins_over_email_and_never_steals_another_app_users_email() {
        let rec = record(
            "1",
            "v1",
            Some("u2"),
            Some("h1"),
            datetime!(2025-02-01 0:00 UTC),
        );
        let r = resolve(vec![existing(1, Some("u1"), Some("h1"))], vec![], &[&rec]);
        assert_eq!(r.new_users.len(), 1);
        assert_eq!(r.new_users[0].app_id.as_deref(), Some("u2"));
        assert_eq!(r.new_users[0].email_hash, None, "email belongs to user 1");
        assert!(r.updated_users.is_empty());
    }

    #[test]
    fn app_id_claims_an_email_only_user() {
        let rec = record(
            "1",
            "v1",
            Some("u2"),
            Some("h1"),
            datetime!(2025-02-01 0:00 UTC),
        );
        let r = resolve(vec![existing(1, None, Some("h1"))], vec![], &[&rec]);
        assert!(r.new_users.is_empty());
        assert_eq!(r.updated_users[0].1.app_id.as_deref(), Some("u2"));
    }

    #[test]
    fn replay_changes_nothing() {
        let rec = record(
            "1",
            "v1",
            Some("u1"),
            Some("h1"),
            datetime!(2025-01-01 0:00 UTC),
        );
        let identities = vec![ExistingIdentity {
            visitor_id: "v1".to_owned(),
            user_id: 1,
            identified_at: datetime!(2025-01-01 0:00 UTC),
        }];
        let r = resolve(
            vec![existing(1, Some("u1"), Some("h1"))],
            identities,
            &[&rec],
        );
        assert_eq!(r, Resolution::default());
    }

    #[test]
    fn anonymous_identify_reuses_the_visitors_user() {
        let mut rec = record("1", "v1", None, None, datetime!(2025-02-01 0:00 UTC));
        rec.traits.insert("k".to_owned(), Value::from(1));
        let identities = vec![ExistingIdentity {
            visitor_id: "v1".to_owned(),
            user_id: 3,
            identified_at: datetime!(2025-01-01 0:00 UTC),
        }];
        let r = resolve(vec![existing(3, Some("u3"), None)], identities, &[&rec]);
        assert!(r.new_users.is_empty());
        assert_eq!(r.updated_users[0].0, 3);
        assert!(r.links.is_empty(), "same user, no relink");
    }

    #[test]
    fn an_older_identify_does_not_relink_a_newer_link() {
        let old = record("1", "v1", Some("u2"), None, datetime!(2024-12-01 0:00 UTC));
        let identities = vec![ExistingIdentity {
            visitor_id: "v1".to_owned(),
            user_id: 1,
            identified_at: datetime!(2025-01-01 0:00 UTC),
        }];
        let r = resolve(
            vec![existing(1, Some("u1"), None), existing(2, Some("u2"), None)],
            identities,
            &[&old],
        );
        assert!(r.links.is_empty());
        // The user's identification window still widens.
        assert_eq!(r.updated_users[0].0, 2);
        let newer = record("2", "v1", Some("u2"), None, datetime!(2025-03-01 0:00 UTC));
        let identities = vec![ExistingIdentity {
            visitor_id: "v1".to_owned(),
            user_id: 1,
            identified_at: datetime!(2025-01-01 0:00 UTC),
        }];
        let r = resolve(
            vec![existing(1, Some("u1"), None), existing(2, Some("u2"), None)],
            identities,
            &[&newer],
        );
        assert_eq!(r.links[0].user, UserRef::Existing(2));
    }

    #[test]
    fn an_unverified_claim_never_moves_a_user() {
        let mut claim = record(
            "1",
            "v-attacker",
            Some("u1"),
            Some("h1"),
            datetime!(2025-02-01 0:00 UTC),
        );
        claim.fullname = Some("Mallory".to_owned());
        claim.proof = IdentityProof::Unsigned;
        let r = resolve(vec![existing(1, Some("u1"), Some("h1"))], vec![], &[&claim]);
        assert_eq!(r, Resolution::default(), "no link, no user change");
        // Nor does it create a user that a later verified identify would join.
        let r = resolve(vec![], vec![], &[&claim]);
        assert_eq!(r, Resolution::default());
    }

    #[test]
    fn the_email_beside_a_signed_app_id_finds_no_other_user() {
        let mut own = record(
            "1",
            "v-attacker",
            Some("u-attacker"),
            Some("h-victim"),
            datetime!(2025-02-01 0:00 UTC),
        );
        own.proof = IdentityProof::Signed;
        let r = resolve(vec![existing(1, None, Some("h-victim"))], vec![], &[&own]);
        assert!(r.updated_users.is_empty(), "the victim's user is untouched");
        assert_eq!(r.new_users.len(), 1);
        assert_eq!(r.new_users[0].app_id.as_deref(), Some("u-attacker"));
        assert_eq!(
            r.new_users[0].email_hash, None,
            "the email stays the victim's"
        );
        assert_eq!(r.links[0].user, UserRef::New(0));
        // A signed email (no app_id) and a token identify do find the user by email.
        for (app_id, proof) in [
            (None, IdentityProof::Signed),
            (Some("u9"), IdentityProof::Token),
        ] {
            let mut rec = record(
                "2",
                "v2",
                app_id,
                Some("h-victim"),
                datetime!(2025-02-01 0:00 UTC),
            );
            rec.proof = proof;
            let r = resolve(vec![existing(1, None, Some("h-victim"))], vec![], &[&rec]);
            assert_eq!(r.links[0].user, UserRef::Existing(1), "{proof:?}");
        }
    }
}
