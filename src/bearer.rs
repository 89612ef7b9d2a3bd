//! Finding the bearer token in a request (RFC 6750 §2): the
//! `Authorization` header only; a token in the query string is refused,
//! and a request body is never read.

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};

/// Where the bearer token is, or why the request is malformed.
pub(crate) enum Found<'a> {
    /// A token, sent as `Bearer` or (`dpop`) as `DPoP` (RFC 9449 §7.1).
    Token {
        token: Candidate<'a>,
        dpop: bool,
    },
    None,
}

/// A token as the header carries it, its syntax not yet checked: the
/// token cache is asked with it first, because only verified tokens are
/// cached and every verified token is a valid `b64token` (compact JWS is
/// base64url and dots), so a hit needs no check of its ~1 KB. Everything
/// else takes the token through [`Candidate::check`].
#[derive(Clone, Copy)]
pub(crate) struct Candidate<'a> {
    bytes: &'a [u8],
    header: &'a HeaderValue,
    /// Sent as `DPoP`: named so in the error.
    dpop: bool,
}

impl<'a> Candidate<'a> {
    /// The raw bytes, for a cache lookup only.
    pub(crate) fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The token, if it is an RFC 6750 `b64token`; else why not.
    pub(crate) fn check(&self) -> Result<&'a str, &'static str> {
        let malformed = if self.dpop {
            "malformed DPoP token"
        } else {
            "malformed bearer token"
        };
        if !is_b64token(self.bytes) {
            return Err(malformed_header(self.header).unwrap_or(malformed));
        }
        // Only ASCII passes `is_b64token`, so this never fails.
        std::str::from_utf8(self.bytes).map_err(|_| malformed)
    }
}

/// A header that is not visible ASCII is reported as such, before any
/// other fault; checked only on the way out, since a valid token implies it.
fn malformed_header(value: &HeaderValue) -> Option<&'static str> {
    value
        .to_str()
        .err()
        .map(|_| "malformed authorization header")
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Checked on every request over the whole token (about 1 KB), so written
/// without branches per byte: the compiler checks 16 bytes at a time.
fn is_b64token(s: &[u8]) -> bool {
    let end = s.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = &s[..end];
    !body.is_empty()
        && body
            .chunks(16)
            .all(|c| c.iter().fold(true, |ok, &b| ok & is_b64token_char(b)))
}

#[inline]
fn is_b64token_char(b: u8) -> bool {
    // Setting bit 5 folds ASCII upper-case letters onto lower case and moves
    // no other byte into `a..=z`.
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// The DPoP proof header (RFC 9449 §4.1).
pub(crate) const DPOP: &str = "dpop";
/// The server nonce header (RFC 9449 §8).
pub(crate) const DPOP_NONCE: &str = "dpop-nonce";

/// Whether the request's `Authorization` names the `DPoP` scheme, read as
/// [`find_token`] reads it: a cheap look before it, to pick the challenge.
pub(crate) fn is_dpop_scheme<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| split_scheme(v.as_bytes()).0.eq_ignore_ascii_case(b"dpop"))
}

/// A credentials header split at its first space: the scheme, and the rest.
fn split_scheme(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    }
}

/// The one `DPoP` proof header of a DPoP request, or why not.
pub(crate) fn dpop_proof<B>(req: &Request<B>) -> Result<&str, &'static str> {
    let mut proofs = req.headers().get_all(DPOP).iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err("a DPoP request needs exactly one DPoP proof header");
    };
    proof.to_str().map_err(|_| "the DPoP proof is malformed")
}

/// Find the bearer token, and mark the `Authorization` header sensitive,
/// which keeps the token out of any logging further in (e.g. tower-http's
/// `Trace`). Only the `Authorization` header is accepted.
///
/// One lookup of the header in the common case: a second value is only
/// looked for when some header of the request repeats.
pub(crate) fn find_token<B>(req: &mut Request<B>) -> Result<Found<'_>, &'static str> {
    let in_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "access_token" || p.starts_with("access_token="))
    });
    let headers = req.headers_mut();
    if headers.len() != headers.keys_len() && headers.get_all(AUTHORIZATION).iter().nth(1).is_some()
    {
        return Err("more than one authorization header");
    }
    let header = headers.get_mut(AUTHORIZATION).map(|v| {
        v.set_sensitive(true);
        &*v
    });
    let Some(value) = header else {
        if in_query {
            return Err("tokens in the query string are not accepted");
        }
        return Ok(Found::None);
    };
    // Bytes, not `to_str`: the token is checked byte by byte (when it is
    // not a cached one), so the common case reads the header at most once.
    let (scheme, rest) = split_scheme(value.as_bytes());
    let dpop = scheme.eq_ignore_ascii_case(b"dpop");
    if !dpop && !scheme.eq_ignore_ascii_case(b"bearer") {
        if let Some(why) = malformed_header(value) {
            return Err(why);
        }
        // Another scheme (Basic, ...) carries no access token.
        return Ok(Found::None);
    }
    if in_query {
        return Err(malformed_header(value).unwrap_or("the token is sent in more than one place"));
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    Ok(Found::Token {
        token: Candidate {
            bytes: &rest[start..],
            header: value,
            dpop,
        },
        dpop,
    })
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
        find_token(&mut r.clone()).and_then(|f| {
            Ok(match f {
                Found::Token { token, dpop: false } => Some(token.check()?.to_owned()),
                Found::Token { token, dpop: true } => Some(format!("dpop:{}", token.check()?)),
                Found::None => None,
            })
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

    #[test]
    fn the_b64token_alphabet_is_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token_char(b), rfc, "byte {b:#04x}");
            assert_eq!(is_b64token(&[b'a', b, b'a']), rfc, "byte {b:#04x} inside");
        }
        assert!(is_b64token(b"abc=="));
        assert!(!is_b64token(b"==="));
        assert!(!is_b64token(b"ab=c"));
        assert!(!is_b64token(b""));
        // Longer than one 16-byte chunk, with the fault in a later chunk.
        let mut long = vec![b'A'; 40];
        assert!(is_b64token(&long));
        long[37] = b'!';
        assert!(!is_b64token(&long));
    }

    #[test]
    fn a_header_that_is_not_visible_ascii_is_named_as_such() {
        for raw in [&b"Bearer a.b\xffc"[..], b"Basic \xff", b"Bearer \x80"] {
            let mut r = req(&[], "/");
            r.headers_mut()
                .insert(AUTHORIZATION, http::HeaderValue::from_bytes(raw).unwrap());
            assert_eq!(
                token_of(&r),
                Err("malformed authorization header"),
                "{raw:?}"
            );
        }
    }
}
