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
    // These cases are about claim names; the machine-token rules have their
    // own tests below, so users' tokens are accepted here.
    let v = Verifier::builder()
        .issuer(cfg.accept_user_tokens())
        .build()
        .await
        .unwrap();
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
async fn kinde_org_code_scope_not_scp_azp_client_id() {
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
    // `scp` holds the scopes requested, not granted: never read.
    let second = json!({"client_id": "k2", "scope": "c", "scp": ["requested"]});
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
async fn entra_tid_roles_or_scp_azp_appid() {
    let p = Preset::Entra;
    // An app-only token: application permissions in `roles`.
    let first = json!({"azp": "app-1", "tid": "tenant-1", "roles": ["a", "b"], "sub": "sp", "oid": "sp", "idtyp": "app"});
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
    // A user's (delegated) token: `scp`, never merged with `roles`.
    let second = json!({"appid": "app-2", "scp": "c", "roles": ["app-role"]});
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
    let first = json!({"azp": "svc", "scope": "a b", "sub": "uuid", "typ": "Bearer"});
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
    let second = json!({"client_id": "svc2", "typ": "Bearer"});
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

/// Every preset, on tokens shaped like its provider's: the machine token is
/// accepted as a machine's; the same provider's user token is refused by
/// default (`user_token`) and accepted as a user's on opt-in; ID-token marks
/// are refused even then.
#[tokio::test]
async fn machine_tokens_only_by_default_under_every_preset() {
    use m2m_guard::Reason;
    for preset in [
        Preset::Generic,
        Preset::Kinde,
        Preset::Scalekit,
        Preset::Auth0,
        Preset::Okta,
        Preset::Entra,
        Preset::Keycloak,
        Preset::Cognito,
    ] {
        let issuer = TestIssuer::start_with(preset).await;
        let machine_only = issuer.verifier().await;
        let mut cfg = issuer.config().accept_user_tokens();
        if preset == Preset::Cognito {
            cfg = cfg.allowed_client_ids(["test-client"]);
        }
        let both = Verifier::builder().issuer(cfg).build().await.unwrap();

        let machine = issuer.token().scopes(["read"]).sign();
        let p = machine_only
            .verify(&machine)
            .await
            .unwrap_or_else(|e| panic!("{preset:?}: {e:?}"));
        assert!(p.is_machine(), "{preset:?}");
        assert_eq!(p.client_id(), Some("test-client"), "{preset:?}");
        assert!(p.has_scope("read"), "{preset:?}");

        let user = issuer.token().user("alice").scopes(["read"]).sign();
        let e = machine_only.verify(&user).await.unwrap_err();
        assert_eq!(e.reason(), Reason::UserToken, "{preset:?}");
        let p = both
            .verify(&user)
            .await
            .unwrap_or_else(|e| panic!("{preset:?} user: {e:?}"));
        assert!(!p.is_machine(), "{preset:?}");
        assert!(p.has_scope("read"), "{preset:?}: the user's granted scopes");

        for (claim, value) in [("nonce", json!("n")), ("at_hash", json!("h"))] {
            if preset == Preset::Keycloak && claim == "nonce" {
                continue; // Keycloak users' access tokens carry one; `typ` decides
            }
            for v in [&machine_only, &both] {
                let t = issuer.token().claim(claim, value.clone()).sign();
                let e = v.verify(&t).await.unwrap_err();
                assert_eq!(e.reason(), Reason::IdToken, "{preset:?} {claim}");
            }
        }
    }
}

/// Each provider's own ID-token marks.
#[tokio::test]
async fn provider_specific_id_token_marks_are_refused() {
    use m2m_guard::Reason;
    let keycloak = TestIssuer::start_with(Preset::Keycloak).await;
    let v = keycloak.verifier().await;
    for (typ, reason) in [
        ("ID", Reason::IdToken),
        ("Refresh", Reason::IdToken),
        ("Logout", Reason::IdToken),
        ("bearer", Reason::InvalidClaim),
    ] {
        let t = keycloak.token().claim("typ", typ).sign();
        assert_eq!(v.verify(&t).await.unwrap_err().reason(), reason, "{typ}");
    }
    let t = keycloak.token().without_claim("typ").sign();
    assert_eq!(
        v.verify(&t).await.unwrap_err().reason(),
        Reason::MissingClaim
    );
    // A Keycloak ID token under the generic preset is refused too.
    let generic = Verifier::builder()
        .issuer(
            keycloak
                .config()
                .preset(Preset::Generic)
                .accept_user_tokens(),
        )
        .build()
        .await
        .unwrap();
    let t = keycloak.token().claim("typ", "ID").sign();
    assert_eq!(
        generic.verify(&t).await.unwrap_err().reason(),
        Reason::IdToken
    );

    let cognito = TestIssuer::start_with(Preset::Cognito).await;
    let t = cognito.token().claim("token_use", "id").sign();
    let e = cognito.verifier().await.verify(&t).await.unwrap_err();
    assert_eq!(
        (e.reason(), e.claim_name()),
        (Reason::IdToken, Some("token_use"))
    );

    let okta = TestIssuer::start_with(Preset::Okta).await;
    let t = okta.token().claim("jti", "ID.4eAWJOCMB3SX8XewDfVR").sign();
    let e = okta.verifier().await.verify(&t).await.unwrap_err();
    assert_eq!((e.reason(), e.claim_name()), (Reason::IdToken, Some("jti")));
    let t = okta.token().claim("jti", "AT.4eAWJOCMB3SX8XewDfVR").sign();
    assert!(okta.verifier().await.verify(&t).await.is_ok());
}
