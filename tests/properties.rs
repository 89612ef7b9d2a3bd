//! Property tests: arbitrary input is rejected without panicking, and no
//! non-canonical re-encoding of a valid token is accepted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use m2m_guard::Verifier;
use m2m_guard::test_util::TestIssuer;
use proptest::prelude::*;
use std::sync::OnceLock;

struct World {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
    token: String,
    _issuer: TestIssuer,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (issuer, verifier, token) = rt.block_on(async {
            let issuer = TestIssuer::start().await;
            // No token cache: every case takes the full path.
            let verifier = Verifier::builder()
                .issuer(issuer.config())
                .disable_token_cache()
                .build()
                .await
                .unwrap();
            let token = issuer.token().org("org_1").scopes(["a", "b"]).sign();
            verifier
                .verify(&token)
                .await
                .expect("control token verifies");
            (issuer, verifier, token)
        });
        World {
            rt,
            verifier,
            token,
            _issuer: issuer,
        }
    })
}

fn verdict(token: &str) -> bool {
    let w = world();
    w.rt.block_on(w.verifier.verify(token)).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(!verdict(&String::from_utf8_lossy(&bytes)));
    }

    #[test]
    fn arbitrary_jws_shaped_strings_are_rejected(
        h in "[A-Za-z0-9_-]{0,64}", p in "[A-Za-z0-9_-]{0,256}", s in "[A-Za-z0-9_-]{0,400}"
    ) {
        let token = format!("{h}.{p}.{s}");
        prop_assert!(!verdict(&token));
    }

    #[test]
    fn arbitrary_json_under_the_real_header_is_rejected(payload in "\\PC{0,300}") {
        let h = world().token.split('.').next().unwrap().to_owned();
        let s = world().token.rsplit('.').next().unwrap().to_owned();
        let token = format!("{h}.{}.{s}", B64.encode(payload));
        prop_assert!(!verdict(&token));
    }

    /// Any one-character change, insertion or deletion anywhere in a valid
    /// token makes it invalid: one token, one encoding.
    #[test]
    fn every_single_character_edit_is_rejected(pos in any::<prop::sample::Index>(), c in prop::sample::select(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".chars().collect::<Vec<_>>()
    ), op in 0..3u8) {
        let t = &world().token;
        let i = pos.index(t.len());
        let mut edited: Vec<char> = t.chars().collect();
        match op {
            0 => { if edited[i] == c { return Ok(()); } edited[i] = c; }
            1 => edited.insert(i, c),
            _ => { edited.remove(i); }
        }
        let edited: String = edited.into_iter().collect();
        prop_assert!(!verdict(&edited), "accepted an edited token at {i} (op {op}, {c:?})");
    }

    /// Re-encoding a segment non-canonically (padding, standard alphabet,
    /// line breaks, percent-encoding) is rejected.
    #[test]
    fn non_canonical_reencodings_are_rejected(seg in 0..3usize, how in 0..4u8) {
        let t = &world().token;
        let mut segs: Vec<String> = t.split('.').map(str::to_owned).collect();
        let raw = B64.decode(&segs[seg]).unwrap();
        segs[seg] = match how {
            0 => base64::engine::general_purpose::URL_SAFE.encode(&raw),
            1 => base64::engine::general_purpose::STANDARD.encode(&raw),
            2 => { let s = B64.encode(&raw); format!("{}\n{}", &s[..s.len() / 2], &s[s.len() / 2..]) }
            _ => B64.encode(&raw).replace('-', "%2D").replace('_', "%5F") + "%3D",
        };
        let reencoded = segs.join(".");
        prop_assume!(reencoded != *t);
        prop_assert!(!verdict(&reencoded));
    }
}
