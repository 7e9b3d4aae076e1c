/**
 * What one tenant of a shared gateway can reach of the others, and of the
 * account behind the pool: account ids in relayed error bodies, the account's
 * stored objects, a failover route written another way, the codings a failing
 * answer may come in, the URLs a failover fetch sends a key to, and the
 * scopes a request's 429 cools (its route, its own bucket).
 */
import http from 'node:http';
import zlib from 'node:zlib';
import express, { type Express } from 'express';
import request from 'supertest';
import { createFailoverFetch, keyFailover, keyPassthrough, KeyPool, type KeyFailoverMiddleware } from '../lib/index.js';
import { anthropicFailures } from '../lib/providers/anthropic-causes.js';
import { decodableAcceptEncoding } from '../lib/upstream/request-headers.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { byKey, json, ok } from './support/mock-upstream.js';
import { ANTHROPIC_ORG, ORG, anthropic, oneOrganization, openai, openaiError } from './support/provider-answers.js';

const upstream = useMockUpstream();
const opened: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(opened.map((m) => m.close())));

function passthroughApp(options: Parameters<typeof keyPassthrough>[0] = {}): { app: Express; pool: KeyPool } {
  const app = express();
  const pool = new KeyPool([...KEYS]);
  const failover = keyFailover({ target: upstream.url, pool, logger: false });
  const passthrough = keyPassthrough({ target: upstream.url, pool, logger: false, ...options });
  opened.push(failover, passthrough);
  app.use(failover, passthrough);
  return { app, pool };
}

describe('account ids in relayed error bodies', () => {
  const PROJECT = 'proj_Vx7T2kq9ZcW3';
  const noAccess = openaiError(
    403,
    { message: `Project \`${PROJECT}\` does not have access to model \`gpt-4o\``, type: 'invalid_request_error', code: 'model_not_found' },
    { 'openai-project': PROJECT },
  );

  test('a gzip-compressed held body is decoded, redacted, and sent without its coding and with its new length', async () => {
    const g = gateway(upstream.url);
    const text = JSON.stringify({
      error: {
        message: `Request too large for gpt-4o in organization ${ORG} on tokens per min (TPM): Limit 30000, Requested 36055.`,
        type: 'tokens',
        param: null,
        code: 'rate_limit_exceeded',
      },
    });
    upstream.behaviour = (_req, res) => {
      const body = zlib.gzipSync(text);
      res.writeHead(429, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'content-length': body.length,
        'openai-organization': ORG,
      });
      res.end(body);
    };
    const server = await listen(g.app);
    const answer = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const req = http.request(
        `${server.url}${CHAT}`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'accept-encoding': 'gzip' } },
        (res) => {
          const chunks: Buffer[] = [];
          res
            .on('data', (c: Buffer) => chunks.push(c))
            .on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ ...chatBody, model: 'gpt-4o' }));
    }).finally(() => server.close());
    expect(answer.status).toBe(429);
    expect(answer.headers['content-encoding']).toBeUndefined();
    expect(answer.headers['content-length']).toBe(String(answer.body.length));
    const body = JSON.parse(answer.body.toString()) as { error: { message: string; code: string } };
    expect(body.error.code).toBe('rate_limit_exceeded');
    expect(body.error.message).toBe(
      'Request too large for gpt-4o in organization org-(redacted) on tokens per min (TPM): Limit 30000, Requested 36055.',
    );
    expect(answer.body.toString()).not.toContain(ORG);
  });

  test('a project id goes; with relayAccountHeaders: true the body is relayed byte for byte', async () => {
    upstream.behaviour = noAccess;
    const hidden = await request(gateway(upstream.url).app).post(CHAT).send(chatBody);
    expect(hidden.status).toBe(403);
    expect(hidden.body.error.message).toBe('Project `proj_(redacted)` does not have access to model `gpt-4o`');
    expect(hidden.headers['openai-project']).toBeUndefined();

    const shown = await request(gateway(upstream.url, { relayAccountHeaders: true }).app)
      .post(CHAT)
      .send(chatBody);
    expect(shown.body.error.message).toBe(`Project \`${PROJECT}\` does not have access to model \`gpt-4o\``);
    expect(shown.headers['openai-project']).toBe(PROJECT);
  });

  test("Anthropic's organization id (its header's value) goes from a passthrough 429", async () => {
    const app = express();
    const passthrough = keyPassthrough({ target: upstream.url, provider: 'anthropic', pool: new KeyPool([...KEYS]), logger: false });
    opened.push(passthrough);
    app.use(passthrough);
    upstream.behaviour = anthropic.rateLimited();
    const res = await request(app).post('/v1/messages/batches').send({ requests: [] });
    expect(res.status).toBe(429);
    expect(res.body.error.message).toMatch(
      /^This request would exceed the rate limit for your organization \(\(redacted\)\) of 50 requests per minute\./,
    );
    expect(res.text).not.toContain(ANTHROPIC_ORG);
  });

  test("a revoked pool key's 401 on a request sent once is the gateway's own 502, which names no key", async () => {
    const { app, pool } = passthroughApp();
    upstream.behaviour = openai.invalidKey(K0.slice(-4));
    // A multipart upload is streamed: sent once, with the first available key.
    const res = await request(app)
      .post('/v1/audio/transcriptions')
      .field('model', 'whisper-1')
      .attach('file', Buffer.from('RIFF'), 'a.wav');
    expect(res.status).toBe(502);
    expect(res.body.error).toEqual({
      message: expect.stringMatching(/refused the gateway's key/),
      type: 'upstream_error',
      param: null,
      code: 'key_refused',
    });
    for (const key of KEYS) expect(res.text).not.toContain(key.slice(-4));
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
  });
});

