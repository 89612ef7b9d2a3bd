//! Any bytes as an Authorization header value (plus a query string).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    m2m_guard::fuzzing::parse_authorization(data);
});
