/**
 * The client's OpenAI-Organization / OpenAI-Project belong to the client's own
 * credential: with a pool key they are not forwarded (a client whose SDK picked
 * up OPENAI_ORG_ID would otherwise get 401 mismatched_organization from every
 * key); with byok they are. A pool key may carry its own, sent with it only.
 */
import express from 'express';
import OpenAI from 'openai';
import request from 'supertest';
import { KeyPool, createFailoverFetch, keyPassthrough } from '../lib/index.js';
import { CHAT, FakeClock, K0, K1, K2, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { ok, type Behaviour } from './support/mock-upstream.js';
import { ORG, openai } from './support/provider-answers.js';

const upstream = useMockUpstream();

/** An upstream that checks OpenAI-Organization against the organization of each key, as OpenAI does. */
function organizationsOf(orgs: Record<string, string>): Behaviour {
  return (req, res) => {
    const org = req.headers['openai-organization'];
    if (org !== undefined && org !== orgs[req.key ?? '']) return openai.mismatchedOrganization()(req, res);
    return ok({ id: 'chatcmpl-1', object: 'chat.completion' })(req, res);
  };
}

test("the openai SDK's OpenAI-Organization (OPENAI_ORG_ID) and OpenAI-Project do not reach the upstream with a pool key", async () => {
  const g = gateway(upstream.url);
  const server = await listen(g.app);
  try {
    upstream.behaviour = organizationsOf({ [K0]: 'org-pool-a', [K1]: 'org-pool-b', [K2]: 'org-pool-c' });
    const client = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${server.url}/v1`, organization: ORG, project: 'proj_client' });
    const completion = await client.chat.completions.create(chatBody as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(completion.id).toBe('chatcmpl-1');
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(upstream.seen[0]!.headers['openai-organization']).toBeUndefined();
    expect(upstream.seen[0]!.headers['openai-project']).toBeUndefined();
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  } finally {
    await server.close();
  }
});

test('with byok the client brings its whole credential: its organization and project go with its key', async () => {
  const clientKey = 'sk-client-own-key-0000000000zz';
  const g = gateway(upstream.url, { byok: true });
  upstream.behaviour = ok();
  await request(g.app)
    .post(CHAT)
    .set('authorization', `Bearer ${clientKey}`)
    .set('openai-organization', ORG)
    .set('openai-project', 'proj_client')
    .send(chatBody);
  expect(upstream.keysSeen()).toEqual([clientKey]);
  expect(upstream.seen[0]!.headers['openai-organization']).toBe(ORG);
  expect(upstream.seen[0]!.headers['openai-project']).toBe('proj_client');
});

test('a pool key with its own organization and project sends them with that key only', async () => {
  const g = gateway(
    upstream.url,
    {},
    {
      keys: [{ key: K0, organization: 'org-pool-a', project: 'proj_a' }, { key: K1, organization: 'org-pool-b' }, K2],
    },
  );
  upstream.behaviour = (req, res) =>
    req.key === K2 ? ok({ by: 'k2' })(req, res) : openai.rateLimited(chatBody.model, { 'retry-after': '5' })(req, res);
  const res = await request(g.app).post(CHAT).set('openai-organization', 'org-of-the-client').send(chatBody);
  expect(res.body).toEqual({ by: 'k2' });
  expect(upstream.seen.map((r) => [r.key, r.headers['openai-organization'], r.headers['openai-project']])).toEqual([
    [K0, 'org-pool-a', 'proj_a'],
    [K1, 'org-pool-b', undefined],
    [K2, undefined, undefined],
  ]);
});

test('createFailoverFetch: the SDK of the gateway itself, configured with an organization, gets the pool key and its own account headers', async () => {
  const pool = new KeyPool({ keys: [{ key: K0, organization: 'org-pool-a' }], now: new FakeClock().now });
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  try {
    upstream.behaviour = organizationsOf({ [K0]: 'org-pool-a' });
    const client = new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, organization: ORG, fetch });
    const completion = await client.chat.completions.create(chatBody as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(completion.id).toBe('chatcmpl-1');
    expect(upstream.seen[0]!.headers['openai-organization']).toBe('org-pool-a');
  } finally {
    await fetch.close();
  }
});

test('keyPassthrough: a restricted key missing a scope (401 missing_scope) is not disabled, on any key', async () => {
  const pool = new KeyPool({ keys: [K0, K1], now: new FakeClock().now });
  const middleware = keyPassthrough({ target: upstream.url, pool, logger: false });
  const app = express();
  app.use(middleware);
  try {
    upstream.behaviour = openai.missingScope('api.model.read');
    const res = await request(app).get('/v1/models');
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('missing_scope');
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available']);
  } finally {
    await middleware.close();
  }
});

test('a key entry with an unknown field, or an organization that is not a header value, is refused', () => {
  expect(() => new KeyPool([{ key: K0, org: 'x' } as never])).toThrow(
    /the entry at index 0 has an unknown field "org"; a key entry takes id, key, weight, organization, project/,
  );
  expect(() => new KeyPool([{ key: K0, organization: 'org a\n' }])).toThrow(
    /the entry at index 0 has a "organization" that is not a non-empty header-safe string/,
  );
  expect(() => new KeyPool([{ key: K0, id: 'a\u0000b' }])).toThrow(
    /has an "id" that is not a non-empty string of at most 200 printable characters/,
  );
});
