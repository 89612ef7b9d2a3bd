//! Finding the bearer token in a request (RFC 6750 §2): the
//! `Authorization` header only; a token in the query string is refused,
//! and a request body is never read.

use http::Request;
use http::header::AUTHORIZATION;

/// Where the bearer token is, or why the request is malformed.
pub(crate) enum Found<'a> {
    Token(&'a str),
    None,
}

fn is_b64token(s: &str) -> bool {
    // RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Find the bearer token. Only the `Authorization` header is accepted.
pub(crate) fn find_token<B>(req: &Request<B>) -> Result<Found<'_>, &'static str> {
    let mut headers = req.headers().get_all(AUTHORIZATION).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err("more than one authorization header");
    }
    let in_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "access_token" || p.starts_with("access_token="))
    });
    let Some(value) = header else {
        if in_query {
            return Err("tokens in the query string are not accepted");
        }
        return Ok(Found::None);
    };
    let value = value
        .to_str()
        .map_err(|_| "malformed authorization header")?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, DPoP, ...) carries no bearer token.
        return Ok(Found::None);
    }
    if in_query {
        return Err("the token is sent in more than one place");
    }
    let token = rest.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err("malformed bearer token");
    }
    Ok(Found::Token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn token_of(r: &Request<()>) -> Result<Option<String>, &'static str> {
        find_token(r).map(|f| match f {
            Found::Token(t) => Some(t.to_owned()),
            Found::None => None,
        })
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for h in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi",
        ] {
            assert_eq!(
                token_of(&req(&[("authorization", h)], "/")),
                Ok(Some("abc.def.ghi".into())),
                "{h}"
            );
        }
    }

    #[test]
    fn other_schemes_and_absence_are_no_token() {
        assert_eq!(token_of(&req(&[], "/")), Ok(None));
        assert_eq!(
            token_of(&req(&[("authorization", "Basic dXNlcjpwdw==")], "/")),
            Ok(None)
        );
    }

    #[test]
    fn malformed_requests() {
        let two = req(
            &[
                ("authorization", "Bearer a.b.c"),
                ("authorization", "Bearer a.b.c"),
            ],
            "/",
        );
        assert!(token_of(&two).is_err());
        assert!(token_of(&req(&[("authorization", "Bearer")], "/")).is_err());
        assert!(token_of(&req(&[("authorization", "Bearer ")], "/")).is_err());
        assert!(token_of(&req(&[("authorization", "Bearer a.b.c extra")], "/")).is_err());
        assert!(token_of(&req(&[("authorization", "Bearer a\"b")], "/")).is_err());
        assert!(
            token_of(&req(
                &[("authorization", "Bearer a.b.c")],
                "/x?access_token=a.b.c"
            ))
            .is_err()
        );
        assert!(token_of(&req(&[], "/x?a=1&access_token=a.b.c")).is_err());
        assert_eq!(token_of(&req(&[], "/x?my_access_token=1")), Ok(None));
    }
}
