//! Core verification against a real key-set server on loopback.

mod support;

use m2m_guard::test_util::{DEFAULT_AUDIENCE, Outage, TestIssuer};
use m2m_guard::{Algorithm, BuildError, FetchError, Issuer, Preset, Reason, Verifier};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Reply, ScriptServer};

async fn reason(v: &Verifier, token: &str) -> Reason {
    v.verify(token)
        .await
        .expect_err("token must be rejected")
        .reason()
}

#[tokio::test]
async fn accepts_valid_tokens_of_each_algorithm_and_reads_the_principal() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for alg in Algorithm::ALL {
        let token = issuer
            .token()
            .alg(alg)
            .client_id("billing-sync")
            .org("org_123")
            .scopes(["read:users", "write:flags"])
            .sign();
        let p = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(p.issuer(), issuer.issuer());
        assert_eq!(p.client_id(), Some("billing-sync"));
        assert_eq!(p.subject(), None, "Kinde M2M tokens carry no sub");
        assert!(p.is_machine(), "gty: client_credentials");
        assert_eq!(p.tenant(), Some("org_123"));
        assert!(p.has_scope("read:users") && p.has_scope("write:flags"));
        assert_eq!(
            p.scopes().len(),
            2,
            "scope and scp are merged without duplicates"
        );
        assert!(p.jti().is_some());
        assert!(p.expires_at() > std::time::SystemTime::now());
    }
    // One fetch served every algorithm.
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn every_algorithm_refuses_a_tampered_token_and_a_foreign_key() {
    let issuer = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for alg in Algorithm::ALL {
        let token = issuer.token().alg(alg).scopes(["a"]).sign();
        assert!(v.verify(&token).await.is_ok(), "{alg}");
        // Same header and signature, other claims.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let other = issuer.token().alg(alg).scopes(["admin"]).sign();
        let payload = other.split('.').nth(1).unwrap();
        let header = head.split('.').next().unwrap();
        let spliced = format!("{header}.{payload}.{sig}");
        assert_eq!(
            reason(&v, &spliced).await,
            Reason::InvalidSignature,
            "{alg}"
        );
        // Signed by another issuer's key under this issuer's kid.
        let foreign = stranger
            .token()
            .alg(alg)
            .claim("iss", issuer.issuer())
            .kid(issuer.current_kid(alg))
            .sign();
        assert_eq!(
            reason(&v, &foreign).await,
            Reason::InvalidSignature,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn a_global_token_has_no_tenant() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let p = v.verify(&issuer.token().sign()).await.unwrap();
    assert_eq!(p.tenant(), None);
    assert!(p.scopes().is_empty());
}

/// The principals of one tenant share one copy of its name (a handler
/// that reads it finds it in the CPU cache); the tokens are distinct, each
/// verified in full.
#[tokio::test]
async fn the_principals_of_one_tenant_share_its_name() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let of = |org: &str, client: &str| issuer.token().org(org).client_id(client).sign();
    let (a1, a2, b) = (of("org_a", "one"), of("org_a", "two"), of("org_b", "one"));
    let (p1, p2, p3) = (
        v.verify(&a1).await.unwrap(),
        v.verify(&a2).await.unwrap(),
        v.verify(&b).await.unwrap(),
    );
    let (t1, t2, t3) = (
        p1.tenant().unwrap(),
        p2.tenant().unwrap(),
        p3.tenant().unwrap(),
    );
    assert_eq!((t1, t2, t3), ("org_a", "org_a", "org_b"));
    assert_eq!(t1.as_ptr(), t2.as_ptr(), "one copy of org_a");
    assert_ne!(t1.as_ptr(), t3.as_ptr());
}

#[tokio::test]
async fn audience_must_contain_a_configured_one() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    assert_eq!(
        reason(&v, &issuer.token().audience("https://other.api").sign()).await,
        Reason::InvalidAudience
    );
    let ok = issuer
        .token()
        .audiences(["https://other.api", DEFAULT_AUDIENCE])
        .sign();
    assert!(v.verify(&ok).await.is_ok());
    // An array must name a configured audience too.
    let elsewhere = issuer
        .token()
        .audiences(["https://other.api", "https://third.api"])
        .sign();
    assert_eq!(reason(&v, &elsewhere).await, Reason::InvalidAudience);
    assert_eq!(
        reason(&v, &issuer.token().without_claim("aud").sign()).await,
        Reason::MissingClaim
    );
    for bad in [
        json!([]),
        json!({"a": 1}),
        json!(7),
        json!([DEFAULT_AUDIENCE, 3]),
    ] {
        let t = issuer.token().claim("aud", bad.clone()).sign();
        assert_eq!(reason(&v, &t).await, Reason::InvalidClaim, "aud {bad}");
    }
}

/// Scopes as an array: each element one non-empty scope without spaces
/// ("a b" in an array is not two scopes, nor a scope named "a b").
#[tokio::test]
async fn scope_arrays_hold_one_scope_per_element() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let p = v
        .verify(
            &issuer
                .token()
                .claim("scope", json!(["read", "write"]))
                .sign(),
        )
        .await
        .unwrap();
    assert!(p.scopes().contains("read") && p.scopes().contains("write"));
    for bad in [
        json!(["read", "a b"]),
        json!(["read", ""]),
        json!(["read", 7]),
    ] {
        let t = issuer.token().claim("scope", bad.clone()).sign();
        let e = v.verify(&t).await.unwrap_err();
        assert_eq!(
            (e.reason(), e.claim_name()),
            (Reason::InvalidClaim, Some("scope")),
            "scope {bad}"
        );
    }
}

