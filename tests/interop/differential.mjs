// The independent verifier of m2m-guard's differential test (tests/differential.rs):
// panva's `jose` for the JWS and the registered claims, plus m2m-guard's
// documented claim policy (README "Security defaults, and why" and "Providers"), written here from the
// documentation, not from the Rust code.
//
// Input (file named by argv[2]):
//   {"jwks", "issuer", "audience", "leeway", "algorithms", "typ", "strings",
//    "scopes", "tokens": [...], "times": [...]} (each token judged at its time,
//    in whole seconds since the epoch)
// Output (stdout): one JSON array, per token {"ok": true} or {"ok": false, "code": "..."}.
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify } from 'jose';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const keys = createLocalJWKSet(input.jwks);
const options = {
  issuer: input.issuer,
  audience: input.audience,
  algorithms: input.algorithms,
  clockTolerance: input.leeway,
  requiredClaims: ['exp'],
};
// 9999-12-31T23:59:59Z: the latest NumericDate accepted.
const MAX_DATE = 253402300799;
const MAX_KID = 256;

function policy(header, payload, now) {
  if ('kid' in header) {
    const k = header.kid;
    if (typeof k !== 'string' || k.length === 0 || Buffer.byteLength(k) > MAX_KID) return 'POLICY_KID';
  }
  if ('typ' in header) {
    if (typeof header.typ !== 'string' || !input.typ.includes(header.typ.toLowerCase())) return 'POLICY_TYP';
  }
  for (const c of ['exp', 'nbf', 'iat']) {
    if (c in payload && !(payload[c] >= 0 && payload[c] <= MAX_DATE)) return 'POLICY_DATE_RANGE';
  }
  if ('iat' in payload && payload.iat > now + input.leeway) return 'POLICY_IAT_FUTURE';
  const aud = payload.aud;
  if (Array.isArray(aud) && (aud.length === 0 || aud.some((a) => typeof a !== 'string'))) return 'POLICY_AUD';
  if (typeof payload.iss !== 'string') return 'POLICY_ISS';
  // ID tokens are never access tokens (README "Providers").
  for (const c of ['nonce', 'at_hash', 'c_hash']) {
    if (c in payload) return `POLICY_ID_TOKEN_${c}`;
  }
  if ('typ' in payload) {
    if (typeof payload.typ !== 'string') return 'POLICY_TYP_CLAIM';
    if (['ID', 'Refresh', 'Offline', 'Logout', 'Serialized-ID'].includes(payload.typ)) return 'POLICY_ID_TOKEN_typ';
  }
  if ('token_use' in payload) {
    if (typeof payload.token_use !== 'string') return 'POLICY_TOKEN_USE';
    if (payload.token_use !== 'access') return 'POLICY_ID_TOKEN_token_use';
  }
  for (const c of input.strings) {
    if (c in payload && (typeof payload[c] !== 'string' || payload[c] === '')) return `POLICY_STRING_${c}`;
  }
  for (const c of input.scopes) {
    if (!(c in payload)) continue;
    const v = payload[c];
    if (typeof v === 'string') continue;
    if (Array.isArray(v) && v.every((s) => typeof s === 'string' && s !== '' && !s.includes(' '))) continue;
    return `POLICY_SCOPE_${c}`;
  }
  return null;
}

const out = [];
for (const [i, token] of input.tokens.entries()) {
  const now = input.times[i];
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      ...options,
      currentDate: new Date(now * 1000),
    });
    const code = policy(protectedHeader, payload, now);
    out.push(code === null ? { ok: true } : { ok: false, code });
  } catch (e) {
    out.push({ ok: false, code: e.code ?? e.name ?? 'ERR_UNKNOWN' });
  }
}
process.stdout.write(JSON.stringify(out));
