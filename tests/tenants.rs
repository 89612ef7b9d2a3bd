//! Multi-tenant issuers: one issuer template (`{tenantid}`), a tenant
//! allow-list or filter, the tenant-independent key set (Entra) or a key set
//! per tenant (one Keycloak realm per customer), and keys scoped to an issuer.
//!
//! The key sets and metadata are served on loopback exactly as the providers
//! publish them (Entra: `x5t`, `x5c`, an `issuer` member, no `alg`; the
//! tenant-independent metadata's `issuer` is the template itself).

mod support;

use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use m2m_guard::{BuildError, Issuer, Preset, Reason, Verifier};
use serde_json::{Value, json};
use std::time::Duration;
use support::{ScriptServer, keycloak, realm_token, realms};

async fn build(issuer: Issuer) -> Verifier {
    Verifier::builder().issuer(issuer).build().await.unwrap()
}

const TENANT_A: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const TENANT_B: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const TENANT_C: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";

/// Entra's shape of a JWK: no `alg`, `x5t` and `x5c`, and an `issuer`.
fn entra_keys(doc: &Value, issuer: &str) -> Value {
    let keys: Vec<Value> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mut k = k.clone();
            let o = k.as_object_mut().unwrap();
            o.remove("alg");
            o.insert("x5t".into(), "nOo3ZDrODXEK1jKWhXslHR_KXEg".into());
            o.insert(
                "x5c".into(),
                json!(["MIIDBTCCAe2gAwIBAgIQN33ROaIJ6bJBWDCxtmJEbjANBgkqhkiG9w0BAQsFADAt"]),
            );
            o.insert("issuer".into(), issuer.into());
            k
        })
        .collect();
    json!({ "keys": keys })
}

/// A loopback "login.microsoftonline.com": the tenant-independent v2
/// metadata (`/common/v2.0`) and key set, signing keys from `keys`.
async fn entra(keys: &TestIssuer) -> ScriptServer {
    let s = ScriptServer::start().await;
    let template = s.url("/{tenantid}/v2.0");
    s.json(
        "/common/v2.0/.well-known/openid-configuration",
        json!({
            "issuer": template,
            "jwks_uri": s.url("/common/discovery/v2.0/keys"),
            "token_endpoint": s.url("/common/oauth2/v2.0/token"),
        })
        .to_string(),
    );
    s.json(
        "/common/discovery/v2.0/keys",
        entra_keys(&keys.jwks_document(), &template).to_string(),
    );
    s
}

async fn entra_verifier(s: &ScriptServer, tenants: &[&str]) -> Verifier {
    Verifier::builder()
        .issuer(
            Issuer::new(s.url("/{tenantid}/v2.0"))
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE)
                .allowed_tenants(tenants.iter().copied()),
        )
        .build()
        .await
        .unwrap()
}

/// An Entra app-only token of `tenant`, signed by `keys`.
fn entra_token(keys: &TestIssuer, s: &ScriptServer, tenant: &str) -> String {
    keys.token()
        .client_id("6e74172b-be56-4843-9ff4-e66a39bb12e3")
        .scopes(["Orders.Read"])
        .claim("iss", s.url(&format!("/{tenant}/v2.0")))
        .claim("tid", tenant)
        .sign()
}