#[tokio::test]
async fn exp_nbf_iat_with_leeway() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config().leeway(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    assert_eq!(
        reason(&v, &issuer.token().expired().sign()).await,
        Reason::Expired
    );
    // Expired 30 s ago: inside the 60 s leeway.
    let t = issuer
        .token()
        .issued_ago(Duration::from_secs(630))
        .expires_in(Duration::from_secs(600))
        .sign();
    assert!(v.verify(&t).await.is_ok());
    // Expired 90 s ago: outside it.
    let t = issuer
        .token()
        .issued_ago(Duration::from_secs(690))
        .expires_in(Duration::from_secs(600))
        .sign();
    assert_eq!(reason(&v, &t).await, Reason::Expired);
    assert_eq!(
        reason(&v, &issuer.token().not_before_in(120).sign()).await,
        Reason::NotYetValid
    );
    assert!(
        v.verify(&issuer.token().not_before_in(30).sign())
            .await
            .is_ok()
    );
    assert_eq!(
        reason(&v, &issuer.token().without_claim("exp").sign()).await,
        Reason::MissingClaim
    );
    let future_iat = issuer
        .token()
        .claim("iat", 4_000_000_000u64)
        .claim("exp", 4_000_003_600u64)
        .sign();
    assert_eq!(reason(&v, &future_iat).await, Reason::IssuedInFuture);
}

