//! Each provider preset reads the claims its provider's documentation names,
//! spelled out literally here (not taken from the preset itself), and both the
//! first- and the second-listed scope and client-id claims.

mod support;

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Algorithm, Preset, Reason, Verifier};
use serde_json::{Value, json};
use support::ScriptServer;

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

/// Each provider's key set in the shape it publishes, served on loopback:
/// the machine token is accepted with the right tenant, client and scopes,
/// and the provider's key-set traps are refused with a precise reason.
///
/// - Entra: no `alg`, `x5t`, `x5c`, an `issuer` member (a key scoped to
///   another issuer: `key_issuer_mismatch`).
/// - Cognito: `kid`s with `+`, `/` and `=`.
/// - Keycloak: an `enc` key (`RSA-OAEP`) beside the signing key (a token
///   naming it: `unknown_key`).
/// - Auth0: `x5t` and `x5c` beside `n`, `e`; Kinde / Scalekit / Okta: `use`,
///   `alg`, provider-style `kid`s.
#[tokio::test]
async fn each_providers_published_key_set_shape() {
    for preset in [
        Preset::Kinde,
        Preset::Scalekit,
        Preset::Auth0,
        Preset::Okta,
        Preset::Entra,
        Preset::Keycloak,
        Preset::Cognito,
    ] {
        let issuer = TestIssuer::start_with(preset).await;
        let s = ScriptServer::start().await;
        let real_kid = issuer.current_kid(Algorithm::RS256);
        let kid = match preset {
            Preset::Cognito => "Mq5VqrSbDTwq0C3bG+Q/2Jt8rDkKz7XdR9cIE/hXyAk=",
            Preset::Scalekit => "snk_53196347493285640",
            Preset::Kinde => "38:0c:b8:91:a7:77:19:2f:ad:b5:72:2c:37:c9:a2:bb",
            Preset::Okta => "3bYSwGmMvC0vA6yAH0fY5qBRhTsxwGmUR0w0rLtYVyo",
            _ => "nOo3ZDrODXEK1jKWhXslHR_KXEg",
        };
        let mut doc = issuer.jwks_document();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.retain(|k| k["kid"] == json!(real_kid));
        let k = keys[0].as_object_mut().unwrap();
        k.insert("kid".into(), kid.into());
        k.insert("use".into(), "sig".into());
        match preset {
            Preset::Entra | Preset::Auth0 => {
                if preset == Preset::Entra {
                    k.remove("alg");
                    k.insert("issuer".into(), issuer.issuer().into());
                }
                k.insert("x5t".into(), "nOo3ZDrODXEK1jKWhXslHR_KXEg".into());
                k.insert(
                    "x5c".into(),
                    json!(["MIIDBTCCAe2gAwIBAgIQN33ROaIJ6bJBWDCxtmJEbjAN"]),
                );
            }
            _ => {}
        }
        let sig = keys[0].clone();
        if preset == Preset::Keycloak {
            let mut enc = sig.clone();
            enc["kid"] = json!("enc-key-1");
            enc["use"] = json!("enc");
            enc["alg"] = json!("RSA-OAEP");
            keys.push(enc);
        }
        if preset == Preset::Entra {
            // The same key material, scoped to another tenant's issuer.
            let mut other = sig.clone();
            other["kid"] = json!("other-tenant-key");
            // Same host, the issuer's own identifier extended: only an exact
            // match counts.
            other["issuer"] = json!(format!("{}/other-tenant", issuer.issuer()));
            keys.push(other);
        }
        s.json("/keys", doc.to_string());

        let mut cfg = issuer.config().jwks_url(s.url("/keys"));
        if preset == Preset::Cognito {
            cfg = cfg.allowed_client_ids(["test-client"]);
        }
        let v = Verifier::builder().issuer(cfg).build().await.unwrap();
        let token = |kid: &str| {
            issuer
                .token()
                .org("org_7d2a")
                .scopes(["orders:read"])
                .kid(kid)
                .sign()
        };
        let p = v
            .verify(&token(kid))
            .await
            .unwrap_or_else(|e| panic!("{preset:?}: {e:?}"));
        assert_eq!(p.client_id(), Some("test-client"), "{preset:?}");
        assert!(p.has_scope("orders:read"), "{preset:?}");
        let tenant = match preset {
            Preset::Kinde | Preset::Scalekit | Preset::Entra | Preset::Auth0 => Some("org_7d2a"),
            _ => None,
        };
        assert_eq!(p.tenant(), tenant, "{preset:?}");

        let trap = match preset {
            Preset::Keycloak => Some(("enc-key-1", Reason::UnknownKey)),
            Preset::Entra => Some(("other-tenant-key", Reason::KeyIssuerMismatch)),
            _ => None,
        };
        if let Some((kid, reason)) = trap {
            let e = v.verify(&token(kid)).await.unwrap_err();
            assert_eq!(e.reason(), reason, "{preset:?}");
        }
        // A key set holding the token's key under another kid does not verify it.
        let e = v.verify(&token(&real_kid)).await.unwrap_err();
        assert_eq!(e.reason(), Reason::UnknownKey, "{preset:?}");
    }
}
