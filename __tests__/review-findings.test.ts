/**
 * Review findings: each test below ("review (fixed): ...") is an attack a
 * hostile tenant of a shared gateway (or a user following the README) could
 * make before the fix. The assertion states the behaviour the contract
 * promises; the comment above it says what happened before.
 */
import http from 'node:http';
import zlib from 'node:zlib';
import express, { type Express } from 'express';
import request from 'supertest';
import {
  createFailoverFetch,
  keyFailover,
  keyPassthrough,
  KeyPool,
  MemoryKeyStateStore,
  type KeyFailoverMiddleware,
} from '../lib/index.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, gateway, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { gate, rawPost } from './support/client.js';
import { byKey, json, ok, type Behaviour, type SeenRequest } from './support/mock-upstream.js';
import { ANTHROPIC_ORG, ORG, anthropic, anthropicError, oneOrganization, openai } from './support/provider-answers.js';

const upstream = useMockUpstream();
const opened: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(opened.map((m) => m.close())));

const MESSAGES = '/v1/messages';

/** The model as the provider reads the body: a JSON parser, where the last of duplicated keys wins. */
const providerModel = (req: SeenRequest): unknown => (JSON.parse(req.body.toString()) as { model?: unknown }).model;

/** An upstream where `limited` is used up on every key (429 with Retry-After 60) and every other model answers. */
function modelLimited(limited: string): Behaviour {
  return (req, res) => (providerModel(req) === limited ? openai.rateLimited(limited, { 'retry-after': '60' })(req, res) : ok()(req, res));
}

const rawJson = (app: Express, path: string, text: string) => request(app).post(path).set('content-type', 'application/json').send(text);

/** keyFailover for the model routes, keyPassthrough for the rest, as the README mounts them (no body parser). */
function fullGateway(passthroughOptions: Parameters<typeof keyPassthrough>[0] = {}): { app: Express; pool: KeyPool; clock: FakeClock } {
  const clock = new FakeClock();
  const app = express();
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
  app.locals['keyPool'] = pool;
  const failover = keyFailover({ target: upstream.url, logger: false });
  const passthrough = keyPassthrough({ target: upstream.url, logger: false, ...passthroughOptions });
  opened.push(failover, passthrough);
  app.use(failover, passthrough);
  return { app, pool, clock };
}

describe('the model the gateway scopes a 429 by is not the model the upstream served', () => {
  test('review (fixed): {"model": null, "model": "gpt-4o"} turns one gpt-4o rate limit into a cooldown of every key for every model', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = modelLimited('gpt-4o'); // the hostile tenant's own traffic used gpt-4o up; gpt-4o-mini is fine

    // The scan reads the first "model" (null: no scope, "the whole key"); the provider's parser reads the last (gpt-4o).
    const hostile = await rawJson(g.app, CHAT, '{"model": null, "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}');
    expect(hostile.status).toBe(429);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]); // one request, one call per key

    // Every other tenant, on a model that no key is limited on:
    const other = await request(g.app).post(CHAT).send(chatBody);
    // Before the fix: 429 from the pool, no upstream call: every key cools for every model for 60 s.
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
    expect(other.status).toBe(200);
  });

  test('review (fixed): {"model": "gpt-4o-mini", "model": "gpt-4o"} cools every key for gpt-4o-mini, the model the other tenants use', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = modelLimited('gpt-4o');
    // The same with an escaped key name, which the byte scan does not see as "model": {"model":"gpt-4o-mini","mod\u0065l":"gpt-4o"}
    await rawJson(g.app, CHAT, '{"model": "gpt-4o-mini", "mod\\u0065l": "gpt-4o", "messages": []}');
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);

    const other = await request(g.app).post(CHAT).send(chatBody);
    // Before the fix: ['cooling', 'cooling', 'cooling'] for gpt-4o-mini, and the pool's 429.
    expect(statesFor(g.pool, 'gpt-4o-mini')).toEqual(['available', 'available', 'available']);
    expect(other.status).toBe(200);
  });

  test('review (fixed): made-up model names in a duplicated key fill the bounded scope store and push out the real gpt-4o cooldowns', async () => {
    // A small bound so that the test is quick; with the default 10 000 it takes ceil(10 000 / keys) requests.
    const store = new MemoryKeyStateStore({ maxScopedStates: 30 });
    const g = gateway(upstream.url, {}, { store });
    upstream.behaviour = modelLimited('gpt-4o');

    await request(g.app)
      .post(CHAT)
      .send({ ...chatBody, model: 'gpt-4o' }); // honest: every key now cools for gpt-4o
    expect(statesFor(g.pool, 'gpt-4o')).toEqual(['cooling', 'cooling', 'cooling']);
    const before = upstream.seen.length;
    expect(
      (
        await request(g.app)
          .post(CHAT)
          .send({ ...chatBody, model: 'gpt-4o' })
      ).status,
    ).toBe(429);
    expect(upstream.seen.length).toBe(before); // answered by the pool, no upstream call: as designed

    // Read as the provider reads them, the hostile requests are for gpt-4o: answered by the pool, no scope added.
    for (let i = 0; i < 10; i++) {
      expect((await rawJson(g.app, CHAT, `{"model": "junk-${i}", "model": "gpt-4o", "messages": []}`)).status).toBe(429);
    }
    expect(upstream.seen.length).toBe(before);

    const seen = upstream.seen.length;
    await request(g.app)
      .post(CHAT)
      .send({ ...chatBody, model: 'gpt-4o' });
    // Before the fix: the honest gpt-4o request walks all three keys again (3 more 429s): the cooldowns it relied on were evicted.
    expect(upstream.seen.length).toBe(seen);
  });
});