#[tokio::test]
async fn leeway_is_capped() {
    let issuer = TestIssuer::start().await;
    let err = Verifier::builder()
        .issuer(issuer.config().leeway(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::OutOfRange {
                setting: "Issuer::leeway",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn numeric_dates_must_be_numbers_in_range() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for bad in [
        json!("4000000000"),
        json!(-5),
        json!(1e300),
        json!(null),
        json!([1]),
        json!(true),
    ] {
        let t = issuer.token().claim("exp", bad.clone()).sign();
        assert_eq!(reason(&v, &t).await, Reason::InvalidClaim, "exp {bad}");
    }
    // A fractional NumericDate is valid (RFC 7519 §2).
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 600.5;
    assert!(
        v.verify(&issuer.token().claim("exp", exp).sign())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn claims_of_the_wrong_type_are_rejected_not_read_as_absent() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for (claim, bad) in [
        ("org_code", json!(123)),
        ("org_code", json!(null)),
        ("org_code", json!("")),
        ("org_code", json!(["org_1"])),
        ("scope", json!(7)),
        ("azp", json!({"id": "x"})),
        ("sub", json!(42)),
        ("jti", json!(1)),
    ] {
        let t = issuer
            .token()
            .scopes(["a"])
            .claim(claim, bad.clone())
            .sign();
        let e = v.verify(&t).await.unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidClaim, "{claim} = {bad}");
        assert_eq!(e.claim_name(), Some(claim));
    }
    let t = issuer.token().claim("iss", json!([issuer.issuer()])).sign();
    assert_eq!(reason(&v, &t).await, Reason::InvalidClaim);
}

#[tokio::test]
async fn every_claim_read_is_type_checked_even_after_an_earlier_one_matched() {
    // Kinde reads the client id from `azp`, then `client_id`: a wrong-typed
    // `client_id` is rejected although `azp` already gave the answer.
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for bad in [
        json!(1),
        json!([]),
        json!({}),
        json!(true),
        json!(null),
        json!(""),
    ] {
        let t = issuer.token().claim("client_id", bad.clone()).sign();
        let e = v.verify(&t).await.unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidClaim, "client_id = {bad}");
        assert_eq!(e.claim_name(), Some("client_id"));
    }
    // Scope claims: the second one is checked even when the first is fine
    // (Auth0 reads `scope`, then `permissions`).
    let auth0 = TestIssuer::start_with(m2m_guard::Preset::Auth0).await;
    let t = auth0
        .token()
        .scopes(["a"])
        .claim("permissions", json!(7))
        .sign();
    assert_eq!(
        reason(&auth0.verifier().await, &t).await,
        Reason::InvalidClaim
    );
    // Strict RFC 9068: `client_id` must be a non-empty string, not merely present.
    let strict = Verifier::builder()
        .issuer(issuer.config().strict_rfc9068(true))
        .build()
        .await
        .unwrap();
    for bad in [json!(null), json!(""), json!(1)] {
        let t = issuer
            .token()
            .typ(Some("at+jwt"))
            .claim("client_id", bad.clone())
            .sign();
        let e = strict.verify(&t).await.unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidClaim, "client_id = {bad}");
    }
    let t = issuer
        .token()
        .typ(Some("at+jwt"))
        .claim("client_id", "test-client")
        .claim("sub", "test-client") // RFC 9068 requires it; Kinde's M2M tokens have none
        .sign();
    assert!(strict.verify(&t).await.is_ok());
}

#[tokio::test]
async fn duplicate_json_members_are_rejected() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let kid = issuer.current_kid(Algorithm::RS256);
    let header = format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"at+jwt"}}"#);
    let now = 2_000_000_000u64;
    let body = |extra: &str| {
        format!(
            r#"{{"iss":"{}","aud":"{DEFAULT_AUDIENCE}","exp":{now},"gty":["client_credentials"],"org_code":"org_a"{extra}}}"#,
            issuer.issuer()
        )
    };
    // Control: the same construction without a duplicate verifies.
    assert!(
        v.verify(&issuer.sign_raw(Algorithm::RS256, &header, &body("")))
            .await
            .is_ok()
    );
    let dup = issuer.sign_raw(Algorithm::RS256, &header, &body(r#","org_code":"org_b""#));
    assert_eq!(reason(&v, &dup).await, Reason::Malformed);
    let dup_header = format!(r#"{{"alg":"RS256","kid":"{kid}","kid":"{kid}"}}"#);
    assert_eq!(
        reason(
            &v,
            &issuer.sign_raw(Algorithm::RS256, &dup_header, &body(""))
        )
        .await,
        Reason::Malformed
    );
}

#[tokio::test]
async fn signature_and_algorithm_rules() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let token = issuer.token().sign();
    assert!(v.verify(&token).await.is_ok());

    // Any change to the signed part breaks the signature.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let other = issuer.token().client_id("someone-else").sign();
    let other_payload = other.split('.').nth(1).unwrap();
    let header = head.split('.').next().unwrap();
    let spliced = format!("{header}.{other_payload}.{sig}");
    assert_eq!(reason(&v, &spliced).await, Reason::InvalidSignature);
    let mut flipped = sig.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{head}.{}", String::from_utf8(flipped).unwrap());
    assert_eq!(reason(&v, &flipped).await, Reason::InvalidSignature);

    // A key pinned to RS256 does not verify a PS256 token.
    let ps = issuer
        .token()
        .alg(Algorithm::PS256)
        .kid(issuer.current_kid(Algorithm::RS256))
        .sign();
    assert_eq!(reason(&v, &ps).await, Reason::AlgorithmMismatch);
    // The ES256 key's kid on an RS256 token.
    let cross = issuer
        .token()
        .kid(issuer.current_kid(Algorithm::ES256))
        .sign();
    assert_eq!(reason(&v, &cross).await, Reason::AlgorithmMismatch);
}

#[tokio::test]
async fn none_and_hmac_are_rejected_before_any_fetch() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::Value::Object(issuer.token().claims()).to_string();
    for alg in ["none", "None", "HS256"] {
        let t = format!(
            "{}.{}.c2ln",
            b64.encode(format!(r#"{{"alg":"{alg}"}}"#)),
            b64.encode(&claims)
        );
        assert_eq!(reason(&v, &t).await, Reason::UnsupportedAlgorithm);
    }
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn configured_algorithms_restrict_further() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config().algorithms([Algorithm::ES256]))
        .build()
        .await
        .unwrap();
    assert!(
        v.verify(&issuer.token().alg(Algorithm::ES256).sign())
            .await
            .is_ok()
    );
    assert_eq!(
        reason(&v, &issuer.token().alg(Algorithm::RS256).sign()).await,
        Reason::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn typ_rules_default_and_strict() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    for ok in [
        Some("at+jwt"),
        Some("application/AT+JWT"),
        Some("JWT"),
        Some("jwt"),
        None,
    ] {
        assert!(
            v.verify(&issuer.token().typ(ok).sign()).await.is_ok(),
            "{ok:?}"
        );
    }
    for bad in ["dpop+jwt", "id_token+jwt", "JOSE", "logout+jwt"] {
        assert_eq!(
            reason(&v, &issuer.token().typ(Some(bad)).sign()).await,
            Reason::InvalidType,
            "{bad}"
        );
    }
    let strict = Verifier::builder()
        .issuer(issuer.config().strict_rfc9068(true))
        .build()
        .await
        .unwrap();
    let full = || {
        issuer
            .token()
            .claim("client_id", "test-client")
            .claim("sub", "test-client")
    };
    assert!(strict.verify(&full().sign()).await.is_ok());
    assert_eq!(
        reason(&strict, &full().typ(Some("JWT")).sign()).await,
        Reason::InvalidType
    );
    assert_eq!(
        reason(&strict, &full().typ(None).sign()).await,
        Reason::InvalidType
    );
    for claim in ["sub", "jti", "iat", "client_id"] {
        let e = strict
            .verify(&full().without_claim(claim).sign())
            .await
            .unwrap_err();
        assert_eq!(
            (e.reason(), e.claim_name()),
            (Reason::MissingClaim, Some(claim))
        );
    }
}

#[tokio::test]
async fn lifetime_and_age_limits() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .max_token_lifetime(Duration::from_secs(3600))
                .max_token_age(Duration::from_secs(1800)),
        )
        .build()
        .await
        .unwrap();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    let long = issuer.token().expires_in(Duration::from_secs(7200)).sign();
    assert_eq!(reason(&v, &long).await, Reason::LifetimeTooLong);
    let old = issuer.token().issued_ago(Duration::from_secs(2000)).sign();
    assert_eq!(reason(&v, &old).await, Reason::TooOld);
    assert_eq!(
        reason(&v, &issuer.token().without_claim("iat").sign()).await,
        Reason::MissingClaim
    );
}

