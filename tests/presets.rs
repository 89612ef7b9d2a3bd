//! Each provider preset reads the claims its provider's documentation names,
//! spelled out literally here (not taken from the preset itself), and both the
//! first- and the second-listed scope and client-id claims.

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Preset, Verifier};
use serde_json::{Value, json};

struct Expect {
    client_id: Option<&'static str>,
    tenant: Option<&'static str>,
    scopes: &'static [&'static str],
}

/// Claims the generic test issuer writes that a preset might read: removed,
/// so each case states exactly the claims it means.
const GENERIC: &[&str] = &["sub", "client_id", "scope"];

async fn check(provider: Preset, claims: Value, expect: Expect) {
    let issuer = TestIssuer::start_with(Preset::Generic).await;
    let mut cfg = issuer.config().preset(provider);
    if provider == Preset::Cognito {
        cfg = m2m_guard::Issuer::new(issuer.issuer())
            .preset(Preset::Cognito)
            .allowed_client_ids(["cg-client"]);
    }
    let v = Verifier::builder().issuer(cfg).build().await.unwrap();
    let mut t = issuer.token();
    for name in GENERIC
        .iter()
        .filter(|n| !claims.as_object().unwrap().contains_key(**n))
    {
        t = t.without_claim(*name);
    }
    if provider == Preset::Cognito {
        t = t.without_claim("aud");
    }
    for (k, val) in claims.as_object().unwrap() {
        t = t.claim(k.clone(), val.clone());
    }
    let p = v
        .verify(&t.sign())
        .await
        .unwrap_or_else(|e| panic!("{provider:?} {claims}: {e:?}"));
    assert_eq!(p.client_id(), expect.client_id, "{provider:?} {claims}");
    assert_eq!(p.tenant(), expect.tenant, "{provider:?} {claims}");
    let mut got: Vec<&str> = p.scopes().iter().collect();
    got.sort_unstable();
    assert_eq!(got, expect.scopes, "{provider:?} {claims}");
}

#[tokio::test]
async fn kinde_org_code_scope_scp_azp_client_id() {
    let p = Preset::Kinde;
    let first = json!({"azp": "k1", "org_code": "org_k", "scope": "a b", "sub": "k1"});
    check(
        p,
        first,
        Expect {
            client_id: Some("k1"),
            tenant: Some("org_k"),
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"client_id": "k2", "scp": ["c"]});
    check(
        p,
        second,
        Expect {
            client_id: Some("k2"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}

#[tokio::test]
async fn scalekit_oid_scopes_scope_client_id_sub() {
    let p = Preset::Scalekit;
    let first = json!({"client_id": "m2m_1", "oid": "org_s", "scopes": ["a", "b"], "sub": "m2m_1"});
    check(
        p,
        first,
        Expect {
            client_id: Some("m2m_1"),
            tenant: Some("org_s"),
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"sub": "m2m_2", "scope": "c"});
    check(
        p,
        second,
        Expect {
            client_id: Some("m2m_2"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}

#[tokio::test]
async fn auth0_org_id_scope_permissions_azp_client_id() {
    let p = Preset::Auth0;
    let first = json!({"azp": "a0", "org_id": "org_a", "scope": "a b", "sub": "a0@clients"});
    check(
        p,
        first,
        Expect {
            client_id: Some("a0"),
            tenant: Some("org_a"),
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"client_id": "a1", "permissions": ["c"]});
    check(
        p,
        second,
        Expect {
            client_id: Some("a1"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}

#[tokio::test]
async fn okta_scp_scope_cid_client_id() {
    let p = Preset::Okta;
    let first = json!({"cid": "0oa1", "scp": ["a", "b"], "sub": "0oa1"});
    check(
        p,
        first,
        Expect {
            client_id: Some("0oa1"),
            tenant: None,
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"client_id": "0oa2", "scope": "c"});
    check(
        p,
        second,
        Expect {
            client_id: Some("0oa2"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}

#[tokio::test]
async fn entra_tid_roles_scp_azp_appid() {
    let p = Preset::Entra;
    let first = json!({"azp": "app-1", "tid": "tenant-1", "roles": ["a", "b"], "sub": "sp"});
    check(
        p,
        first,
        Expect {
            client_id: Some("app-1"),
            tenant: Some("tenant-1"),
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"appid": "app-2", "scp": "c"});
    check(
        p,
        second,
        Expect {
            client_id: Some("app-2"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}

#[tokio::test]
async fn keycloak_scope_azp_client_id() {
    let p = Preset::Keycloak;
    let first = json!({"azp": "svc", "scope": "a b", "sub": "uuid"});
    check(
        p,
        first,
        Expect {
            client_id: Some("svc"),
            tenant: None,
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"client_id": "svc2"});
    check(
        p,
        second,
        Expect {
            client_id: Some("svc2"),
            tenant: None,
            scopes: &[],
        },
    )
    .await;
}

#[tokio::test]
async fn cognito_scope_client_id_token_use() {
    let p = Preset::Cognito;
    let claims = json!({"client_id": "cg-client", "scope": "api/a api/b", "token_use": "access", "sub": "cg-client"});
    check(
        p,
        claims,
        Expect {
            client_id: Some("cg-client"),
            tenant: None,
            scopes: &["api/a", "api/b"],
        },
    )
    .await;
}

#[tokio::test]
async fn generic_scope_scp_client_id_azp() {
    let p = Preset::Generic;
    let first = json!({"client_id": "g1", "scope": "a b", "sub": "g1"});
    check(
        p,
        first,
        Expect {
            client_id: Some("g1"),
            tenant: None,
            scopes: &["a", "b"],
        },
    )
    .await;
    let second = json!({"azp": "g2", "scp": ["c"]});
    check(
        p,
        second,
        Expect {
            client_id: Some("g2"),
            tenant: None,
            scopes: &["c"],
        },
    )
    .await;
}