describe('a rate limit is scoped to the model, but not to the endpoint', () => {
  test('review (fixed): Anthropic count_tokens (free, its own rate limit) answering 429 cools every key for Messages on that model', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    // count_tokens has its own requests-per-minute limit, apart from message creation; a tenant can use it up for free.
    upstream.behaviour = (req, res) =>
      req.url.startsWith('/v1/messages/count_tokens')
        ? anthropic.rateLimited({ 'retry-after': '60' })(req, res)
        : json(res, 200, { id: 'msg_1', type: 'message', content: [{ type: 'text', text: 'hi' }] });
    const body = { model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };
    const counted = await request(g.app).post('/v1/messages/count_tokens').send(body);
    expect(counted.status).toBe(429);

    const message = await request(g.app).post(MESSAGES).send(body);
    // Before the fix: 429 from the pool; every key cools for claude-sonnet-4-5 Messages, which no key is limited on.
    expect(message.status).toBe(200);
  });

  test('review (fixed): keyPassthrough with a streamed body cools the whole key on a 429 for any model: 3 embedding requests lock chat out', async () => {
    const g = fullGateway();
    // Embeddings (or images, moderations, audio: cheap models with small limits) are used up; chat is fine.
    upstream.behaviour = (req, res) =>
      req.url === '/v1/embeddings' ? openai.rateLimited('text-embedding-3-small', { 'retry-after': '60' })(req, res) : ok()(req, res);
    for (let i = 0; i < KEYS.length; i++) {
      const res = await request(g.app).post('/v1/embeddings').send({ model: 'text-embedding-3-small', input: 'x' });
      expect(res.status).toBe(429); // relayed: one attempt, the first available key
    }
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);

    const chat = await request(g.app).post(CHAT).send(chatBody);
    // Before the fix: ['cooling', 'cooling', 'cooling'] key-wide, and chat (gpt-4o-mini) gets the pool's 429 for 60 s.
    expect(statesFor(g.pool, 'gpt-4o-mini')).toEqual(['available', 'available', 'available']);
    expect(chat.status).toBe(200);
  });
});