#[tokio::test]
async fn unknown_issuer_is_rejected_without_a_fetch() {
    let trusted = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let v = trusted.verifier().await;
    assert_eq!(
        reason(&v, &stranger.token().sign()).await,
        Reason::UnknownIssuer
    );
    assert_eq!(trusted.jwks_fetches() + stranger.jwks_fetches(), 0);
    // The same issuer string with a different signing key: the signature fails.
    let forged = stranger
        .token()
        .claim("iss", trusted.issuer())
        .kid(trusted.current_kid(Algorithm::RS256))
        .sign();
    assert_eq!(reason(&v, &forged).await, Reason::InvalidSignature);
}

#[tokio::test]
async fn several_issuers_each_with_its_own_audience_and_cache() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start_with(Preset::Scalekit).await;
    let v = Verifier::builder()
        .issuer(a.config())
        .issuer(
            Issuer::new(b.issuer())
                .audience("https://b.api")
                .preset(Preset::Scalekit),
        )
        .build()
        .await
        .unwrap();
    let pa = v.verify(&a.token().org("org_a").sign()).await.unwrap();
    assert_eq!((pa.issuer(), pa.tenant()), (a.issuer(), Some("org_a")));
    let pb = v
        .verify(
            &b.token()
                .audience("https://b.api")
                .org("oid_b")
                .scopes(["x:read"])
                .sign(),
        )
        .await
        .unwrap();
    assert_eq!((pb.issuer(), pb.tenant()), (b.issuer(), Some("oid_b")));
    assert!(pb.has_scope("x:read"));
    // b's token for a's audience: b does not accept it.
    assert_eq!(reason(&v, &b.token().sign()).await, Reason::InvalidAudience);
    assert_eq!((a.jwks_fetches(), b.jwks_fetches()), (1, 1));
}

#[tokio::test]
async fn provider_presets_read_their_claims() {
    let cases: [(Preset, Option<&str>); 6] = [
        (Preset::Auth0, Some("org_x")),
        (Preset::Okta, None),
        (Preset::Entra, Some("tenant-guid")),
        (Preset::Keycloak, None),
        (Preset::Scalekit, Some("org_s")),
        (Preset::Generic, None),
    ];
    for (provider, org) in cases {
        let issuer = TestIssuer::start_with(provider).await;
        let v = issuer.verifier().await;
        let mut b = issuer
            .token()
            .client_id("app-1")
            .scopes(["a:read", "b:write"]);
        if let Some(o) = org {
            b = b.org(o);
        }
        let p = v
            .verify(&b.sign())
            .await
            .unwrap_or_else(|e| panic!("{provider:?}: {e}"));
        assert_eq!(p.client_id(), Some("app-1"), "{provider:?}");
        assert_eq!(p.tenant(), org, "{provider:?}");
        assert!(
            p.scopes().contains_all(["a:read", "b:write"]),
            "{provider:?}"
        );
    }
}

#[tokio::test]
async fn cognito_uses_a_client_allow_list_and_token_use() {
    let issuer = TestIssuer::start_with(Preset::Cognito).await;
    let err = Verifier::builder()
        .issuer(issuer.config())
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("allowed_client_ids"), "{err}");
    let v = Verifier::builder()
        .issuer(issuer.config().allowed_client_ids(["app-1"]))
        .build()
        .await
        .unwrap();
    assert!(
        v.verify(&issuer.token().client_id("app-1").scopes(["s"]).sign())
            .await
            .is_ok()
    );
    assert_eq!(
        reason(&v, &issuer.token().client_id("app-2").sign()).await,
        Reason::ClientNotAllowed
    );
    let id_token = issuer
        .token()
        .client_id("app-1")
        .claim("token_use", "id")
        .sign();
    assert_eq!(reason(&v, &id_token).await, Reason::IdToken);
    let with_aud = issuer
        .token()
        .client_id("app-1")
        .claim("aud", "app-1")
        .sign();
    assert_eq!(reason(&v, &with_aud).await, Reason::InvalidClaim);
}

#[tokio::test]
async fn custom_claim_names_and_typed_claims() {
    #[derive(serde::Deserialize)]
    struct Custom {
        plan: String,
        seats: u32,
    }
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .tenant_claim("https://acme/tenant")
                .scope_claims(["perms"]),
        )
        .build()
        .await
        .unwrap();
    let t = issuer
        .token()
        .claim("https://acme/tenant", "t-9")
        .claim("perms", json!(["p1", "p2"]))
        .claim("plan", "gold")
        .claim("seats", 5)
        .sign();
    let p = v.verify(&t).await.unwrap();
    assert_eq!(p.tenant(), Some("t-9"));
    assert!(p.scopes().contains_all(["p1", "p2"]));
    let c: Custom = p.claims_as().unwrap();
    assert_eq!((c.plan.as_str(), c.seats), ("gold", 5));
    assert_eq!(p.claim("plan"), Some(&json!("gold")));
}

#[tokio::test]
async fn token_size_is_capped() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config())
        .max_token_bytes(2048)
        .build()
        .await
        .unwrap();
    let big = issuer.token().claim("pad", "x".repeat(4096)).sign();
    assert_eq!(reason(&v, &big).await, Reason::TooLarge);
    assert_eq!(issuer.jwks_fetches(), 0);
}

// ===== key set lifecycle =====

#[tokio::test]
async fn concurrent_cold_start_fetches_once() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Delay(Duration::from_millis(200)));
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let v = v.clone();
            let t = token.clone();
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(issuer.jwks_fetches(), 1);
    assert_eq!(v.key_fetch_count(issuer.issuer()), Some(1));
}

