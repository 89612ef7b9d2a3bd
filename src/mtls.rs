//! Certificate-bound access tokens (RFC 8705 §3): a token with
//! `cnf.x5t#S256` works only over a TLS connection authenticated with that
//! client certificate.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderName;
use http::header::HeaderMap;

use crate::dpop::sha256_b64;

/// The client certificate (DER) of the request's TLS connection, put into
/// request extensions by your TLS server (e.g. from rustls'
/// `peer_certificates()` in an axum `serve` loop), read by
/// [`Mtls::from_connection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate(pub Vec<u8>);

/// Where the client certificate comes from, for tokens bound to one
/// (`cnf.x5t#S256`): turn it on with
/// [`M2mAuthLayer::mtls`](crate::M2mAuthLayer::mtls).
///
/// Without it, a certificate-bound token is refused (`bound_token`): its
/// binding cannot be checked. A header is read only when configured here,
/// so only behind a proxy that sets it and **removes any copy the client
/// sent**.
///
/// ```
/// use m2m_guard::Mtls;
/// // TLS ends in this process: your server inserts `ClientCertificate`.
/// let direct = Mtls::from_connection();
/// // Behind Envoy (`forward_client_cert_details: SANITIZE_SET`).
/// let envoy = Mtls::from_envoy_xfcc();
/// // Behind nginx: `proxy_set_header X-Client-Cert $ssl_client_escaped_cert;`
/// let nginx = Mtls::from_pem_header("x-client-cert");
/// ```
#[derive(Clone, Debug)]
pub struct Mtls {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Connection,
    Xfcc,
    PemHeader(HeaderName),
}

impl Mtls {
    /// The [`ClientCertificate`] in the request extensions.
    pub fn from_connection() -> Self {
        Mtls {
            source: Source::Connection,
        }
    }

    /// Envoy's `x-forwarded-client-cert`, from a trusted Envoy that sets it
    /// (and drops the client's): its `Hash` (the hex SHA-256 of the
    /// certificate) or its `Cert` (URL-encoded PEM). A header naming more
    /// than one certificate (several hops) is refused, never guessed.
    pub fn from_envoy_xfcc() -> Self {
        Mtls {
            source: Source::Xfcc,
        }
    }

    /// A header holding the client certificate as URL-encoded PEM (nginx's
    /// `$ssl_client_escaped_cert`), set by a trusted proxy.
    ///
    /// # Panics
    /// When `name` is not a valid header name (a wiring mistake).
    pub fn from_pem_header(name: &str) -> Self {
        Mtls {
            source: Source::PemHeader(
                HeaderName::from_bytes(name.as_bytes())
                    .expect("m2m-guard: Mtls::from_pem_header needs a valid header name"),
            ),
        }
    }

    /// The RFC 8705 thumbprint (base64url SHA-256 of the DER) of the
    /// request's client certificate, if one is presented.
    pub(crate) fn thumbprint(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<String> {
        match &self.source {
            Source::Connection => extensions
                .get::<ClientCertificate>()
                .map(|c| sha256_b64(&c.0)),
            Source::PemHeader(name) => {
                let mut values = headers.get_all(name).iter();
                let (Some(v), None) = (values.next(), values.next()) else {
                    return None;
                };
                pem_thumbprint(&percent_decode(v.to_str().ok()?)?)
            }
            Source::Xfcc => {
                let mut values = headers.get_all("x-forwarded-client-cert").iter();
                let (Some(v), None) = (values.next(), values.next()) else {
                    return None;
                };
                xfcc_thumbprint(v.to_str().ok()?)
            }
        }
    }
}

/// `%XX` decoding (nginx escapes the PEM's newlines and `+`, `/`, `=`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(hex_byte(b.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Two hex digits as a byte: digits only (`u8::from_str_radix` would also
/// take a sign, `+1`).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    match pair {
        [hi, lo] => u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok(),
        _ => None,
    }
}

/// The thumbprint of the one certificate in `pem`.
fn pem_thumbprint(pem: &str) -> Option<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let stop = pem[start..].find(end)? + start;
    if pem[stop + end.len()..].contains(begin) {
        return None; // a chain: which one is the client's is not ours to guess
    }
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(b64).ok()?;
    Some(sha256_b64(&der))
}

