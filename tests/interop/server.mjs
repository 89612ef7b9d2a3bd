// A real, independent authorization server for m2m-guard's interop tests:
// panva's oidc-provider (a certified OpenID provider library), issuing RFC 9068
// JWT access tokens through the client-credentials grant and RFC 8707 resource
// indicators.
//
// Usage: node server.mjs [port]   (0 or absent: any free loopback port)
// Prints "ready <issuer>" once listening. Commands on stdin, one per line,
// each answered "ok <command>" (or "error <message>"):
//   alg RS256|ES256|EdDSA   sign new tokens with this algorithm
//   rotate                  new keys first in the JWKS, old keys still published
//   retire                  stop publishing the previous keys
//   stop | start            close / reopen the listening socket (same port)

import { createServer } from 'node:http';
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import Provider, { errors } from 'oidc-provider';

export const APIS = {
  'https://api.example.test': 'read:users write:flags admin:orgs',
  'https://other.example.test': 'read:users write:flags',
};
// An MCP server on loopback (the `mcp` example): its URL is its resource.
const MCP_RESOURCE = /^http:\/\/127\.0\.0\.1:\d+\/mcp$/;
const MCP_SCOPES = 'mcp:read mcp:admin';

// A client with no secret at all: it authenticates with private_key_jwt
// (its public key registered here, the private key in m2m-guard's test
// keys) and must use DPoP-bound tokens.
const AGENT_KEY = createPublicKey(readFileSync(new URL('../../src/test_util/keys/ec3.pem', import.meta.url)))
  .export({ format: 'jwk' });

const CLIENTS = [
  // A global app: every scope, no org. client_secret_basic, as many SDKs do.
  { client_id: 'global-app', client_secret: 'global-secret', scope: 'read:users write:flags admin:orgs', token_endpoint_auth_method: 'client_secret_basic' },
  // An org-scoped app: its tokens carry org_code (like a Kinde org-scoped M2M app).
  { client_id: 'org-app', client_secret: 'org-secret', scope: 'read:users write:flags', token_endpoint_auth_method: 'client_secret_post' },
  // A read-only app.
  { client_id: 'readonly-app', client_secret: 'readonly-secret', scope: 'read:users', token_endpoint_auth_method: 'client_secret_post' },
  // MCP agents: one allowed the admin tool, one only reading.
  { client_id: 'mcp-admin-agent', client_secret: 'mcp-admin-secret', scope: 'mcp:read mcp:admin', token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'mcp-reader-agent', client_secret: 'mcp-reader-secret', scope: 'mcp:read', token_endpoint_auth_method: 'client_secret_basic' },
  {
    client_id: 'dpop-agent', scope: 'read:users write:flags', token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [{ ...AGENT_KEY, kid: 'dpop-agent-1', alg: 'ES256', use: 'sig' }] }, dpop_bound_access_tokens: true,
  },
].map((c) => ({ ...c, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] }));

const ORG_OF = { 'org-app': 'org_acme' };

let generation = 0;
function newKeys() {
  generation += 1;
  const jwk = (pair, kid, alg) => ({ ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  return [
    jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), `rsa-${generation}`, 'RS256'),
    jwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }), `ec-${generation}`, 'ES256'),
    jwk(generateKeyPairSync('ed25519'), `ed-${generation}`, 'EdDSA'),
  ];
}

// DPoP nonces are required at the token endpoint (RFC 9449 §8), with one
// secret for the life of the process so rebuilt providers keep accepting them.
const DPOP_NONCE_SECRET = randomBytes(32);

let current = newKeys();
let previous = [];
let signAlg = 'RS256';

function buildProvider(issuer) {
  const kidFor = (alg) => current.find((k) => k.alg === alg).kid;
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys: [...current, ...previous] },
    scopes: ['read:users', 'write:flags', 'admin:orgs', 'mcp:read', 'mcp:admin'],
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      dPoP: { enabled: true, nonceSecret: DPOP_NONCE_SECRET, requireNonce: () => true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const scope = APIS[resource] ?? (MCP_RESOURCE.test(resource) ? MCP_SCOPES : undefined);
          if (!scope) throw new errors.InvalidTarget();
          return {
            scope,
            audience: resource,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: signAlg, kid: kidFor(signAlg) } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => (ORG_OF[token.clientId] ? { org_code: ORG_OF[token.clientId] } : undefined),
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

const port = Number(process.argv[2] || 0);
let handler = null;
const server = createServer((req, res) => handler(req, res));

function listen(p) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, '127.0.0.1', () => resolve(server.address().port));
  });
}

const actualPort = await listen(port);
const issuer = `http://127.0.0.1:${actualPort}`;
handler = buildProvider(issuer).callback();
console.log(`ready ${issuer}`);

const sockets = new Set();
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});

const commands = {
  alg: (arg) => {
    if (!['RS256', 'ES256', 'EdDSA'].includes(arg)) throw new Error(`unknown alg ${arg}`);
    signAlg = arg;
  },
  rotate: () => {
    previous = current;
    current = newKeys();
    handler = buildProvider(issuer).callback();
  },
  retire: () => {
    previous = [];
    handler = buildProvider(issuer).callback();
  },
  stop: () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  start: () => listen(actualPort),
};

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  try {
    if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
    await commands[cmd](arg);
    console.log(`ok ${line.trim()}`);
  } catch (e) {
    console.log(`error ${e.message}`);
  }
});
rl.on('close', () => process.exit(0));
