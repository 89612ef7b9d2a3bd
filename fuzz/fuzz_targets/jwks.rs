//! Any bytes as a JWKS document: parsing, key binding, decoding keys.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    m2m_guard::fuzzing::parse_jwks(data);
});