describe("the client's Accept-Encoding decides whether the gateway can read a failing answer", () => {
  test('review (fixed): with Accept-Encoding: zstd, a "Request too large" 429 (marks nothing) is read as a rate limit and cools every key', async () => {
    const g = gateway(upstream.url);
    const tooLarge = JSON.stringify({
      error: {
        message: `Request too large for gpt-4o in organization ${ORG} on tokens per min (TPM): Limit 30000, Requested 36055. The input or output tokens must be reduced in order to run successfully.`,
        type: 'tokens',
        param: null,
        code: 'rate_limit_exceeded',
      },
    });
    // As a CDN in front of the provider does: the coding the client prefers, zstd when it asks for it.
    upstream.behaviour = (req, res) => {
      if (providerModel(req) !== 'gpt-4o' || req.body.length < 10_000) return ok()(req, res);
      const zstd = /\bzstd\b/.test(String(req.headers['accept-encoding']));
      const body = zstd ? zlib.zstdCompressSync(tooLarge) : Buffer.from(tooLarge);
      res.writeHead(429, { 'content-type': 'application/json', ...(zstd ? { 'content-encoding': 'zstd' } : {}) });
      res.end(body);
    };
    const big = { ...chatBody, model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(20_000) }] };

    const server = await listen(g.app);
    const res = await rawPost(`${server.url}${CHAT}`, big, { 'accept-encoding': 'zstd' }).finally(() => server.close());
    expect(res.status).toBe(429);
    // The second identical "too large" ends the walk (one organization: a third key would say the same).
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    // Before the fix: ['cooling', 'cooling', 'cooling'] for gpt-4o, for defaultCooldownMs (60 s): one oversized request, every key out.
    expect(statesFor(g.pool, 'gpt-4o')).toEqual(['available', 'available', 'available']);
  });
});

describe('Anthropic has no "request too large" cause', () => {
  test('review (fixed): one Anthropic request larger than the input-tokens-per-minute limit cools every key for that model', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    // Anthropic answers a request that alone exceeds the organization's ITPM (30 000 on tier 1) with the same 429
    // rate_limit_error as a used-up limit; its headers show the bucket full: the request, not the traffic, is the cause.
    const fullBucket = {
      'retry-after': '20',
      'anthropic-ratelimit-input-tokens-limit': '30000',
      'anthropic-ratelimit-input-tokens-remaining': '30000',
      'anthropic-ratelimit-requests-limit': '50',
      'anthropic-ratelimit-requests-remaining': '49',
    };
    upstream.behaviour = oneOrganization((req, res) =>
      req.body.length > 100_000
        ? anthropicError(
            429,
            {
              type: 'rate_limit_error',
              message: `This request would exceed your organization's rate limit of 30,000 input tokens per minute (org: ${ANTHROPIC_ORG}, model: claude-sonnet-4-5). For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.`,
            },
            fullBucket,
          )(req, res)
        : json(res, 200, { id: 'msg_1', type: 'message', content: [{ type: 'text', text: 'hi' }] }),
    );
    const message = (content: string) =>
      request(g.app)
        .post(MESSAGES)
        .send({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content }] });

    expect((await message('x'.repeat(160_000))).status).toBe(429); // ~40 000 tokens: refused, billed nothing
    expect(upstream.keysSeen()).toEqual([K0, K1]); // the second identical answer about the request ends the walk
    const other = await message('hi');
    // Before the fix: 429 from the pool: every key cools 20 s for claude-sonnet-4-5, for every tenant.
    expect(other.status).toBe(200);
  });
});

