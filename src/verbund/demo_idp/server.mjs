// Verbund's demo OpenID provider: the certified `oidc-provider` (panva) with a small
// login page and the people of a JSON file. Started by `verbund up` (the demo) and by
// harness/idp.py (tests), always on 127.0.0.1. Usage: node server.mjs CONFIG.json
//
// CONFIG: {"issuer", "port", "keys": [private JWKs; the first signs], "cookie_keys",
//          "clients": [{client_id, client_secret, redirect_uris, post_logout_redirect_uris}],
//          "people": {"<login>": {"password", "sub", "claims": {...}}}}
// The module directory of oidc-provider comes from VERBUND_IDP_MODULES (project-local
// node_modules made by scripts/_idp_env.sh).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const modules = process.env.VERBUND_IDP_MODULES;
const { default: Provider } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const people = config.people;
const bySub = Object.fromEntries(Object.values(people).map((p) => [p.sub, p]));
const SCOPES = 'openid profile email schac entitlements';

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  jwks: { keys: config.keys },
  cookies: { keys: config.cookie_keys },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    schac: ['schac_home_organization'],
    entitlements: ['eduperson_entitlement'],
  },
  conformIdTokenClaims: false, // the scopes' claims go into the ID token itself
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // a first-party demo: no consent screen, every requested scope is granted
  async loadExistingGrant(ctx) {
    const existing = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPES);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, sub) {
    const person = bySub[sub];
    if (!person) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...person.claims }) };
  },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600,
    Session: 3600, Grant: 3600,
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

function loginPage(uid, message) {
  return `<!doctype html><html lang=en><head><meta charset=utf-8><title>Demo sign-in</title>
<style>body{font-family:sans-serif;max-width:26em;margin:4em auto}label{display:block;margin:.6em 0}</style>
</head><body><h1>Demo identity provider</h1>
<p>Sign in with one of the demo people (see <code>demo.json</code>).</p>
${message ? `<p role=alert style="color:#a00">${escape(message)}</p>` : ''}
<form method=post action="/interaction/${escape(uid)}/login">
<label>Login <input name=login autocomplete=username required autofocus></label>
<label>Password <input name=password type=password autocomplete=current-password required></label>
<button type=submit>Sign in</button></form></body></html>`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 16384) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (details.prompt.name === 'login') {
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const person = people[form.get('login') || ''];
      if (!person || person.password !== form.get('password')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(loginPage(uid, 'Unknown login or wrong password.'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: person.sub } },
        { mergeWithLastSubmission: false });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid, ''));
    return;
  }
  // consent: granted (a first-party demo)
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  grant.addOIDCScope(SCOPES);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } },
    { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, config.issuer);
  const m = pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/);
  if (!m) {
    callback(req, res);
    return;
  }
  interaction(req, res, m[1], m[2]).catch((err) => {
    console.error('interaction failed:', err.message);
    if (!res.headersSent) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('This sign-in has expired; please start again.');
    }
  });
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(`demo identity provider at ${config.issuer}`);
});
const stop = () => {
  server.close();
  server.closeAllConnections(); // a browser's keep-alive connection must not hold it up
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