#[tokio::test]
async fn entra_multi_tenant_from_one_line_and_an_allow_list() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    let v = entra_verifier(&s, &[TENANT_A, TENANT_B]).await;

    for tenant in [TENANT_A, TENANT_B] {
        let p = v.verify(&entra_token(&keys, &s, tenant)).await.unwrap();
        assert_eq!(p.tenant(), Some(tenant));
        assert_eq!(p.issuer(), s.url(&format!("/{tenant}/v2.0")));
        assert_eq!(p.client_id(), Some("6e74172b-be56-4843-9ff4-e66a39bb12e3"));
        assert!(p.scopes().contains("Orders.Read"));
        assert!(p.is_machine());
    }
    // Keys come from the tenant-independent key set, fetched once for all.
    assert_eq!(s.hits("/common/v2.0/.well-known/openid-configuration"), 1);
    assert_eq!(s.hits("/common/discovery/v2.0/keys"), 1);
    assert_eq!(
        v.jwks_url(&s.url("/{tenantid}/v2.0")).as_deref(),
        Some(s.url("/common/discovery/v2.0/keys").as_str())
    );

    // Another tenant's token, validly signed by Microsoft's shared keys.
    let other = v
        .verify(&entra_token(&keys, &s, TENANT_C))
        .await
        .unwrap_err();
    assert_eq!(other.reason(), Reason::TenantNotAllowed);
    assert_eq!(other.issuer(), Some(s.url("/{tenantid}/v2.0").as_str()));

    // `iss` must be the template with the token's own `tid` in it.
    let mixed = keys
        .token()
        .claim("iss", s.url(&format!("/{TENANT_A}/v2.0")))
        .claim("tid", TENANT_B)
        .sign();
    let e = v.verify(&mixed).await.unwrap_err();
    assert_eq!(
        (e.reason(), e.claim_name()),
        (Reason::InvalidClaim, Some("tid"))
    );
    let no_tid = keys
        .token()
        .claim("iss", s.url(&format!("/{TENANT_A}/v2.0")))
        .without_claim("tid")
        .sign();
    let e = v.verify(&no_tid).await.unwrap_err();
    assert_eq!(
        (e.reason(), e.claim_name()),
        (Reason::MissingClaim, Some("tid"))
    );

    // The template itself, other shapes and hosts are no tenant's issuer.
    for iss in [
        s.url("/{tenantid}/v2.0"),
        s.url(&format!("/{TENANT_A}/v2.0/")),
        s.url(&format!("/{TENANT_A}/x/v2.0")),
        s.url("/common/v2.0"),
        format!("https://login.microsoftonline.com/{TENANT_A}/v2.0"),
    ] {
        let t = keys
            .token()
            .claim("iss", iss.clone())
            .claim("tid", TENANT_A)
            .sign();
        let e = v.verify(&t).await.unwrap_err();
        let expected = if iss.ends_with("/common/v2.0") {
            // "common" has the template's shape but is not an admitted tenant.
            Reason::TenantNotAllowed
        } else {
            Reason::UnknownIssuer
        };
        assert_eq!(e.reason(), expected, "{iss}");
    }
    // A user's token of an admitted tenant: machine-only still holds.
    let user = keys
        .token()
        .user("alice")
        .claim("iss", s.url(&format!("/{TENANT_A}/v2.0")))
        .claim("tid", TENANT_A)
        .sign();
    assert_eq!(
        v.verify(&user).await.unwrap_err().reason(),
        Reason::UserToken
    );
}

#[tokio::test]
async fn a_key_scoped_to_one_tenant_never_verifies_another_tenants_token() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    // The same keys, published scoped to tenant A only (as Entra does for
    // an app's own signing keys): not the template.
    s.json(
        "/common/discovery/v2.0/keys",
        entra_keys(&keys.jwks_document(), &s.url(&format!("/{TENANT_A}/v2.0"))).to_string(),
    );
    let v = entra_verifier(&s, &[TENANT_A, TENANT_B]).await;
    assert!(v.verify(&entra_token(&keys, &s, TENANT_A)).await.is_ok());
    let e = v
        .verify(&entra_token(&keys, &s, TENANT_B))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeyIssuerMismatch);

    // The rule holds for single-tenant configurations too: a key scoped to
    // tenant A does not verify tenant B's tokens, even where B is trusted.
    let single = Verifier::builder()
        .issuer(
            Issuer::new(s.url(&format!("/{TENANT_B}/v2.0")))
                .jwks_url(s.url("/common/discovery/v2.0/keys"))
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE),
        )
        .build()
        .await
        .unwrap();
    let e = single
        .verify(&entra_token(&keys, &s, TENANT_B))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeyIssuerMismatch);
    // An `issuer` member that is not a string makes the key unusable, not unscoped.
    let mut doc = entra_keys(&keys.jwks_document(), "x");
    for k in doc["keys"].as_array_mut().unwrap() {
        k["issuer"] = json!(["whatever"]);
    }
    s.json("/common/discovery/v2.0/keys", doc.to_string());
    let v = entra_verifier(&s, &[TENANT_A]).await;
    let e = v
        .verify(&entra_token(&keys, &s, TENANT_A))
        .await
        .unwrap_err();
    assert_eq!(
        e.reason(),
        Reason::KeysUnavailable,
        "no usable key in the set"
    );
}