#[tokio::test]
async fn rotation_is_picked_up_on_first_sight_and_withdrawn_keys_stop_verifying() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
                .refresh_interval(Duration::from_millis(400)),
        )
        .build()
        .await
        .unwrap();
    let old = issuer.token().sign();
    assert!(v.verify(&old).await.is_ok());
    issuer.rotate_keys();
    let new = issuer.token().sign();
    // The very first request with the new kid is accepted.
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 2);
    assert!(
        v.verify(&old).await.is_ok(),
        "the old key is still published"
    );

    issuer.retire_old_keys();
    // Past the refresh time, a request starts a background refresh without
    // waiting for it (the key server now takes 2 s to answer).
    tokio::time::sleep(Duration::from_millis(500)).await;
    issuer.set_outage(Outage::Delay(Duration::from_secs(2)));
    let started = Instant::now();
    assert!(v.verify(&new).await.is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the request did not wait"
    );
    wait_until(|| issuer.jwks_fetches() >= 3).await;
    // Once that refresh has landed, the withdrawn key's tokens are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match v.verify(&old).await {
            Err(e) if e.reason() == Reason::UnknownKey => break,
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(v.verify(&new).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_flood_costs_at_most_one_fetch_per_cooldown() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .unknown_kid_cooldown(Duration::from_secs(30)),
        )
        .clock(issuer.clock())
        .build()
        .await
        .unwrap();
    // Signed up front (EdDSA: cheap with every backend), so the timing below is the verifier's.
    let mint = |kid: String| issuer.token().alg(Algorithm::EdDSA).kid(kid).sign();
    let flood: Vec<String> = (0..500).map(|i| mint(format!("made-up-{i}"))).collect();
    let again: Vec<String> = (0..100).map(|i| mint(format!("again-{i}"))).collect();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 1);
    let tasks: Vec<_> = flood
        .into_iter()
        .map(|t| {
            let v = v.clone();
            tokio::spawn(async move { v.verify(&t).await.unwrap_err().reason() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Reason::UnknownKey);
    }
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the whole flood");
    for t in &again {
        assert_eq!(reason(&v, t).await, Reason::UnknownKey);
    }
    assert_eq!(issuer.jwks_fetches(), 2, "cooldown holds");
    issuer.clock().advance(Duration::from_secs(29));
    assert_eq!(
        reason(&v, &issuer.token().kid("still-cooling").sign()).await,
        Reason::UnknownKey
    );
    assert_eq!(issuer.jwks_fetches(), 2, "cooldown holds to its end");
    issuer.clock().advance(Duration::from_secs(2));
    assert_eq!(
        reason(&v, &issuer.token().kid("after-cooldown").sign()).await,
        Reason::UnknownKey
    );
    assert_eq!(issuer.jwks_fetches(), 3, "one more after the cooldown");
}

#[tokio::test]
async fn issuer_down_serves_last_good_keys_until_max_stale() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .jwks_url(issuer.jwks_url())
                .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
                .refresh_interval(Duration::from_millis(300))
                .max_stale(Duration::from_millis(2000))
                .fetch_backoff(Duration::from_millis(50), Duration::from_millis(100)),
        )
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    let loaded = Instant::now();
    assert!(v.verify(&token).await.is_ok());
    issuer.set_outage(Outage::Status(500));
    // Refreshes fail; the last good keys keep working for the TTL (300 ms)
    // plus max_stale (2 s) after they loaded, and not one moment longer than needed.
    while loaded.elapsed() < Duration::from_millis(1500) {
        assert!(v.verify(&token).await.is_ok(), "within the stale window");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(issuer.jwks_fetches() >= 3, "refreshes were attempted");
    // Past ttl + max_stale: keys unavailable, not 401-style rejection.
    let e = loop {
        match v.verify(&token).await {
            Ok(_) => {
                assert!(
                    loaded.elapsed() < Duration::from_secs(10),
                    "never unavailable"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => break e,
        }
    };
    assert!(
        loaded.elapsed() >= Duration::from_millis(2300),
        "stale keys used for the whole window: {:?}",
        loaded.elapsed()
    );
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert!(e.is_unavailable() && e.retry_after().is_some());
    // Recovery, within the backoff (at most 100 ms) of the issuer's return.
    issuer.set_outage(Outage::None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.verify(&token).await.is_err() {
        assert!(Instant::now() < deadline, "keys back within seconds");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The wait a 503 announces is the key store's backoff, not the floor of a
/// second: with a 40–60 s backoff, the first failure says so.
#[tokio::test]
async fn retry_after_is_the_time_until_the_next_fetch() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Status(503));
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .jwks_url(issuer.jwks_url())
                .fetch_backoff(Duration::from_secs(40), Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    for _ in 0..2 {
        let e = v.verify(&token).await.unwrap_err();
        assert_eq!(e.reason(), Reason::KeysUnavailable);
        let wait = e.retry_after().unwrap();
        assert!(
            (Duration::from_secs(15)..=Duration::from_secs(60)).contains(&wait),
            "{wait:?}"
        );
    }
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn no_keys_ever_loaded_is_unavailable_and_backs_off() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Status(503));
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    let e = v.verify(&token).await.unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    // At least a second: Retry-After has whole seconds.
    assert!(e.retry_after().unwrap() >= Duration::from_secs(1));
    for _ in 0..20 {
        assert_eq!(reason(&v, &token).await, Reason::KeysUnavailable);
    }
    assert_eq!(issuer.jwks_fetches(), 1, "backoff: no fetch per request");
    match v.preload().await {
        Err(BuildError::Unavailable { cause, .. }) => {
            assert!(matches!(*cause, FetchError::Status(503)), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn slow_key_server_is_bounded_by_the_fetch_timeout() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Delay(Duration::from_secs(10)));
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .fetch_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        reason(&v, &issuer.token().sign()).await,
        Reason::KeysUnavailable
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn garbage_and_oversized_key_sets_keep_the_last_good_keys() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .jwks_url(issuer.jwks_url())
                .unknown_kid_cooldown(Duration::from_millis(100))
                .fetch_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .max_response_bytes(64 * 1024)
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    assert!(v.verify(&token).await.is_ok());
    let bodies = [
        "<html>maintenance</html>".to_owned(),
        r#"{"keys":[{"kty":"RSA""#.to_owned(),
        r#"{"keys":[]}"#.to_owned(),
        r#"{"keys":"nope"}"#.to_owned(),
        format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(100 * 1024)),
    ];
    for body in bodies {
        let fetches = issuer.jwks_fetches();
        issuer.set_outage(Outage::Body(body));
        // Past the 10 ms backoff of the previous round's failure.
        tokio::time::sleep(Duration::from_millis(30)).await;
        // An unknown kid forces a refetch, which fails: our outage, a 503...
        assert_eq!(
            reason(&v, &issuer.token().kid("nope").sign()).await,
            Reason::KeysUnavailable
        );
        assert_eq!(issuer.jwks_fetches(), fetches + 1);
        // ...and the good keys are still there.
        assert!(v.verify(&token).await.is_ok());
    }
}

#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_time_within_bounds() {
    let issuer = TestIssuer::start().await;
    issuer.set_cache_control(Some("public, max-age=1"));
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
                .refresh_interval(Duration::from_secs(3600)),
        )
        .build()
        .await
        .unwrap();
    let token = issuer.token().sign();
    assert!(v.verify(&token).await.is_ok());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(v.verify(&token).await.is_ok());
    wait_until(|| issuer.jwks_fetches() == 2).await;

    // The lower bound wins over a tiny max-age.
    let issuer = TestIssuer::start().await;
    issuer.set_cache_control(Some("max-age=0"));
    let v = issuer.verifier().await; // default min bound: 60 s
    assert!(v.verify(&token_for(&issuer)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(v.verify(&token_for(&issuer)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(issuer.jwks_fetches(), 1);
}

fn token_for(issuer: &TestIssuer) -> String {
    issuer.token().sign()
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ===== discovery and fetch policy =====

#[tokio::test]
async fn discovery_resolves_the_jwks_url_on_first_use() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    assert_eq!(
        v.jwks_url(issuer.issuer()),
        None,
        "nothing fetched at build"
    );
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(v.jwks_url(issuer.issuer()), Some(issuer.jwks_url()));
}

#[tokio::test]
async fn discovery_issuer_must_match_exactly() {
    let server = ScriptServer::start().await;
    let iss = server.url("");
    server.json(
        "/.well-known/openid-configuration",
        json!({"issuer": format!("{iss}/"), "jwks_uri": server.url("/jwks")}).to_string(),
    );
    let v = Verifier::builder()
        .issuer(Issuer::new(&iss).audience("a"))
        .build()
        .await
        .unwrap();
    match v.preload().await.unwrap_err() {
        BuildError::Unavailable { cause, .. }
            if matches!(*cause, FetchError::IssuerMismatch { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hits("/jwks"), 0);
}

#[tokio::test]
async fn a_remote_issuer_string_cannot_forge_a_log_line() {
    let server = ScriptServer::start().await;
    let iss = server.url("");
    server.json(
        "/.well-known/openid-configuration",
        json!({"issuer": "x\nINFO forged\u{1b}[31m\u{202e}", "jwks_uri": server.url("/jwks")})
            .to_string(),
    );
    let v = Verifier::builder()
        .issuer(Issuer::new(&iss).audience("a"))
        .build()
        .await
        .unwrap();
    let text = v.preload().await.unwrap_err().to_string();
    assert!(text.contains("forged"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{text:?}"
    );
}

#[tokio::test]
async fn discovery_falls_back_to_rfc8414_with_the_path_inserted() {
    let server = ScriptServer::start().await;
    let iss = server.url("/tenant/a");
    server.json(
        "/.well-known/oauth-authorization-server/tenant/a",
        json!({"issuer": iss, "jwks_uri": server.url("/keys")}).to_string(),
    );
    let v = Verifier::builder()
        .issuer(Issuer::new(&iss).audience("a"))
        .build()
        .await
        .unwrap();
    let _ = v.preload().await; // "/keys" itself is not served
    assert_eq!(server.hits("/keys"), 1, "the RFC 8414 document's jwks_uri");
    assert_eq!(server.hits("/tenant/a/.well-known/openid-configuration"), 1);
}

#[tokio::test]
async fn discovered_jwks_uri_must_be_https_or_loopback() {
    let server = ScriptServer::start().await;
    let iss = server.url("");
    server.json(
        "/.well-known/openid-configuration",
        json!({"issuer": iss, "jwks_uri": "http://keys.example.com/jwks"}).to_string(),
    );
    let v = Verifier::builder()
        .issuer(Issuer::new(&iss).audience("a"))
        .build()
        .await
        .unwrap();
    let err = v.preload().await.unwrap_err();
    assert!(
        matches!(&err, BuildError::Unavailable { cause, .. } if matches!(**cause, FetchError::InvalidUrl(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn plain_http_is_refused_for_remote_hosts() {
    let err = Verifier::builder()
        .issuer(Issuer::new("http://issuer.example.com").audience("a"))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Url { .. }), "{err:?}");
    let err = Verifier::builder()
        .issuer(
            Issuer::new("https://issuer.example.com")
                .audience("a")
                .jwks_url("http://issuer.example.com/jwks"),
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Url {
                what: "jwks_url",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_are_never_followed_cross_origin_or_not() {
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    server.json("/real-jwks", issuer.jwks_document().to_string());
    for target in [issuer.jwks_url(), "/real-jwks".to_owned()] {
        server.set("/jwks", Reply::Redirect(target));
        let v = Verifier::builder()
            .issuer(issuer.config().jwks_url(server.url("/jwks")))
            .build()
            .await
            .unwrap();
        assert_eq!(
            reason(&v, &issuer.token().sign()).await,
            Reason::KeysUnavailable
        );
    }
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "the other origin was never contacted"
    );
    assert_eq!(server.hits("/real-jwks"), 0, "nor the other path");
}

#[tokio::test]
async fn oversized_and_trickling_bodies_are_cut_off() {
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    server.json("/big", "x".repeat(2 * 1024 * 1024));
    server.set("/slow", Reply::Trickle(Duration::from_millis(50)));
    for (path, limit) in [("/big", 64 * 1024), ("/slow", 1024 * 1024)] {
        let v = Verifier::builder()
            .issuer(issuer.config().jwks_url(server.url(path)))
            .max_response_bytes(limit)
            .fetch_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        let started = Instant::now();
        assert_eq!(
            reason(&v, &issuer.token().sign()).await,
            Reason::KeysUnavailable,
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
}

#[tokio::test]
async fn the_response_size_cap_is_what_refuses_a_padded_valid_key_set() {
    // A valid key set padded to an exact size: only the size check can refuse it.
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    let padded = |bytes: usize| {
        let mut doc = issuer.jwks_document();
        doc["padding"] = json!("");
        let base = doc.to_string().len();
        doc["padding"] = json!("x".repeat(bytes - base));
        let body = doc.to_string();
        assert_eq!(body.len(), bytes);
        body
    };
    const DEFAULT: usize = 256 * 1024;
    let limit = 64 * 1024;
    server.json("/declared", padded(limit + 1)); // Content-Length says it
    server.set("/streamed", Reply::Chunked(padded(limit + 1))); // only counting finds it
    server.json("/fits", padded(limit));
    server.set("/fits-streamed", Reply::Chunked(padded(limit)));
    server.json("/default-over", padded(DEFAULT + 1));
    server.set(
        "/default-over-streamed",
        Reply::Chunked(padded(DEFAULT + 1)),
    );
    server.json("/default-fits", padded(DEFAULT));
    for (path, cap, too_large) in [
        ("/declared", Some(limit), true),
        ("/streamed", Some(limit), true),
        ("/fits", Some(limit), false),
        ("/fits-streamed", Some(limit), false),
        // The default cap is 256 KiB.
        ("/default-over", None, true),
        ("/default-over-streamed", None, true),
        ("/default-fits", None, false),
    ] {
        let mut b = Verifier::builder().issuer(issuer.config().jwks_url(server.url(path)));
        if let Some(cap) = cap {
            b = b.max_response_bytes(cap);
        }
        let v = b.build().await.unwrap();
        let expected_limit = cap.unwrap_or(DEFAULT);
        match v.preload().await {
            Err(BuildError::Unavailable { cause, .. }) => {
                assert!(too_large, "{path}: {cause}");
                assert!(
                    matches!(*cause, FetchError::TooLarge { limit: l } if l == expected_limit),
                    "{path}: {cause:?}"
                );
            }
            Ok(()) => assert!(!too_large, "{path} was accepted"),
            Err(other) => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_is_keys_unavailable() {
    let issuer = TestIssuer::start().await;
    let addr = support::dropping_server().await;
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(format!("http://{addr}/jwks")))
        .build()
        .await
        .unwrap();
    assert_eq!(
        reason(&v, &issuer.token().sign()).await,
        Reason::KeysUnavailable
    );
}

#[tokio::test]
async fn too_many_keys_is_refused() {
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    let mut doc = issuer.jwks_document();
    let first = doc["keys"][0].clone();
    doc["keys"] = serde_json::Value::Array(vec![first; 20]);
    server.json("/jwks", doc.to_string());
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(server.url("/jwks")))
        .max_keys(10)
        .build()
        .await
        .unwrap();
    match v.preload().await {
        Err(BuildError::Unavailable { cause, .. }) => assert!(
            matches!(
                *cause,
                FetchError::TooManyKeys {
                    count: 20,
                    limit: 10
                }
            ),
            "{cause:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reason(&v, &issuer.token().sign()).await,
        Reason::KeysUnavailable
    );
    // At the limit, the same keys load.
    let mut doc = issuer.jwks_document();
    let first = doc["keys"][0].clone();
    doc["keys"] = serde_json::Value::Array(vec![first; 10]);
    server.json("/ten", doc.to_string());
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(server.url("/ten")))
        .max_keys(10)
        .build()
        .await
        .unwrap();
    v.preload().await.unwrap();
}

#[tokio::test]
async fn user_agent_is_sent() {
    // The scripted server records nothing but paths; check via a header echo.
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    server.json("/jwks", issuer.jwks_document().to_string());
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(server.url("/jwks")))
        .user_agent("my-api/1.0")
        .build()
        .await
        .unwrap();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(server.last_user_agent().as_deref(), Some("my-api/1.0"));
}

#[tokio::test]
async fn rejections_never_contain_the_token() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let token = issuer
        .token()
        .audience("https://secret-aud")
        .org("org_secret")
        .sign();
    let e = v.verify(&token).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    let sig = token.rsplit('.').next().unwrap();
    assert!(!shown.contains(sig) && !shown.contains("org_secret") && !shown.contains("secret-aud"));
}

#[tokio::test]
async fn tokens_enter_the_cache_on_their_second_sighting_and_floods_stay_out() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let hot = issuer.token().alg(Algorithm::EdDSA).sign();
    v.verify(&hot).await.unwrap();
    assert_eq!(v.cached_tokens(), 0, "seen once: not cached");
    v.verify(&hot).await.unwrap();
    assert_eq!(v.cached_tokens(), 1, "seen twice: cached");
    for i in 0..300 {
        let once = issuer
            .token()
            .alg(Algorithm::EdDSA)
            .client_id(format!("c{i}"))
            .sign();
        v.verify(&once).await.unwrap();
    }
    assert_eq!(v.cached_tokens(), 1, "one-off tokens never enter");
    v.verify(&hot).await.unwrap();
    // Failures are never cached, however often they are seen.
    let bad = issuer.token().audience("other").sign();
    for _ in 0..3 {
        assert_eq!(reason(&v, &bad).await, Reason::InvalidAudience);
    }
    assert_eq!(v.cached_tokens(), 1);
    let off = Verifier::builder()
        .issuer(issuer.config())
        .disable_token_cache()
        .build()
        .await
        .unwrap();
    off.verify(&hot).await.unwrap();
    off.verify(&hot).await.unwrap();
    assert_eq!(off.cached_tokens(), 0);
}

#[tokio::test]
async fn live_test_issuers_never_share_key_material() {
    let issuers = futures_util::future::join_all((0..5).map(|_| TestIssuer::start())).await;
    issuers[0].rotate_keys(); // a rotation takes a key set of its own
    let material = |issuer: &TestIssuer| -> std::collections::HashSet<String> {
        issuer.jwks_document()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.get("n").or_else(|| k.get("x")).unwrap().to_string())
            .collect()
    };
    let mut owner = std::collections::HashMap::new();
    for (i, issuer) in issuers.iter().enumerate() {
        for m in material(issuer) {
            if let Some(j) = owner.insert(m, i) {
                panic!("issuers {j} and {i} share a key");
            }
        }
    }
    // RSA, P-256, P-384 and Ed25519 per generation; two generations after a rotation.
    assert_eq!(material(&issuers[1]).len(), 4);
    assert_eq!(material(&issuers[0]).len(), 8);
}

/// Issuers whose tokens may carry no `aud` (Scalekit clients registered
/// without an audience): an explicit binding to client ids, for any preset.
#[tokio::test]
async fn tokens_without_aud_need_an_explicit_client_binding() {
    let issuer = TestIssuer::start_with(Preset::Scalekit).await;
    let base = || {
        m2m_guard::Issuer::new(issuer.issuer())
            .preset(Preset::Scalekit)
            .jwks_url(issuer.jwks_url())
    };
    // Never a silent default: no audience and no binding does not build.
    let err = Verifier::builder()
        .issuer(base())
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bind_to_client_ids"), "{err}");
    let empty: [&str; 0] = [];
    let err = Verifier::builder()
        .issuer(base().bind_to_client_ids(empty))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least one client id"), "{err}");

    let bound = Verifier::builder()
        .issuer(base().bind_to_client_ids(["test-client"]))
        .build()
        .await
        .unwrap();
    let no_aud = issuer.token().without_claim("aud").sign();
    assert!(bound.verify(&no_aud).await.is_ok());
    let other = issuer
        .token()
        .client_id("other")
        .without_claim("aud")
        .sign();
    assert_eq!(reason(&bound, &other).await, Reason::ClientNotAllowed);
    // A token for some API is not for this one, which names none.
    assert_eq!(
        reason(&bound, &issuer.token().sign()).await,
        Reason::InvalidAudience
    );
    // With an audience too: a token with `aud` must name it, one without passes.
    let both = Verifier::builder()
        .issuer(
            base()
                .audience(DEFAULT_AUDIENCE)
                .bind_to_client_ids(["test-client"]),
        )
        .build()
        .await
        .unwrap();
    assert!(both.verify(&issuer.token().sign()).await.is_ok());
    assert!(both.verify(&no_aud).await.is_ok());
    let elsewhere = issuer.token().audience("https://other.example").sign();
    assert_eq!(reason(&both, &elsewhere).await, Reason::InvalidAudience);
    // Without the binding, the same token without `aud` is refused.
    let plain = Verifier::builder()
        .issuer(base().audience(DEFAULT_AUDIENCE))
        .build()
        .await
        .unwrap();
    assert_eq!(reason(&plain, &no_aud).await, Reason::MissingClaim);
}