describe('the pool account reaches tenants through relayed bodies', () => {
  test('review (fixed): every key answering "Request too large" relays the organization id that relayAccountHeaders: false hides', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = openai.tooLarge('gpt-4o');
    const res = await request(g.app)
      .post(CHAT)
      .send({ ...chatBody, model: 'gpt-4o' });
    expect(res.status).toBe(429);
    expect(res.headers['openai-organization']).toBeUndefined(); // the header is dropped...
    // ...and before the fix the body said "Request too large for gpt-4o in organization org-7kQe2iT0mBxWc3a9 ...".
    expect(JSON.stringify(res.body)).not.toContain(ORG);
  });

  test("review (fixed): a model the projects lack relays the last key's project id", async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = openai.modelNotAllowed('gpt-4o');
    const res = await request(g.app)
      .post(CHAT)
      .send({ ...chatBody, model: 'gpt-4o' });
    expect(res.status).toBe(403);
    // Before the fix: "Project `proj_Vx7T2kq9ZcW3` does not have access to model `gpt-4o`".
    expect(JSON.stringify(res.body)).not.toMatch(/proj_\w+/);
  });

  test("review (fixed): keyPassthrough relays Anthropic's 429 body, which names the pool's organization", async () => {
    const a = express();
    const passthrough = keyPassthrough({ target: upstream.url, provider: 'anthropic', pool: new KeyPool([...KEYS]), logger: false });
    opened.push(passthrough);
    a.use(passthrough);
    upstream.behaviour = anthropic.rateLimited();
    const batches = await request(a).post('/v1/messages/batches').send({ requests: [] });
    expect(batches.status).toBe(429);
    expect(batches.headers['anthropic-organization-id']).toBeUndefined();
    // Before the fix: "This request would exceed the rate limit for your organization (3f6c1b8e-...) of 50 requests per minute."
    expect(JSON.stringify(batches.body)).not.toContain(ANTHROPIC_ORG);
  });

  test("review (fixed): keyPassthrough relays OpenAI's invalid_api_key body to the tenant: the pool has a revoked key, and its masked value", async () => {
    const a = express();
    const pool = new KeyPool([...KEYS]);
    const passthrough = keyPassthrough({ target: upstream.url, pool, logger: false });
    opened.push(passthrough);
    a.use(passthrough);
    upstream.behaviour = openai.invalidKey(K0.slice(-4));
    const files = await request(a).post('/v1/files').field('purpose', 'batch').attach('file', Buffer.from('{}'), 'a.jsonl');
    // The streamed upload goes once; key-0 is disabled (right). A pool key's 401 is no answer for a client: the gateway's
    // own 502 (key_refused), which the SDKs retry, and the retry goes with another key.
    expect(files.status).toBe(502);
    expect(files.body.error.code).toBe('key_refused');
    expect(files.headers['x-should-retry']).toBeUndefined();
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
    // Before the fix: "Incorrect API key provided: sk-test-************************a0. ..."
    expect(JSON.stringify(files.body)).not.toContain('Incorrect API key provided');
  });
});

describe('the unrecognised-401 rule', () => {
  test('review (fixed): an unrecognised 401 whose body is lost (or over 1 MiB) disables the key at once, with no second key to confirm it', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey(
      {
        [K0]: (_req, res) => {
          // A proxy's 401 whose body breaks off: the same request to key-1 gets the same kind of answer.
          res.writeHead(401, { 'content-type': 'text/html', 'content-length': '1000' });
          res.write('<html><body>401 Authorization Required');
          setTimeout(() => res.destroy(), 5);
        },
      },
      (_req, res) => {
        res.writeHead(401, { 'content-type': 'text/html' });
        res.end('<html><body>401 Authorization Required</body></html>');
      },
    );
    const res = await request(g.app).post(CHAT).send(chatBody);
    expect(res.status).toBe(401);
    // Before the fix: ['disabled', 'available', 'available']: key-0 is out for everyone, though key-1 answered the same.
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });
});