/// The thumbprint from an XFCC header with one element: `Hash=` (hex) or
/// `Cert=` (URL-encoded PEM). Values may be quoted (`"..."`, with `\"`).
fn xfcc_thumbprint(value: &str) -> Option<String> {
    let mut pairs = Vec::new();
    let (mut key, mut cur, mut in_quotes, mut escaped) = (None, String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '=' if !in_quotes && key.is_none() => key = Some(std::mem::take(&mut cur)),
            ';' if !in_quotes => pairs.push((key.take()?, std::mem::take(&mut cur))),
            // Another element: another certificate (another hop).
            ',' if !in_quotes => return None,
            _ => cur.push(c),
        }
    }
    if in_quotes {
        return None;
    }
    pairs.push((key?, cur));
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(hash) = find("Hash") {
        if hash.len() != 64 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..32)
            .map(|i| hex_byte(hash.as_bytes().get(2 * i..2 * i + 2)?))
            .collect();
        return Some(URL_SAFE_NO_PAD.encode(bytes?));
    }
    pem_thumbprint(&percent_decode(find("Cert")?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A certificate's DER is opaque here: any bytes make a thumbprint.
    const DER: &[u8] = b"0\x82\x01\x0a not really a certificate";

    fn pem() -> String {
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(DER)
        )
    }

    fn escaped(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn expected() -> String {
        sha256_b64(DER)
    }

    /// The SHA-256 of `data` in lower-case hex, as an XFCC `Hash=` carries it.
    fn sha256_hex(data: &[u8]) -> String {
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn nginx_escaped_pem() {
        assert_eq!(
            pem_thumbprint(&percent_decode(&escaped(&pem())).unwrap()),
            Some(expected())
        );
        let chain = format!("{}{}", pem(), pem());
        assert_eq!(pem_thumbprint(&chain), None);
        assert_eq!(percent_decode("%Z1"), None);
        assert_eq!(percent_decode("%4"), None);
        // Digits only: `from_str_radix` would read `+1` as 1.
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("%2b%2F%3d").as_deref(), Some("+/="));
    }

    #[test]
    fn envoy_xfcc_hash_or_cert_one_element_only() {
        let hex = sha256_hex(DER);
        let by = "By=spiffe://cluster.local/ns/api/sa/api";
        assert_eq!(
            xfcc_thumbprint(&format!("{by};Hash={hex};Subject=\"CN=a;b,c\"")),
            Some(expected())
        );
        assert_eq!(
            xfcc_thumbprint(&format!("{by};Cert=\"{}\"", escaped(&pem()))),
            Some(expected())
        );
        // Two hops: which certificate is the client's is not guessed.
        assert_eq!(xfcc_thumbprint(&format!("Hash={hex},Hash={hex}")), None);
        let other = sha256_hex(b"another certificate");
        assert_eq!(
            xfcc_thumbprint(&format!("Hash={hex};By=x,Hash={other}")),
            None
        );
        // A quoted value is one value, whatever it holds: a subject (the
        // client's own text) cannot name a `Hash`, with `=`, `;` or an
        // escaped quote.
        let cert = format!("Cert=\"{}\"", escaped(&pem()));
        for subject in [
            format!("\"CN=Hash={other}\""),
            format!("\"CN=a;Hash={other}\""),
            format!("\"CN=a\\\";Hash={other};x=\\\"\""),
        ] {
            assert_eq!(
                xfcc_thumbprint(&format!("By=x;Subject={subject};{cert}")),
                Some(expected()),
                "{subject}"
            );
        }
        // Unquoted (a proxy should quote it), a value's `=` is still its own.
        assert_eq!(
            xfcc_thumbprint(&format!("By=x;Subject=Hash={other};{cert}")),
            Some(expected())
        );
        // Outside quotes a backslash is a character like any other.
        assert_eq!(
            xfcc_thumbprint(&format!("By=x\\;Hash={hex}")),
            Some(expected())
        );
        assert_eq!(xfcc_thumbprint("Hash=abc"), None);
        // 64 characters that are not all hex digits: `+1` is no byte.
        assert_eq!(xfcc_thumbprint(&format!("Hash={}", "+1".repeat(32))), None);
        assert_eq!(xfcc_thumbprint(&format!("Hash=\"{hex}")), None);
        assert_eq!(xfcc_thumbprint("By=x"), None);
    }
}
