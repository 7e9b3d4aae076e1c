/**
 * The same middleware as a plain (req, res, next?) handler on http.createServer,
 * for gateways that put it in front of their framework: no Express, the pool
 * given as the `pool` option.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { KeyPool, keyFailover, keyPassthrough, type KeyFailoverMiddleware } from '../lib/index.js';
import { CHAT, FakeClock, K0, K1, KEYS, chatBody, statesFor, useMockUpstream } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai } from './support/provider-answers.js';
import { chatFrames, streamOf } from './support/provider-streams.js';

const upstream = useMockUpstream();
const opened: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(opened.map((m) => m.close())));

async function bareServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

function setup() {
  const clock = new FakeClock();
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
  const failover = keyFailover({ target: upstream.url, pool, logger: false });
  const passthrough = keyPassthrough({ target: upstream.url, pool, logger: false });
  opened.push(failover, passthrough);
  return { pool, clock, failover, passthrough };
}

test('http.createServer((req, res) => failover(req, res)): the SDK fails over on 429, streams, and other routes get 404', async () => {
  const { pool, failover } = setup();
  const server = await bareServer((req, res) => failover(req, res));
  try {
    upstream.behaviour = byKey(
      { [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }) },
      ok({ id: 'chatcmpl-1', object: 'chat.completion', choices: [] }),
    );
    const client = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${server.url}/v1`, maxRetries: 0 });
    const completion = await client.chat.completions.create(chatBody as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(completion.id).toBe('chatcmpl-1');
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(statesFor(pool)).toEqual(['cooling', 'available', 'available']);

    upstream.reset();
    upstream.behaviour = streamOf(chatFrames());
    const stream = await client.chat.completions.create({ ...chatBody, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    const text: string[] = [];
    for await (const chunk of stream) text.push(chunk.choices[0]?.delta.content ?? '');
    expect(text.join('')).toBe('Hello!');

    const other = await fetch(`${server.url}/v1/models`);
    expect([other.status, await other.text()]).toEqual([404, 'Not Found']);
    expect(upstream.seen.map((r) => r.url)).toEqual([CHAT]);
  } finally {
    await server.close();
  }
});

test('a connect-style chain: failover(req, res, next) passes what it does not take to the next handler (keyPassthrough)', async () => {
  const { failover, passthrough } = setup();
  const server = await bareServer((req, res) =>
    failover(req, res, () =>
      passthrough(req, res, () => {
        res.statusCode = 418;
        res.end();
      }),
    ),
  );
  try {
    upstream.behaviour = ok({ object: 'list', data: [{ id: 'gpt-4o-mini' }] });
    const models = await fetch(`${server.url}/v1/models`, { headers: { authorization: 'Bearer gateway-user-token' } });
    expect(models.status).toBe(200);
    expect(await models.json()).toEqual({ object: 'list', data: [{ id: 'gpt-4o-mini' }] });
    expect(upstream.keysSeen()).toEqual([K0]);
  } finally {
    await server.close();
  }
});

test('a failure inside the handler with no next(): a provider-shaped 500, no key value in it', async () => {
  const failover = keyFailover({
    target: upstream.url,
    pool: new KeyPool([K0]),
    logger: false,
    byok: () => {
      throw new Error(`boom ${K0}`);
    },
  });
  opened.push(failover);
  const server = await bareServer((req, res) => failover(req, res));
  try {
    const res = await fetch(`${server.url}${CHAT}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody),
    });
    const text = await res.text();
    expect(res.status).toBe(500);
    expect(JSON.parse(text).error.code).toBe('internal_error');
    expect(text).not.toContain(K0);
  } finally {
    await server.close();
  }
});
