//! What an on-call engineer and a readiness probe need to know:
//! [`Verifier::health`](crate::Verifier::health).

use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keystore::StoreHealth;

/// The verifier's state now: every issuer's keys and the revocation list.
/// See [`Health::is_ready`] for the readiness rule.
#[derive(Debug, Clone)]
pub struct Health {
    pub(crate) issuers: Vec<IssuerHealth>,
    pub(crate) revocations: Option<RevocationHealth>,
}

/// One issuer's keys (one tenant's, for an issuer with a key set per
/// tenant).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuerHealth {
    /// The configured issuer (a template for a multi-tenant one).
    pub issuer: String,
    /// The tenant whose key set this is, for an issuer with one per tenant.
    pub tenant: Option<String>,
    /// Keys usable now (fresh, or stale within `max_stale`).
    pub keys_loaded: bool,
    /// Keys were loaded at some point.
    pub ever_loaded: bool,
    /// When the keys in use were fetched (by this replica, or by a sibling
    /// for a warm start).
    pub fetched_at: Option<SystemTime>,
    /// Past their TTL, still used within `max_stale`: a refresh is due (an
    /// idle replica refreshes on its next request or health check) or
    /// failing (see `last_error`).
    pub stale: bool,
    /// When the keys stop being used if no refresh succeeds.
    pub usable_until: Option<SystemTime>,
    /// Why the last fetch failed (escaped and bounded remote text), until
    /// one succeeds.
    pub last_error: Option<String>,
    /// When the next fetch may be attempted (backoff), if later than now.
    pub next_attempt: Option<SystemTime>,
}

/// The revocation list kept in step with a fleet.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RevocationHealth {
    /// Revocations held.
    pub held: usize,
    /// When the list was last confirmed current (`None`: never synced).
    pub synced_at: Option<SystemTime>,
    /// Whether verification may use it now (see `WhenStale`).
    pub usable: bool,
}

impl IssuerHealth {
    pub(crate) fn new(issuer: &str, tenant: Option<String>, h: StoreHealth) -> Self {
        let now = SystemTime::now();
        IssuerHealth {
            issuer: issuer.to_owned(),
            tenant,
            keys_loaded: h.loaded,
            ever_loaded: h.ever_loaded,
            fetched_at: h.age.and_then(|a| now.checked_sub(a)),
            stale: h.stale,
            usable_until: h.loaded.then(|| now + h.usable_for),
            last_error: h.last_error,
            next_attempt: (h.next_attempt_in > Duration::ZERO).then(|| now + h.next_attempt_in),
        }
    }

    /// Counts for readiness: an issuer's single key set must be usable. A
    /// tenant's key set (an issuer with one per tenant) is reported, never
    /// counted: tenants come and go with their tokens, and one tenant's
    /// outage must not take every replica out of service.
    fn ready(&self) -> bool {
        self.tenant.is_some() || self.keys_loaded
    }
}

fn unix(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| d.as_secs().into())
}

impl Health {
    /// Every issuer's key sets, one per issuer (one per tenant seen, for an
    /// issuer with a key set per tenant).
    pub fn issuers(&self) -> &[IssuerHealth] {
        &self.issuers
    }

    /// The fleet's revocation list, if the verifier has one.
    pub fn revocations(&self) -> Option<&RevocationHealth> {
        self.revocations.as_ref()
    }

    /// The readiness rule: ready while every issuer has usable keys (fresh,
    /// or stale within `max_stale`) and the revocation list, if any, may be
    /// used. So an issuer outage within `max_stale` keeps the replica ready
    /// (it still verifies), and a replica whose keys never loaded is not
    /// ready: a rollout during an outage keeps the old pods serving. An
    /// issuer with a key set per tenant does not count (its tenants are
    /// reported): one tenant's outage is not the replica's.
    ///
    /// A replica out of rotation gets no requests, so
    /// [`Verifier::health`](crate::Verifier::health) itself starts the fetch
    /// an unready issuer needs (in the background, within its backoff): the
    /// probe alone brings a replica back once the issuer is.
    ///
    /// Kubernetes: serve it as the readiness probe (`/readyz`), not the
    /// liveness probe: a replica that cannot reach its issuer is not broken,
    /// and restarting it would throw away the keys it still holds.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(IssuerHealth::ready)
            && self.revocations.as_ref().is_none_or(|r| r.usable)
    }

    /// As JSON (times in unix seconds), for a health endpoint.
    pub fn to_json(&self) -> Value {
        json!({
            "ready": self.is_ready(),
            "issuers": self.issuers.iter().map(|i| json!({
                "issuer": i.issuer,
                "tenant": i.tenant,
                "keys_loaded": i.keys_loaded,
                "fetched_at": unix(i.fetched_at),
                "stale": i.stale,
                "usable_until": unix(i.usable_until),
                "last_error": i.last_error,
                "next_attempt": unix(i.next_attempt),
            })).collect::<Vec<_>>(),
            "revocations": self.revocations.as_ref().map(|r| json!({
                "held": r.held,
                "synced_at": unix(r.synced_at),
                "usable": r.usable,
            })),
        })
    }
}
