import Anthropic from '@anthropic-ai/sdk';
import type { IncomingHttpHeaders } from 'node:http';
import request from 'supertest';
import { K0, gateway, listen, useMockUpstream } from './support/gateway.js';
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