describe('a client that leaves marks no key', () => {
  /** A failing answer whose head comes at once and whose body is slow: the client leaves while the gateway reads it. */
  async function leaveWhileBodyIsRead(app: Express, status: number, body: string): Promise<void> {
    const headSent = gate('the failing head at the upstream');
    upstream.behaviour = (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.write(body.slice(0, 20));
      headSent.open();
      setTimeout(() => res.end(body.slice(20)), 500);
    };
    const server = await listen(app);
    const req = http.request(`${server.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', () => {});
    req.end(JSON.stringify({ ...chatBody, model: 'gpt-4o' }));
    await headSent.promise;
    await new Promise((resolve) => setTimeout(resolve, 30));
    req.destroy(); // the client leaves
    await new Promise((resolve) => setTimeout(resolve, 100));
    await server.close();
  }

  test('review (fixed): leaving while an unrecognised 401 is read disables the key, with no second answer to confirm it', async () => {
    const g = gateway(upstream.url);
    await leaveWhileBodyIsRead(
      g.app,
      401,
      JSON.stringify({ error: { message: 'not for this request', type: 'invalid_request_error', param: null, code: 'some_request_401' } }),
    );
    // Before the fix: ['disabled', 'available', 'available']: the lost body reads as "no body", which marks at once.
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('review (fixed): leaving while a "Request too large" 429 is read cools the key for the model (it reads as a plain rate limit)', async () => {
    const g = gateway(upstream.url);
    await leaveWhileBodyIsRead(
      g.app,
      429,
      JSON.stringify({
        error: {
          message: `Request too large for gpt-4o in organization ${ORG} on tokens per min (TPM): Limit 30000, Requested 36055.`,
          type: 'tokens',
          param: null,
          code: 'rate_limit_exceeded',
        },
      }),
    );
    // Before the fix: key-0 cools for gpt-4o for defaultCooldownMs.
    expect(statesFor(g.pool, 'gpt-4o')).toEqual(['available', 'available', 'available']);
  });
});

describe('one request, many upstream calls', () => {
  test('review (fixed): a request for a model that does not exist is sent once per key (a 20 MiB body is sent N times)', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = oneOrganization(openai.modelNotFound('no-such-model')); // a pool of one organization: the usual case
    const res = await request(g.app)
      .post(CHAT)
      .send({ model: 'no-such-model', messages: [{ role: 'user', content: 'x'.repeat(1_000_000) }] });
    expect(res.status).toBe(404);
    // Before the fix: 3 calls (N for an N-key pool, each with the whole body); the second identical answer says as much as the N-th.
    expect(upstream.seen.length).toBeLessThanOrEqual(2);
  });
});

describe('keyPassthrough forwards what belongs to other tenants', () => {
  test('review (fixed): by default any tenant lists and reads every stored object of the shared account (files, stored completions, batches)', async () => {
    const g = fullGateway();
    upstream.behaviour = ok({ object: 'list', data: [{ id: 'file-of-another-tenant' }] });
    const paths = [
      '/v1/files', // every tenant's uploads
      '/v1/files/file-of-another-tenant/content',
      '/v1/chat/completions?limit=100', // stored chat completions (store: true) of every tenant
      '/v1/batches',
      '/v1/vector_stores',
      '/v1/fine_tuning/jobs',
      '/v1/responses/resp_of-another-tenant', // stored responses (store defaults to true), by id
    ];
    const statuses: number[] = [];
    for (const path of paths) statuses.push((await request(g.app).get(path)).status);
    // Before the fix: all 200, each forwarded with a pool key; the README does not say that the default exposes them.
    expect(statuses).toEqual(paths.map(() => 403));
  });

  test('review (fixed): /v1/chat/completions/ (trailing slash) skips keyFailover: no maxBodyBytes, no per-model scope, no hold', async () => {
    const clock = new FakeClock();
    const app = express();
    const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
    app.locals['keyPool'] = pool;
    const failover = keyFailover({ target: upstream.url, logger: false, maxBodyBytes: 1024 });
    const passthrough = keyPassthrough({ target: upstream.url, logger: false });
    opened.push(failover, passthrough);
    app.use(failover, passthrough);
    upstream.behaviour = ok();
    const body = { ...chatBody, messages: [{ role: 'user', content: 'x'.repeat(10_000) }] };
    expect((await request(app).post(CHAT).send(body)).status).toBe(413);
    const slash = await request(app).post(`${CHAT}/`).send(body);
    // Before the fix: 200; the upstream got POST /v1/chat/completions/ with a 10 kB body, past the 1 kB limit.
    expect(upstream.seen.map((r) => r.url)).toEqual([]);
    expect(slash.status).not.toBe(200);
  });
});

describe('createFailoverFetch', () => {
  test('review (hardening, fixed): the failover fetch puts a pool key on a request to any URL it is handed; there is no origin option', async () => {
    const seen: (string | undefined)[] = [];
    const elsewhere = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.end('{}');
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    const { port } = elsewhere.address() as { port: number };
    const failoverFetch = createFailoverFetch(new KeyPool([...KEYS]));
    try {
      // An SDK client made with a baseURL from configuration a tenant can influence, or a tool that reuses this fetch.
      await expect(failoverFetch(`http://127.0.0.1:${port}/collect`, { method: 'POST', body: '{}' })).rejects.toMatchObject({
        code: 'ERR_EKF_TARGET_MISMATCH',
      });
    } finally {
      await failoverFetch.close();
      elsewhere.closeAllConnections();
      await new Promise((resolve) => elsewhere.close(resolve));
    }
    // Before the fix: the server at that URL received "Bearer sk-test-k0-...".
    expect(seen).toEqual([]);
  });
});