#[tokio::test]
async fn the_tenant_independent_metadata_must_name_the_template() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    // A document claiming to be one tenant's (or "common") is not the
    // tenant-independent one: its keys are not used.
    s.json(
        "/common/v2.0/.well-known/openid-configuration",
        json!({
            "issuer": s.url("/common/v2.0"),
            "jwks_uri": s.url("/common/discovery/v2.0/keys"),
        })
        .to_string(),
    );
    let v = entra_verifier(&s, &[TENANT_A]).await;
    let e = v
        .verify(&entra_token(&keys, &s, TENANT_A))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert_eq!(s.hits("/common/discovery/v2.0/keys"), 0);
}

#[tokio::test]
async fn entra_v1_template_and_a_tenant_filter() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = ScriptServer::start().await;
    let template = s.url("/{tenantid}/");
    s.json(
        "/common/.well-known/openid-configuration",
        json!({ "issuer": template, "jwks_uri": s.url("/common/discovery/keys") }).to_string(),
    );
    s.json(
        "/common/discovery/keys",
        entra_keys(&keys.jwks_document(), &template).to_string(),
    );
    let v = Verifier::builder()
        .issuer(
            Issuer::new(template.clone())
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE)
                .allow_tenants_if(|t| t.starts_with("9188")),
        )
        .build()
        .await
        .unwrap();
    let token = |tenant: &str| {
        keys.token()
            .claim("iss", s.url(&format!("/{tenant}/")))
            .claim("tid", tenant)
            .sign()
    };
    assert_eq!(
        v.verify(&token(TENANT_A)).await.unwrap().tenant(),
        Some(TENANT_A)
    );
    assert_eq!(
        v.verify(&token(TENANT_B)).await.unwrap_err().reason(),
        Reason::TenantNotAllowed
    );
}