describe("the account's stored objects", () => {
  test('creating one goes; listing, reading, changing or deleting one is refused before any key is used', async () => {
    const { app } = passthroughApp();
    upstream.behaviour = ok({ id: 'file-1' });
    const calls: [string, string][] = [
      ['POST', '/v1/files'],
      ['POST', '/v1/batches'],
      ['POST', '/v1/vector_stores'],
      ['POST', '/v1/responses/input_tokens'],
      ['GET', '/v1/models'],
      ['GET', '/v1/files'],
      ['GET', '/v1/files/file-1/content'],
      ['DELETE', '/v1/files/file-1'],
      ['POST', '/v1/batches/batch_1/cancel'],
      ['POST', '/v1/vector_stores/vs_1/files'],
      ['GET', '/v1//FILES/'],
      ['GET', '/v1/chat/completions/chatcmpl-1/messages'],
    ];
    const statuses: [string, string, number][] = [];
    for (const [method, path] of calls) {
      const res = await request(app)
        [method === 'POST' ? 'post' : method === 'GET' ? 'get' : 'delete'](path)
        .send(method === 'POST' ? { x: 1 } : undefined);
      statuses.push([method, path, res.status]);
    }
    expect(statuses).toEqual(calls.map(([method, path], i) => [method, path, i < 5 ? 200 : 403]));
    expect(upstream.seen.map((r) => [r.method, r.url])).toEqual(calls.slice(0, 5));
    const refused = await request(app).get('/v1/files');
    expect(refused.body.error.message).toMatch(/stored objects of its shared account/);
  });

  test("Azure's paths are the same objects; an allow list is the operator's choice and lifts the default", async () => {
    const { app } = passthroughApp();
    expect((await request(app).get('/openai/v1/files')).status).toBe(403);
    expect((await request(app).get('/openai/files?api-version=2024-10-21')).status).toBe(403);

    upstream.behaviour = ok({ object: 'list', data: [] });
    const allowed = passthroughApp({ allow: ['/v1/files', '/v1/models'] });
    expect((await request(allowed.app).get('/v1/files')).status).toBe(200);
    expect((await request(allowed.app).get('/v1/batches')).status).toBe(403); // not in the allow list
    expect(upstream.seen.map((r) => r.url)).toEqual(['/v1/files']);
  });
});

describe('a failover route written another way', () => {
  test.each(['/v1/chat/completions/', '/v1//chat/completions', '/V1/Chat/Completions', '/v1/responses/'])(
    'POST %s is refused by keyPassthrough, not forwarded around keyFailover',
    async (path) => {
      const { app } = passthroughApp();
      const res = await request(app).post(path).send(chatBody);
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_path');
      expect(res.body.error.message).toMatch(/^The path is the failover route \/v1\/(chat\/completions|responses) written another way/);
      expect(upstream.seen).toEqual([]);
    },
  );

  test('the route itself goes through keyFailover; another method on the same path is not refused as a disguise', async () => {
    const { app } = passthroughApp({ allow: '/' });
    upstream.behaviour = ok({ object: 'list' });
    expect((await request(app).post(CHAT).send(chatBody)).status).toBe(200);
    expect((await request(app).get('/v1/chat/completions/')).status).toBe(200);
    expect(upstream.seen.map((r) => [r.method, r.url])).toEqual([
      ['POST', CHAT],
      ['GET', '/v1/chat/completions/'],
    ]);
  });
});

