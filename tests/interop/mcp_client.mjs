// The official TypeScript MCP client (@modelcontextprotocol/client, pinned by
// package-lock.json) against an m2m-guard-protected MCP server, the way an AI
// agent with client credentials uses it: the 401 points it to the RFC 9728
// metadata, it gets a client-credentials token from the authorization server
// named there (with `resource` = the server URL), lists the tools, calls
// `whoami`, then `admin-action`, stepping up on its 403 `insufficient_scope`.
//
// Usage: node mcp_client.mjs <mcp-url> <client-id> <client-secret> <issuer>
// Prints one JSON line: {tools, whoami, admin: {ok, text} | {ok: false, error}}.

import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [url, clientId, clientSecret, issuer] = process.argv.slice(2);
const provider = new ClientCredentialsProvider({ clientId, clientSecret, expectedIssuer: issuer });
const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
const client = new Client({ name: 'm2m-guard-interop', version: '1.0.0' });

const text = (result) => result.content?.find((c) => c.type === 'text')?.text;
const out = {};
try {
  await client.connect(transport);
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.whoami = JSON.parse(text(await client.callTool({ name: 'whoami', arguments: {} })));
  try {
    const r = await client.callTool({ name: 'admin-action', arguments: {} });
    out.admin = { ok: !r.isError, text: text(r) };
  } catch (e) {
    out.admin = { ok: false, error: `${e.name}: ${e.message}` };
  }
  // After a step-up the new token is the one in use: whoami shows its scopes.
  out.whoami_after = JSON.parse(text(await client.callTool({ name: 'whoami', arguments: {} })));
} catch (e) {
  out.fatal = `${e.name}: ${e.message}`;
} finally {
  await client.close().catch(() => {});
}
console.log(JSON.stringify(out));
