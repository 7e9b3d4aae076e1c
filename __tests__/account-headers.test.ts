/**
 * The upstream headers that name the pool's own account (OpenAI's
 * organization and project, Anthropic's organization) do not reach the
 * gateway's clients unless `relayAccountHeaders: true`; every other header
 * does. createFailoverFetch keeps them: its caller is the gateway itself.
 */
import express from 'express';
import request from 'supertest';
import { createFailoverFetch, KeyFailoverError, keyFailover, keyPassthrough, KeyPool } from '../lib/index.js';
import { ACCOUNT_HEADERS, withoutAccountHeaders } from '../lib/gateway/account-headers.js';
import { CHAT, K0, K1, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { postStreaming } from './support/client.js';
import { byKey, json, status, type Behaviour } from './support/mock-upstream.js';

const upstream = useMockUpstream();

// What OpenAI sends with every answer (the organization and project of the key), and Anthropic's counterpart.
const OPENAI_HEADERS = {
  'openai-organization': 'org-pool-owner-7f3a',
  'openai-project': 'proj_pool_9c2e',
  'openai-processing-ms': '412',
  'openai-version': '2020-10-01',
  'x-request-id': 'req_7d1c',
  'x-ratelimit-remaining-requests': '4999',
};
const ANTHROPIC_HEADERS = { 'anthropic-organization-id': '1f5e6a52-0000-4000-8000-poolowner000', 'request-id': 'req_011CX' };

const answer =
  (code: number, headers: Record<string, string>, body: unknown = { id: 'chatcmpl-1', object: 'chat.completion' }): Behaviour =>
  (_req, res) =>
    json(res, code, body, headers);

function expectNoAccount(headers: Record<string, unknown>): void {
  for (const name of ACCOUNT_HEADERS) expect(headers[name]).toBeUndefined();
}

test('keyFailover: a relayed answer loses the account headers and keeps the others', async () => {
  const { app } = gateway(upstream.url);
  upstream.behaviour = byKey({ [K0]: status(429, { ...OPENAI_HEADERS, 'retry-after': '5' }) }, answer(200, OPENAI_HEADERS));

  const res = await request(app).post(CHAT).send(chatBody);

  expect(res.status).toBe(200);
  expectNoAccount(res.headers);
  expect([res.headers['openai-processing-ms'], res.headers['x-request-id'], res.headers['x-ratelimit-remaining-requests']]).toEqual([
    '412',
    'req_7d1c',
    '4999',
  ]);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

test('keyFailover: a streamed answer and a held 403 lose them too', async () => {
  const { app } = gateway(upstream.url);
  const server = await listen(app);
  try {
    upstream.behaviour = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', ...OPENAI_HEADERS });
      res.end('data: {"choices":[]}\n\ndata: [DONE]\n\n');
    };
    const streamed = await postStreaming(server.url + CHAT, { ...chatBody, stream: true });
    expect(streamed.status).toBe(200);
    expectNoAccount(streamed.headers);
    expect(streamed.headers['openai-version']).toBe('2020-10-01');

    upstream.reset();
    upstream.behaviour = answer(403, OPENAI_HEADERS, {
      error: { message: 'Project does not have access to model', type: 'invalid_request_error', code: 'model_not_found' },
    });
    const held = await postStreaming(server.url + CHAT, chatBody);
    expect(held.status).toBe(403);
    expectNoAccount(held.headers);
    expect(upstream.keysSeen()).toEqual([K0, K1]); // the same answer from one account twice ends the walk
  } finally {
    await server.close();
  }
});

test("keyPassthrough: Anthropic's organization id is not relayed", async () => {
  const app = express();
  const passthrough = keyPassthrough({ target: upstream.url, provider: 'anthropic', pool: new KeyPool([...KEYS]), logger: false });
  app.use(passthrough);
  upstream.behaviour = answer(200, ANTHROPIC_HEADERS, { data: [], has_more: false });
  const res = await request(app).get('/v1/models');
  await passthrough.close();
  expect(res.status).toBe(200);
  expectNoAccount(res.headers);
  expect(res.headers['request-id']).toBe('req_011CX');
});

test('relayAccountHeaders: true relays them', async () => {
  const { app } = gateway(upstream.url, { relayAccountHeaders: true });
  upstream.behaviour = answer(200, { ...OPENAI_HEADERS, ...ANTHROPIC_HEADERS });
  const res = await request(app).post(CHAT).send(chatBody);
  expect([res.headers['openai-organization'], res.headers['openai-project'], res.headers['anthropic-organization-id']]).toEqual([
    'org-pool-owner-7f3a',
    'proj_pool_9c2e',
    '1f5e6a52-0000-4000-8000-poolowner000',
  ]);
});

test('createFailoverFetch keeps them: its caller is the gateway itself', async () => {
  const fetch = createFailoverFetch(new KeyPool([K0]), { target: upstream.url });
  upstream.behaviour = answer(200, OPENAI_HEADERS);
  const res = await fetch(`${upstream.url}/v1/models`);
  await res.arrayBuffer();
  await fetch.close();
  expect([res.headers.get('openai-organization'), res.headers.get('openai-project')]).toEqual(['org-pool-owner-7f3a', 'proj_pool_9c2e']);
});

test('the upstream answer itself keeps them (for code that reads them before relaying): only a copy is filtered', () => {
  const headers = { 'openai-organization': 'org-x', 'content-type': 'application/json' };
  expect(withoutAccountHeaders(headers)).toEqual({ 'content-type': 'application/json' });
  expect(headers).toEqual({ 'openai-organization': 'org-x', 'content-type': 'application/json' });
});

test.each([
  ['keyFailover', () => keyFailover({ relayAccountHeaders: 'yes' as never })],
  ['keyPassthrough', () => keyPassthrough({ relayAccountHeaders: 1 as never })],
])('%s: relayAccountHeaders must be a boolean', (where, create) => {
  expect(create).toThrow(KeyFailoverError);
  expect(create).toThrow(new RegExp(`^${where}\\(\\): option "relayAccountHeaders" must be true or false, got (a string|1)`));
});

test('createFailoverFetch does not take the option (it keeps the headers anyway)', () => {
  expect(() => createFailoverFetch(new KeyPool([K0]), { relayAccountHeaders: true } as never)).toThrow(
    /unknown option "relayAccountHeaders"/,
  );
});