#[tokio::test]
async fn one_keycloak_realm_per_customer_with_a_key_set_per_realm() {
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let globex = TestIssuer::start_with(Preset::Keycloak).await;
    let s = keycloak(&[("acme", &acme), ("globex", &globex)]).await;
    let template = s.url("/realms/{tenantid}");
    let v = Verifier::builder()
        .issuer(
            Issuer::new(template.clone())
                .preset(Preset::Keycloak)
                .audience(DEFAULT_AUDIENCE)
                .allow_tenants_if(|realm| realm != "master"),
        )
        .build()
        .await
        .unwrap();
    let p = v.verify(&realm_token(&acme, &s, "acme")).await.unwrap();
    // Keycloak has no tenant claim: the realm from `iss` is the tenant.
    assert_eq!(p.tenant(), Some("acme"));
    assert_eq!(p.client_id(), Some("billing-sync"));
    assert!(p.scopes().contains("invoices:read"));
    assert_eq!(
        v.verify(&realm_token(&globex, &s, "globex"))
            .await
            .unwrap()
            .tenant(),
        Some("globex")
    );
    // Each realm's keys were discovered at its own issuer, once.
    for realm in ["acme", "globex"] {
        assert_eq!(
            s.hits(&format!("/realms/{realm}/.well-known/openid-configuration")),
            1
        );
        let issuer = s.url(&format!("/realms/{realm}"));
        assert_eq!(v.key_fetch_count(&issuer), Some(1), "{realm}");
        assert_eq!(
            v.jwks_url(&issuer),
            Some(s.url(&format!("/realms/{realm}/protocol/openid-connect/certs")))
        );
    }
    assert_eq!(v.key_fetch_count(&template), Some(2));

    // A token claiming globex's realm but signed with acme's keys.
    let forged = realm_token(&acme, &s, "globex");
    let e = v.verify(&forged).await.unwrap_err();
    let kid_published_by_globex = globex
        .published_kids()
        .contains(&acme.current_kid(m2m_guard::Algorithm::RS256));
    let expected = if kid_published_by_globex {
        Reason::InvalidSignature
    } else {
        Reason::UnknownKey
    };
    assert_eq!(e.reason(), expected);

    // A realm the filter refuses costs no fetch.
    let e = v
        .verify(&realm_token(&acme, &s, "master"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::TenantNotAllowed);
    assert_eq!(s.hits("/realms/master/.well-known/openid-configuration"), 0);
}

/// Realms `acme` and `globex` signed by one test issuer, and a verifier on
/// its clock for the realms template, admitting any tenant, as `configure`
/// sets it up further.
async fn acme_and_globex(
    configure: impl FnOnce(Issuer) -> Issuer,
) -> (TestIssuer, ScriptServer, Verifier) {
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let s = keycloak(&[("acme", &acme), ("globex", &acme)]).await;
    let v = Verifier::builder()
        .clock(acme.clock())
        .issuer(configure(realms(&s).allow_tenants_if(|_| true)))
        .build()
        .await
        .unwrap();
    (acme, s, v)
}

#[tokio::test]
async fn tenant_key_sets_are_bounded_and_paced() {
    let (acme, s, v) = acme_and_globex(|i| {
        i.max_tenants(2)
            .fetch_backoff(Duration::from_millis(10), Duration::from_millis(10))
    })
    .await;
    assert!(v.verify(&realm_token(&acme, &s, "acme")).await.is_ok());
    // A realm that does not exist takes the second slot (its discovery fails)...
    let e = v
        .verify(&realm_token(&acme, &s, "ghost"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    // ...and makes room for a real one when the table is full.
    assert!(v.verify(&realm_token(&acme, &s, "globex")).await.is_ok());
    // Full of realms with keys: a new one waits, honestly (503), without a fetch.
    let e = v
        .verify(&realm_token(&acme, &s, "initech"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert!(e.retry_after().is_some());
    assert_eq!(
        s.hits("/realms/initech/.well-known/openid-configuration"),
        0
    );
    // The tenants already loaded are unaffected.
    assert!(v.verify(&realm_token(&acme, &s, "acme")).await.is_ok());
    // A tenant unused for 15 minutes makes room (the least recently used).
    acme.clock().advance(Duration::from_secs(14 * 60));
    assert!(v.verify(&realm_token(&acme, &s, "acme")).await.is_ok());
    acme.clock().advance(Duration::from_secs(60));
    let e = v
        .verify(&realm_token(&acme, &s, "initech"))
        .await
        .unwrap_err();
    assert_eq!(
        e.reason(),
        Reason::KeysUnavailable,
        "initech does not exist"
    );
    assert_eq!(
        s.hits("/realms/initech/.well-known/openid-configuration"),
        1
    );
    assert!(
        v.verify(&realm_token(&acme, &s, "acme")).await.is_ok(),
        "acme kept"
    );
    assert_eq!(
        v.jwks_url(&s.url("/realms/globex")),
        None,
        "globex (idle) made room"
    );

    // New tenants are paced: a burst of 10 creations, then one per 6 s.
    let paced = Verifier::builder()
        .clock(acme.clock())
        .issuer(realms(&s).allow_tenants_if(|_| true).max_tenants(1000))
        .build()
        .await
        .unwrap();
    let mut discovered = 0;
    for i in 0..12 {
        let realm = format!("junk-{i}");
        let e = paced
            .verify(&realm_token(&acme, &s, &realm))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), Reason::KeysUnavailable);
        discovered += s.hits(&format!("/realms/{realm}/.well-known/openid-configuration"));
    }
    assert_eq!(discovered, 10, "the burst, then nothing");
    let e = paced
        .verify(&realm_token(&acme, &s, "junk-13"))
        .await
        .unwrap_err();
    let retry = e.retry_after().unwrap();
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(6)).contains(&retry),
        "{retry:?}"
    );
    acme.clock().advance(Duration::from_secs(6));
    let e = paced
        .verify(&realm_token(&acme, &s, "junk-20"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert_eq!(
        s.hits("/realms/junk-20/.well-known/openid-configuration"),
        1
    );
}

/// A tenant whose every request is a token-cache hit is in use: when the
/// table is full it is not taken for idle after 15 minutes (its next new
/// token would then need a discovery, a 503 if its issuer is down).
#[tokio::test]
async fn a_tenant_served_from_the_token_cache_is_not_idle() {
    // Room for one tenant; only the client `billing-sync` is allowed.
    let (acme, s, v) =
        acme_and_globex(|i| i.max_tenants(1).allowed_client_ids(["billing-sync"])).await;
    let token = realm_token(&acme, &s, "acme");
    // Cached from its second sighting; then 20 minutes of cache hits.
    for _ in 0..2 {
        v.verify(&token).await.unwrap();
    }
    assert_eq!(v.cached_tokens(), 1, "what follows is cache hits");
    for _ in 0..20 {
        acme.clock().advance(Duration::from_secs(60));
        v.verify(&token).await.unwrap();
    }
    let e = v
        .verify(&realm_token(&acme, &s, "globex"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert!(e.retry_after().is_some());
    assert_eq!(
        s.hits("/realms/globex/.well-known/openid-configuration"),
        0,
        "acme, in use, kept its place"
    );
    // Unused for 15 minutes, it makes room.
    acme.clock().advance(Duration::from_secs(15 * 60));
    v.verify(&realm_token(&acme, &s, "globex")).await.unwrap();
    assert_eq!(s.hits("/realms/globex/.well-known/openid-configuration"), 1);
}

/// A tenant is in use by its verified tokens, not by tokens that merely
/// name it: forged ones cannot keep its place in a full table.
#[tokio::test]
async fn a_tenant_is_in_use_by_its_verified_tokens_only() {
    // Room for one tenant; only the client `billing-sync` is allowed.
    let (acme, s, v) =
        acme_and_globex(|i| i.max_tenants(1).allowed_client_ids(["billing-sync"])).await;
    let minutes = |m: u64| acme.clock().advance(Duration::from_secs(m * 60));
    let discovered = |t: &str| s.hits(&format!("/realms/{t}/.well-known/openid-configuration"));
    v.verify(&realm_token(&acme, &s, "acme")).await.unwrap();
    // Minute 10: a new token, verified in full (no cache hit).
    minutes(10);
    v.verify(&realm_token(&acme, &s, "acme")).await.unwrap();
    minutes(10);
    let e = v
        .verify(&realm_token(&acme, &s, "globex"))
        .await
        .unwrap_err();
    assert_eq!(
        e.reason(),
        Reason::KeysUnavailable,
        "acme used at minute 10"
    );
    assert_eq!(discovered("globex"), 0);
    // Minute 20: a forged acme token (its signature changed).
    let mut forged = realm_token(&acme, &s, "acme");
    let at = forged.rfind('.').unwrap() + 1;
    let other = if forged[at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    forged.replace_range(at..=at, other);
    let e = v.verify(&forged).await.unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidSignature);
    // A genuine acme token of a client the issuer's allow-list refuses.
    let intruder = acme
        .token()
        .client_id("intruder")
        .claim("iss", s.url("/realms/acme"))
        .sign();
    let e = v.verify(&intruder).await.unwrap_err();
    assert_eq!(e.reason(), Reason::ClientNotAllowed);
    // Minute 26: 16 minutes after acme's last allowed, verified token.
    minutes(6);
    v.verify(&realm_token(&acme, &s, "globex")).await.unwrap();
    assert_eq!(discovered("globex"), 1);
}

/// When the tenant table is full, only a tenant whose issuer never answered
/// is taken for dead: not one whose first fetch is still under way, nor one
/// that loaded keys and failed a fetch since. Neither makes room, so a new
/// tenant waits (503) without a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_tenant_that_never_loaded_is_taken_for_dead() {
    use support::Reply;
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let s = keycloak(&[("acme", &acme), ("slow", &acme), ("initech", &acme)]).await;
    let discovery = |realm: &str| format!("/realms/{realm}/.well-known/openid-configuration");
    let slow_doc = json!({
        "issuer": s.url("/realms/slow"),
        "jwks_uri": s.url("/realms/slow/protocol/openid-connect/certs"),
    })
    .to_string();
    s.set(
        &discovery("slow"),
        Reply::Delay(
            // Long enough that a stalled machine cannot let it land
            // before the next step looks.
            Duration::from_secs(3),
            Box::new(Reply::Json(axum::http::StatusCode::OK, slow_doc)),
        ),
    );
    let v = Verifier::builder()
        .fetch_timeout(Duration::from_secs(10))
        .issuer(
            realms(&s)
                .allow_tenants_if(|_| true)
                .max_tenants(2)
                .fetch_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .await
        .unwrap();
    assert!(v.verify(&realm_token(&acme, &s, "acme")).await.is_ok());
    // "slow" takes the second place; its first fetch is under way.
    let slow = tokio::spawn({
        let (v, token) = (v.clone(), realm_token(&acme, &s, "slow"));
        async move { v.verify(&token).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.hits(&discovery("slow")) == 0 {
        assert!(std::time::Instant::now() < deadline, "slow's fetch started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A new tenant, with the table full: it waits (503), without a fetch.
    let initech_waits = async |why: &str| {
        let e = v
            .verify(&realm_token(&acme, &s, "initech"))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), Reason::KeysUnavailable);
        assert_eq!(s.hits(&discovery("initech")), 0, "{why}");
    };
    initech_waits("a fetch under way is not a dead issuer").await;
    assert!(slow.await.unwrap().is_ok(), "slow loads its keys");

    // "slow" loaded its keys; then its issuer fails a refetch.
    s.set(
        "/realms/slow/protocol/openid-connect/certs",
        Reply::text(500, "down"),
    );
    let unknown = acme
        .token()
        .kid("a-kid-nobody-published")
        .client_id("billing-sync")
        .claim("iss", s.url("/realms/slow"))
        .sign();
    assert!(v.verify(&unknown).await.is_err());
    let slow_health = v
        .health()
        .issuers()
        .iter()
        .find(|h| h.tenant.as_deref() == Some("slow"))
        .cloned()
        .unwrap();
    assert!(slow_health.last_error.is_some(), "the refetch failed");
    assert!(slow_health.keys_loaded, "with the keys it had");
    initech_waits("a failed refetch is not a dead issuer").await;
    assert!(v.verify(&realm_token(&acme, &s, "slow")).await.is_ok());
}

#[tokio::test]
async fn preload_loads_every_listed_tenant() {
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let s = keycloak(&[("acme", &acme), ("globex", &acme)]).await;
    let v = build(realms(&s).allowed_tenants(["acme", "globex"])).await;
    v.preload().await.unwrap();
    assert_eq!(s.hits("/realms/acme/protocol/openid-connect/certs"), 1);
    assert_eq!(s.hits("/realms/globex/protocol/openid-connect/certs"), 1);
    // A listed tenant that cannot be loaded stops the start, named.
    let v = build(realms(&s).allowed_tenants(["acme", "nowhere"])).await;
    match v.preload().await {
        Err(BuildError::Unavailable { issuer, .. }) => {
            assert_eq!(issuer, s.url("/realms/nowhere"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn issuer_templates_are_checked_at_build() {
    async fn build(issuer: Issuer) -> Result<Verifier, BuildError> {
        Verifier::builder().issuer(issuer).build().await
    }
    let entra =
        || Issuer::new("https://login.microsoftonline.com/{tenantid}/v2.0").audience("api://x");
    // A template admits no tenant silently: a list or a filter is required.
    let e = build(entra()).await.unwrap_err().to_string();
    assert!(e.contains("allowed_tenants or allow_tenants_if"), "{e}");
    let e = build(entra().allowed_tenants(Vec::<String>::new()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tenant list is empty"), "{e}");
    // Tenants without a template: a mistake, not a silent no-op.
    let e = build(
        Issuer::new("https://login.microsoftonline.com/abc/v2.0")
            .audience("api://x")
            .allowed_tenants(["abc"]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("need an issuer template"), "{e}");
    for bad in [
        "https://login.microsoftonline.com/{tenant}/v2.0",
        "https://{tenantid}.example.com/",
        "https://example.com/t-{tenantid}",
        "https://example.com/{tenantid}/{tenantid}",
    ] {
        let r = build(
            Issuer::new(bad)
                .audience("api://x")
                .allow_tenants_if(|_| true),
        )
        .await;
        assert!(matches!(r, Err(BuildError::Config(_))), "{bad}: {r:?}");
    }
    // Zero is out of range, whether the tenants come from a filter or a
    // list (not "a list longer than max_tenants").
    for issuer in [
        entra().allow_tenants_if(|_| true),
        entra().allowed_tenants(["t1"]),
    ] {
        let e = build(issuer.max_tenants(0)).await.unwrap_err();
        assert!(
            matches!(
                e,
                BuildError::OutOfRange {
                    setting: "Issuer::max_tenants",
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert!(build(entra().allow_tenants_if(|_| true)).await.is_ok());
}

#[tokio::test]
async fn an_allow_list_is_never_paced_and_must_fit() {
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let names: Vec<String> = (0..12).map(|i| format!("cust-{i}")).collect();
    let realms_served: Vec<(&str, &TestIssuer)> =
        names.iter().map(|n| (n.as_str(), &acme)).collect();
    let s = keycloak(&realms_served).await;
    // Twelve listed tenants, more than a burst: all load at start.
    let v = build(realms(&s).allowed_tenants(names.clone())).await;
    v.preload().await.unwrap();
    for n in &names {
        assert_eq!(
            s.hits(&format!("/realms/{n}/protocol/openid-connect/certs")),
            1,
            "{n}"
        );
        assert!(v.verify(&realm_token(&acme, &s, n)).await.is_ok(), "{n}");
    }
    // A list that cannot fit in max_tenants is refused at build.
    let e = Verifier::builder()
        .issuer(realms(&s).allowed_tenants(names.clone()).max_tenants(11))
        .build()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("more than Issuer::max_tenants"),
        "{e}"
    );
    // Exactly max_tenants fits.
    let v = build(realms(&s).allowed_tenants(names.clone()).max_tenants(12)).await;
    v.preload().await.unwrap();
    // With one key set for every tenant (a jwks_url, or Entra's
    // tenant-independent keys) the list takes no place: any length builds.
    let one_set = Verifier::builder()
        .issuer(
            realms(&s)
                .jwks_url(s.url("/realms/cust-0/protocol/openid-connect/certs"))
                .allowed_tenants(names.clone())
                .max_tenants(2),
        )
        .build()
        .await
        .unwrap();
    assert!(
        one_set
            .verify(&realm_token(&acme, &s, "cust-7"))
            .await
            .is_ok()
    );
    assert!(
        Verifier::builder()
            .issuer(
                Issuer::new(s.url("/{tenantid}/v2.0"))
                    .preset(Preset::Entra)
                    .audience(DEFAULT_AUDIENCE)
                    .allowed_tenants([TENANT_A, TENANT_B, TENANT_C])
                    .max_tenants(2),
            )
            .build()
            .await
            .is_ok()
    );
}

/// A listed tenant must be a name a token's `iss` could carry: anything
/// else is a mistake said at build, never a place taken nor a URL made of it.
#[tokio::test]
async fn listed_tenants_must_be_tenant_identifiers() {
    let s = ScriptServer::start().await;
    let long = "a".repeat(129);
    for bad in [
        "",
        ".hidden",
        "../admin",
        "a b",
        "x/y",
        "caf\u{e9}",
        "\u{1b}[2J",
        long.as_str(),
    ] {
        let e = Verifier::builder()
            .issuer(realms(&s).allowed_tenants(["acme", bad]))
            .build()
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("is not a tenant identifier"), "{bad:?}: {m}");
    }
    let fine = "a".repeat(128);
    for good in ["acme", "a.b-c_D9", fine.as_str()] {
        assert!(
            Verifier::builder()
                .issuer(realms(&s).allowed_tenants([good]))
                .build()
                .await
                .is_ok(),
            "{good:?}"
        );
    }
}

#[tokio::test]
async fn a_template_with_a_jwks_url_and_the_cache_keep_the_tokens_own_issuer() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    let v = Verifier::builder()
        .issuer(
            Issuer::new(s.url("/{tenantid}/v2.0"))
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE)
                .jwks_url(s.url("/common/discovery/v2.0/keys"))
                .allowed_tenants([TENANT_A, TENANT_B]),
        )
        .build()
        .await
        .unwrap();
    let (a, b) = (
        entra_token(&keys, &s, TENANT_A),
        entra_token(&keys, &s, TENANT_B),
    );
    // Three sightings each: the later ones come from the token cache.
    for _ in 0..3 {
        for (token, tenant) in [(&a, TENANT_A), (&b, TENANT_B)] {
            let p = v.verify(token).await.unwrap();
            assert_eq!(p.tenant(), Some(tenant));
            assert_eq!(p.issuer(), s.url(&format!("/{tenant}/v2.0")));
        }
    }
    assert_eq!(
        v.cached_tokens(),
        2,
        "both admitted on their second sighting"
    );
    assert_eq!(
        s.hits("/common/v2.0/.well-known/openid-configuration"),
        0,
        "no discovery"
    );
    assert_eq!(s.hits("/common/discovery/v2.0/keys"), 1);
}

#[tokio::test]
async fn an_exact_issuer_wins_over_a_template_and_templates_must_not_overlap() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    let exact_a = s.url(&format!("/{TENANT_A}/v2.0"));
    // Tenant A configured on its own (another audience), the rest by template.
    let v = Verifier::builder()
        .issuer(
            Issuer::new(exact_a.clone())
                .preset(Preset::Entra)
                .audience("api://only-for-a")
                .jwks_url(s.url("/common/discovery/v2.0/keys")),
        )
        .issuer(
            Issuer::new(s.url("/{tenantid}/v2.0"))
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE)
                .allow_tenants_if(|_| true),
        )
        .build()
        .await
        .unwrap();
    let e = v
        .verify(&entra_token(&keys, &s, TENANT_A))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidAudience, "A's own rules apply");
    assert_eq!(e.issuer(), Some(exact_a.as_str()));
    assert!(v.verify(&entra_token(&keys, &s, TENANT_B)).await.is_ok());

    let e = Verifier::builder()
        .issuer(
            Issuer::new("https://h.example/realms/{tenantid}")
                .audience("x")
                .allow_tenants_if(|_| true),
        )
        .issuer(
            Issuer::new("https://h.example/{tenantid}/x")
                .audience("x")
                .allow_tenants_if(|_| true),
        )
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
    let e = Verifier::builder()
        .issuer(
            Issuer::new("https://h.example/{tenantid}/")
                .audience("x")
                .allow_tenants_if(|_| true)
                .max_tenants(10_001),
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::OutOfRange {
                setting: "Issuer::max_tenants",
                ..
            }
        ),
        "{e:?}"
    );
}

/// An exact Entra issuer (one tenant) with Microsoft's shared key set,
/// whose keys name the issuer template: the key vouches only for a token
/// whose tenant claim is the tenant in its `iss`. A `tid` naming another
/// tenant would otherwise become the principal's tenant.
#[tokio::test]
async fn an_exact_entra_issuer_on_the_shared_keys_checks_the_tenant_claim() {
    let keys = TestIssuer::start_with(Preset::Entra).await;
    let s = entra(&keys).await;
    let v = Verifier::builder()
        .issuer(
            Issuer::new(s.url(&format!("/{TENANT_A}/v2.0")))
                .preset(Preset::Entra)
                .audience(DEFAULT_AUDIENCE)
                .jwks_url(s.url("/common/discovery/v2.0/keys")),
        )
        .build()
        .await
        .unwrap();
    let p = v.verify(&entra_token(&keys, &s, TENANT_A)).await.unwrap();
    assert_eq!(p.tenant(), Some(TENANT_A));
    let mixed = keys
        .token()
        .client_id("6e74172b-be56-4843-9ff4-e66a39bb12e3")
        .claim("iss", s.url(&format!("/{TENANT_A}/v2.0")))
        .claim("tid", TENANT_B)
        .sign();
    let e = v.verify(&mixed).await.unwrap_err();
    assert_eq!(e.reason(), Reason::KeyIssuerMismatch);
}
