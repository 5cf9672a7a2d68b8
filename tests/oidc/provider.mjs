// A real OpenID Connect provider (panva's oidc-provider) for the SSO tests, on 127.0.0.1.
//
// Environment: OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI (the app's callback).
// It listens on a free port and prints one JSON line {"issuer": "..."} once it serves.
// Sign-in uses the provider's own development interactions (a login form, then a consent form);
// the login name is the account id. Accounts are registered by the test first:
//   POST /test/accounts {"sub": "...", "email": "...", "email_verified": true}
// (a test-only route outside the provider, so each test picks its own claims).
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const accounts = new Map();

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try { resolve(JSON.parse(body)); } catch (err) { reject(err); }
    });
    req.on('error', reject);
  });
}

async function testRoute(req, res) {
  if (req.method === 'POST' && req.url === '/test/accounts') {
    const { sub, email, email_verified: verified } = await readJson(req);
    accounts.set(String(sub), { email, email_verified: Boolean(verified) });
    res.writeHead(204).end();
    return;
  }
  res.writeHead(404).end();
}

// A fresh signing key per run: the app must fetch it from the JWKS to verify ID tokens.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['fragments-test-provider-cookie-key'] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const account = accounts.get(id);
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...account };
        },
      };
    },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/test/')) {
      testRoute(req, res).catch(() => res.writeHead(400).end());
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The test ends the provider by closing its stdin (or a signal), so no orphan outlives it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
