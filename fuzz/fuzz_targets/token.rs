//! Any bytes as a compact JWS: split, base64url, strict JSON, header rules.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    m2m_guard::fuzzing::parse_token(data);
});
