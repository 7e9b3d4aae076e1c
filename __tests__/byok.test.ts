import Anthropic from '@anthropic-ai/sdk';
import type { IncomingHttpHeaders } from 'node:http';
import express from 'express';
import request from 'supertest';
import { keyPassthrough, KeyPool, openaiCompatible } from '../lib/index.js';
import { CHAT, K0, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { json } from './support/mock-upstream.js';

/**
 * A client's own key (byok): found wherever the client's SDK puts it, sent
 * upstream only in the provider's key header, and nowhere else.
 */
const upstream = useMockUpstream();

const CLIENT_KEY = 'sk-ant-client-own-0000000000000000zz';
const message = {
  id: 'msg_01',
  type: 'message',
  role: 'assistant',
  model: 'claude-sonnet-4-5',
  content: [{ type: 'text', text: 'Hello!' }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage: { input_tokens: 3, output_tokens: 2 },
};
const messagesBody = { model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user' as const, content: 'hi' }] };

describe('anthropic, byok: true', () => {
  test('@anthropic-ai/sdk 1.x (its key as Authorization: Bearer) is served with its own key, not a pool key', async () => {
    const seenByGateway: IncomingHttpHeaders[] = [];
    const { app, pool } = gateway(upstream.url, { provider: 'anthropic', byok: true }, {}, (a) =>
      a.use((req, _res, next) => {
        seenByGateway.push(req.headers);
        next();
      }),
    );
    upstream.behaviour = (_req, res) => json(res, 200, message, { 'request-id': 'req_upstream_1' });
    const server = await listen(app);
    try {
      const client = new Anthropic({ apiKey: CLIENT_KEY, baseURL: server.url, maxRetries: 0 });
      const reply = await client.messages.create(messagesBody);
      expect(reply.content).toEqual([{ type: 'text', text: 'Hello!' }]);
    } finally {
      await server.close();
    }

    // The premise: this SDK sends the key as a bearer token, not in x-api-key.
    expect(seenByGateway[0]!.authorization).toBe(`Bearer ${CLIENT_KEY}`);
    expect(seenByGateway[0]!['x-api-key']).toBeUndefined();
    // One attempt, with the client's key in Anthropic's key header; no Authorization upstream.
    expect(upstream.keysSeen()).toEqual([CLIENT_KEY]);
    expect(upstream.seen[0]!.headers['x-api-key']).toBe(CLIENT_KEY);
    expect(upstream.seen[0]!.headers.authorization).toBeUndefined();
    expect(upstream.seen[0]!.headers['anthropic-version']).toBe(seenByGateway[0]!['anthropic-version']);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('x-api-key is read first; the bearer token then does not travel', async () => {
    const { app } = gateway(upstream.url, { provider: 'anthropic', byok: true });
    await request(app)
      .post('/v1/messages')
      .set('x-api-key', CLIENT_KEY)
      .set('authorization', 'Bearer sk-ant-other-000000000000000000')
      .send(messagesBody);
    expect(upstream.keysSeen()).toEqual([CLIENT_KEY]);
    expect(upstream.seen[0]!.headers.authorization).toBeUndefined();
    expect(JSON.stringify(upstream.seen[0]!.headers)).not.toContain('sk-ant-other');
  });

  test('a bearer token with a lower-case scheme counts; no key at all still uses the pool', async () => {
    const { app } = gateway(upstream.url, { provider: 'anthropic', byok: true });
    await request(app).post('/v1/messages').set('authorization', `bearer ${CLIENT_KEY}`).send(messagesBody);
    await request(app).post('/v1/messages').send(messagesBody);
    expect(upstream.keysSeen()).toEqual([CLIENT_KEY, K0]);
  });
});

describe('the client key travels in the key header only', () => {
  const OWN = 'sk-client-own-key-00000000000000qq';
  const fromQuery = (req: express.Request) => req.query['key'] as string | undefined;

  test('a key read from the query string leaves the upstream URL; the other parameters keep their bytes and order', async () => {
    const { app, pool } = gateway(upstream.url, { byok: fromQuery });
    const res = await request(app).post(`${CHAT}?a=1&key=${OWN}&b=x%2By+z&copy=${OWN}`).send(chatBody);
    expect(res.status).toBe(200);
    expect(upstream.seen.map((r) => [r.url, r.headers.authorization])).toEqual([[`${CHAT}?a=1&b=x%2By+z`, `Bearer ${OWN}`]]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('percent-encoded, under another name, or the only parameter: still taken out', async () => {
    const key = 'sk-client+own/key=00000000000000';
    const { app } = gateway(upstream.url, { byok: (req) => req.query['api_key'] as string | undefined });
    await request(app)
      .post(`${CHAT}?api_key=${encodeURIComponent(key)}`)
      .send(chatBody);
    await request(app)
      .post(`${CHAT}?x=1&api_key=${encodeURIComponent(key)}&copy=${encodeURIComponent(key)}`)
      .send(chatBody);
    expect(upstream.seen.map((r) => [r.url, r.headers.authorization])).toEqual([
      [CHAT, `Bearer ${key}`],
      [`${CHAT}?x=1`, `Bearer ${key}`],
    ]);
    for (const seen of upstream.seen) expect(seen.url).not.toContain(encodeURIComponent(key));
  });

  test('keyPassthrough: the same, on a GET that fails over nothing', async () => {
    const app = express();
    const passthrough = keyPassthrough({ target: upstream.url, pool: new KeyPool([...KEYS]), byok: fromQuery, logger: false });
    app.use(passthrough);
    const res = await request(app).get(`/v1/models?key=${OWN}&limit=2`);
    await passthrough.close();
    expect(res.status).toBe(200);
    expect(upstream.seen.map((r) => [r.method, r.url, r.key])).toEqual([['GET', '/v1/models?limit=2', OWN]]);
  });

  test('with the provider query (Azure api-version) the key still leaves the URL', async () => {
    const azure = openaiCompatible({ name: 'azure', authHeader: 'api-key', query: { 'api-version': '2024-10-21' } });
    const { app } = gateway(`${upstream.url}/openai`, { provider: azure, byok: fromQuery });
    await request(app).post(`${CHAT}?key=${OWN}`).send(chatBody);
    expect(upstream.seen.map((r) => [r.url, r.headers['api-key']])).toEqual([[`/openai${CHAT}?api-version=2024-10-21`, OWN]]);
  });

  test('a 1-character key: only the header that carried it is dropped, not every header containing that character', async () => {
    const { app } = gateway(upstream.url, { byok: (req) => req.get('x-client-key') });
    await request(app)
      .post(CHAT)
      .set('x-client-key', 'a')
      .set('user-agent', 'a-agent/1.0')
      .set('x-note', 'a')
      .set('accept', 'application/json')
      .send(chatBody);
    const h = upstream.seen[0]!.headers;
    expect(upstream.keysSeen()).toEqual(['a']);
    expect([h['x-client-key'], h['x-note']]).toEqual([undefined, undefined]); // whole value: the key
    expect([h['content-type'], h['user-agent'], h.accept]).toEqual(['application/json', 'a-agent/1.0', 'application/json']);
  });

  test('a header that carried the key as "Bearer <key>", any case of the scheme, is dropped; one that only contains it is kept', async () => {
    const { app } = gateway(upstream.url, { byok: (req) => /^bearer +(\S+)$/i.exec(req.get('x-upstream-auth') ?? '')?.[1] });
    await request(app)
      .post(CHAT)
      .set('x-upstream-auth', `BEARER ${OWN}`)
      .set('x-other', `bearer  ${OWN}`)
      .set('x-trace', `trace-${OWN}`)
      .send(chatBody);
    const h = upstream.seen[0]!.headers;
    expect(h.authorization).toBe(`Bearer ${OWN}`);
    expect([h['x-upstream-auth'], h['x-other']]).toEqual([undefined, undefined]);
    expect(h['x-trace']).toBe(`trace-${OWN}`);
  });
});
