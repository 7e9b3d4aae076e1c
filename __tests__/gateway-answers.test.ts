/**
 * The answers the gateway writes itself carry what the official SDKs read:
 * a request id (`err.requestID`), `x-should-retry: false` where a retry cannot
 * help (so that the SDK does not send the same request twice more), and the
 * pool's exact wait in `retry-after-ms`.
 */
import Anthropic from '@anthropic-ai/sdk';
import express from 'express';
import http from 'node:http';
import OpenAI from 'openai';
import request from 'supertest';
import { createFailoverFetch, keyPassthrough, KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { status } from './support/mock-upstream.js';

const upstream = useMockUpstream();
const GENERATED = /^ekf-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// OpenAI's answer to a revoked key, as the API sends it.
const revoked = status(
  401,
  { 'x-request-id': 'req_upstream_401' },
  {
    error: {
      message: 'Incorrect API key provided: sk-test-***. You can find your API key at https://platform.openai.com/account/api-keys.',
      type: 'invalid_request_error',
      param: null,
      code: 'invalid_api_key',
    },
  },
);

/** A gateway on a real socket, with a count of the requests that reached it (SDK retries included). */
async function countedGateway(options: Parameters<typeof gateway>[1] = {}) {
  let received = 0;
  const g = gateway(upstream.url, options, {}, (app) =>
    app.use((_req, _res, next) => {
      received++;
      next();
    }),
  );
  const server = await listen(g.app);
  return { ...g, server, received: () => received };
}

describe('every key unauthorized: 502, not retried by the SDKs', () => {
  test('openai (maxRetries at its default): one request, err.requestID set', async () => {
    const g = await countedGateway();
    upstream.behaviour = revoked;
    try {
      const openai = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${g.server.url}/v1` });
      const error = await openai.chat.completions.create(chatBody as never).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.InternalServerError);
      const apiError = error as InstanceType<typeof OpenAI.APIError>;
      expect(apiError.status).toBe(502);
      expect(apiError.requestID).toMatch(GENERATED);
      expect(apiError.headers?.get('x-should-retry')).toBe('false');
      expect(apiError.message).toMatch(/All configured keys failed authentication/);

      // The client's own request id is echoed when it is a plain token.
      const traced = new OpenAI({
        apiKey: 'gateway-user-token',
        baseURL: `${g.server.url}/v1`,
        defaultHeaders: { 'x-request-id': 'trace-42' },
      });
      const second = (await traced.chat.completions.create(chatBody as never).catch((e: unknown) => e)) as InstanceType<
        typeof OpenAI.APIError
      >;
      expect(second.requestID).toBe('trace-42');
    } finally {
      await g.server.close();
    }
    expect(g.received()).toBe(2); // one per SDK call: no retry
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'disabled', 'disabled']);
  });

  test('anthropic: one request, err.requestID from request-id', async () => {
    const g = await countedGateway({ provider: 'anthropic' });
    upstream.behaviour = status(
      401,
      { 'request-id': 'req_011' },
      { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } },
    );
    try {
      const anthropic = new Anthropic({ apiKey: 'gateway-user-token', baseURL: g.server.url });
      const error = await anthropic.messages
        .create({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Anthropic.InternalServerError);
      const apiError = error as InstanceType<typeof Anthropic.APIError>;
      expect(apiError.status).toBe(502);
      expect(apiError.requestID).toMatch(GENERATED);
      expect(apiError.headers?.get('x-request-id')).toBe(apiError.requestID);
    } finally {
      await g.server.close();
    }
    expect(g.received()).toBe(1);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
  });
});

describe('headers of every answer the gateway writes', () => {
  test("the pool's 429: Retry-After in whole seconds (rounded up), retry-after-ms exact; retryable", async () => {
    const { app, pool } = gateway(upstream.url);
    pool.markRateLimited('key-0', 9_000);
    pool.markRateLimited('key-1', 4_321);
    pool.markRateLimited('key-2', 60_000);
    const res = await request(app).post(CHAT).send(chatBody);
    expect(res.status).toBe(429);
    expect([res.headers['retry-after'], res.headers['retry-after-ms'], res.headers['x-should-retry']]).toEqual(['5', '4321', undefined]);
    expect(res.headers['x-request-id']).toMatch(GENERATED);
    expect(upstream.seen).toHaveLength(0);
  });

  test('retry-after-ms after a walk that cooled every key from the upstream answers', async () => {
    const { app } = gateway(upstream.url);
    upstream.behaviour = (req, res) => status(429, { 'retry-after-ms': req.key === K1 ? '1500' : '20000' })(req, res);
    const res = await request(app).post(CHAT).send(chatBody);
    expect([res.status, res.headers['retry-after'], res.headers['retry-after-ms']]).toEqual([429, '2', '1500']);
  });

  test.each([
    ['413 body too large', { maxBodyBytes: 10 }, () => ({}), 413],
    ['400 unusable client key', { byok: () => 'sk bad' }, () => ({}), 400],
  ])('%s: x-should-retry: false, a generated x-request-id', async (_name, options, headers, expected) => {
    const { app } = gateway(upstream.url, options);
    const res = await request(app).post(CHAT).set(headers()).send(chatBody);
    expect(res.status).toBe(expected);
    expect(res.headers['x-should-retry']).toBe('false');
    expect(res.headers['x-request-id']).toMatch(GENERATED);
  });

  test('keyPassthrough: 405, 403 and 400 are not retryable; a request id that is not a plain token is replaced', async () => {
    const app = express();
    const passthrough = keyPassthrough({ target: upstream.url, pool: new KeyPool([...KEYS]), logger: false });
    app.use(passthrough);
    const server = await listen(app);
    const answers: [number, string | undefined, string | undefined][] = [];
    try {
      for (const [method, path, id] of [
        ['TRACE', '/v1/models', 'plain-id.1'],
        ['GET', '/v1/organization/users', 'plain-id.2'],
        ['GET', '/v1/..\\admin', 'not plain: spaces'],
        ['GET', '/v1/models', 'x'.repeat(129)],
      ] as const) {
        answers.push(
          await new Promise((resolve, reject) =>
            http
              // Options, not a URL string: a URL string would be normalised by the client (the backslash resolved away).
              .request({ host: '127.0.0.1', port: new URL(server.url).port, path, method, headers: { 'x-request-id': id } }, (res) => {
                res.resume();
                resolve([
                  res.statusCode!,
                  res.headers['x-should-retry'] as string | undefined,
                  res.headers['x-request-id'] as string | undefined,
                ]);
              })
              .on('error', reject)
              .end(),
          ),
        );
      }
    } finally {
      await server.close();
      await passthrough.close();
    }
    expect(answers.slice(0, 3).map(([s, retry]) => [s, retry])).toEqual([
      [405, 'false'],
      [403, 'false'],
      [400, 'false'],
    ]);
    expect(answers.map(([, , id]) => id?.replace(GENERATED, 'generated'))).toEqual(['plain-id.1', 'plain-id.2', 'generated', undefined]);
    // The last one reached the upstream: its answer is relayed as is, with no header of the gateway's.
    expect(answers[3]![0]).toBe(200);
  });

  test('502 unreachable and 504 timeout stay retryable (the SDK may well get through next time)', async () => {
    const unreachable = gateway('http://127.0.0.1:9');
    const timeout = gateway(upstream.url, { timeoutMs: 50 });
    upstream.behaviour = () => new Promise(() => {});
    for (const [g, expected] of [
      [unreachable, 502],
      [timeout, 504],
    ] as const) {
      const res = await request(g.app).post(CHAT).set('x-request-id', 'trace-7').send(chatBody);
      expect([res.status, res.headers['x-should-retry'], res.headers['x-request-id']]).toEqual([expected, undefined, 'trace-7']);
    }
  });
});

test("createFailoverFetch: the pool's own answers carry a request id and retry-after-ms too", async () => {
  const pool = new KeyPool({ keys: [K0, K1], now: () => 1_000_000 });
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  pool.markRateLimited('key-0', 2_500);
  pool.markRateLimited('key-1', 7_000);
  try {
    const limited = await fetch(`${upstream.url}/v1/models`, { headers: { 'x-request-id': 'agent-step-3' } });
    expect([
      limited.status,
      limited.headers.get('retry-after'),
      limited.headers.get('retry-after-ms'),
      limited.headers.get('x-should-retry'),
    ]).toEqual([429, '3', '2500', 'false']);
    expect(limited.headers.get('x-request-id')).toBe('agent-step-3');
    pool.markDisabled('key-0');
    pool.markDisabled('key-1');
    const disabled = await fetch(`${upstream.url}/v1/models`);
    expect([disabled.status, disabled.headers.get('retry-after-ms')]).toEqual([502, null]);
    expect(disabled.headers.get('x-request-id')).toMatch(GENERATED);
  } finally {
    await fetch.close();
  }
  expect(upstream.seen).toHaveLength(0);
});
