//! Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`
//! by cargo-fuzz). Not part of the public API.

/// Parse `data` as a compact JWS (no cryptography).
pub fn parse_token(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::token::parse(s, 16 * 1024);
    }
}

/// Parse `data` as a JWKS document.
pub fn parse_jwks(data: &[u8]) {
    crate::crypto::ensure_backend();
    let _ = crate::jwks::parse_jwks(data, 100);
}

/// Parse `data` as an `Authorization` header value; the first byte splits
/// off a query string.
pub fn parse_authorization(data: &[u8]) {
    let (query, value) = match data.split_first() {
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
        None => return,
    };
    let Ok(value) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let query = String::from_utf8_lossy(query);
    let uri = format!("/?{}", query.replace(|c: char| !c.is_ascii_graphic(), ""));
    let Ok(mut req) = http::Request::builder()
        .uri(uri)
        .header(http::header::AUTHORIZATION, value)
        .body(())
    else {
        return;
    };
    if let Ok(crate::bearer::Found::Token { token, .. }) = crate::bearer::find_token(&mut req) {
        let _ = token.check();
    }
}