describe('Accept-Encoding', () => {
  test('only the codings the gateway can undo are asked for upstream; identity when none is left', async () => {
    const zstd = typeof (zlib as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function';
    expect(decodableAcceptEncoding('gzip, deflate, br, zstd')).toBe(zstd ? 'gzip, deflate, br, zstd' : 'gzip, deflate, br');
    expect(decodableAcceptEncoding('compress, *;q=0.5')).toBe('identity');
    expect(decodableAcceptEncoding('br;q=1.0, gzip;q=0, x-snappy')).toBe('br;q=1.0');
    expect(decodableAcceptEncoding(['gzip', 'lz4'])).toBe('gzip');

    const g = gateway(upstream.url);
    await request(g.app).post(CHAT).set('accept-encoding', 'compress, x-lz4, *').send(chatBody);
    expect(upstream.seen[0]!.headers['accept-encoding']).toBe('identity');
  });
});

describe('createFailoverFetch target', () => {
  test('a key goes only under the target: another path prefix or origin rejects before any key is used', async () => {
    const base = `${upstream.url}/openai`;
    const failoverFetch = createFailoverFetch(new KeyPool([...KEYS]), { target: base });
    try {
      upstream.behaviour = ok({ object: 'list' });
      expect((await failoverFetch(`${base}/v1/models`)).status).toBe(200);
      await expect(failoverFetch(`${upstream.url}/other/v1/models`)).rejects.toMatchObject({ code: 'ERR_EKF_TARGET_MISMATCH' });
      await expect(failoverFetch(`${upstream.url}/openai-admin/v1/models`)).rejects.toMatchObject({ code: 'ERR_EKF_TARGET_MISMATCH' });
      await expect(failoverFetch('https://api.openai.com/v1/models')).rejects.toThrow(/outside the target/);
      expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([['/openai/v1/models', K0]]);
    } finally {
      await failoverFetch.close();
    }
  });
});

describe('the scope a 429 cools', () => {
  test("Anthropic's count_tokens has a bucket of its own: its 429 cools the model there only", async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    upstream.behaviour = (req, res) =>
      req.url === '/v1/messages/count_tokens'
        ? anthropic.rateLimited({ 'retry-after': '30', 'anthropic-ratelimit-requests-remaining': '0' })(req, res)
        : json(res, 200, { input_tokens: 3 });
    const body = { model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'hi' }] };
    expect((await request(g.app).post('/v1/messages/count_tokens').send(body)).status).toBe(429);
    expect(g.pool.snapshot().map((k) => k.models?.map((m) => m.model))).toEqual([
      ['count_tokens claude-sonnet-4-5'],
      ['count_tokens claude-sonnet-4-5'],
      ['count_tokens claude-sonnet-4-5'],
    ]);
    expect((await request(g.app).post('/v1/messages/count_tokens').send(body)).status).toBe(429); // the pool's, no call
    expect(upstream.seen).toHaveLength(3);
    expect(
      (
        await request(g.app)
          .post('/v1/messages')
          .send({ ...body, max_tokens: 8 })
      ).status,
    ).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2, K0]);
  });

  test('a request whose model cannot be read cools its route, never the whole key', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '30' }) }, ok());
    const res = await request(g.app).post(CHAT).set('content-type', 'application/json').send('{"model": 42, "messages": []}');
    expect(res.status).toBe(200);
    expect(statesFor(g.pool, CHAT)).toEqual(['cooling', 'available', 'available']);
    expect(statesFor(g.pool, 'gpt-4o-mini')).toEqual(['available', 'available', 'available']);
  });
});

describe("Anthropic's 429: a limit used up, or a request larger than what is left", () => {
  const classify = (headers: Record<string, string>, details?: object) =>
    anthropicFailures.classify({
      status: 429,
      headers,
      body: {
        type: 'error',
        error: { type: 'rate_limit_error', message: 'This request would exceed your rate limit', ...(details ? { details } : {}) },
      },
    });
  test.each<[string, Record<string, string>, object | undefined, string]>([
    ['no rate-limit headers', { 'retry-after': '20' }, undefined, 'rate_limited'],
    [
      'requests used up',
      { 'anthropic-ratelimit-requests-remaining': '0', 'anthropic-ratelimit-input-tokens-remaining': '30000' },
      undefined,
      'rate_limited',
    ],
    [
      'input tokens used up',
      { 'anthropic-ratelimit-requests-remaining': '49', 'anthropic-ratelimit-input-tokens-remaining': '0' },
      undefined,
      'rate_limited',
    ],
    [
      'every bucket has something left',
      { 'anthropic-ratelimit-requests-remaining': '49', 'anthropic-ratelimit-input-tokens-remaining': '30000' },
      undefined,
      'request_too_large',
    ],
    [
      'a ramp limit names itself',
      { 'anthropic-ratelimit-requests-remaining': '49' },
      { error_code: 'ramp_limit_exceeded' },
      'rate_limited',
    ],
    ['an unreadable count', { 'anthropic-ratelimit-requests-remaining': 'n/a' }, undefined, 'rate_limited'],
  ])('%s: %s', (_name, headers, details, cause) => {
    expect(classify(headers, details)).toBe(cause);
  });

  test('a request too large marks nothing, and a second key of the organization saying the same ends the walk', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    upstream.behaviour = oneOrganization(
      anthropic.rateLimited({
        'retry-after': '20',
        'anthropic-ratelimit-requests-remaining': '49',
        'anthropic-ratelimit-input-tokens-remaining': '30000',
      }),
    );
    const res = await request(g.app).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [] });
    expect(res.status).toBe(429);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(statesFor(g.pool, 'claude-sonnet-4-5')).toEqual(['available', 'available', 'available']);
  });
});
