import express from 'express';
import http from 'node:http';
import { inspect } from 'node:util';
import request from 'supertest';
import { Registry } from 'prom-client';
import { createFailoverFetch, keyFailover, keyPassthrough, KeyPool, poolStatus } from '../lib/index.js';
import { poolMetrics } from '../lib/metrics.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { byKey, ok, status } from './support/mock-upstream.js';

/**
 * Drives every answer the middleware writes itself, and every other output,
 * and scans all of it for key values (and for the key with its Bearer prefix
 * stripped to the part after "sk-", in case of partial echoes).
 */
const upstream = useMockUpstream();
const captured: string[] = [];
const warnings: string[] = [];
const logger = { warn: (m: string) => warnings.push(m) };

function capture(res: request.Response): void {
  captured.push(`${res.status} ${JSON.stringify(res.headers)} ${res.text}`);
}

test('no key value appears in anything the middleware writes, logs or reports', async () => {
  const consoleSpy = jest.spyOn(console, 'warn').mockImplementation((...args) => void captured.push(args.join(' ')));
  try {
    // Pool exhausted by rate limits, then by auth failures.
    let g = gateway(upstream.url, { logger });
    upstream.behaviour = status(429, { 'retry-after': '5' });
    capture(await request(g.app).post(CHAT).send(chatBody));
    captured.push(JSON.stringify(g.pool.snapshot()), inspect(g.pool, { depth: 10, showHidden: true }));

    g = gateway(upstream.url, { logger });
    upstream.behaviour = status(401);
    capture(await request(g.app).post(CHAT).send(chatBody));
    captured.push(JSON.stringify(g.pool.snapshot()));

    // Timeout, unreachable, too large, bad BYOK value.
    g = gateway(upstream.url, { logger, timeoutMs: 50 });
    upstream.behaviour = () => new Promise(() => {});
    capture(await request(g.app).post(CHAT).send(chatBody));
    g = gateway('http://127.0.0.1:9', { logger });
    capture(await request(g.app).post(CHAT).send(chatBody));
    g = gateway(upstream.url, { logger, maxBodyBytes: 10 });
    capture(await request(g.app).post(CHAT).send(chatBody));
    g = gateway(upstream.url, { logger, byok: () => `${K2}\n` });
    capture(await request(g.app).post(CHAT).send(chatBody));

    // Failover then success, and the held 403.
    g = gateway(upstream.url, { logger });
    upstream.behaviour = byKey({ [K0]: status(429), [K1]: status(401) }, ok());
    capture(await request(g.app).post(CHAT).send(chatBody));
    upstream.behaviour = status(403);
    capture(await request(g.app).post(CHAT).send(chatBody));

    // Misconfigurations: no pool (logged through console, the default logger), consumed body.
    const app = express();
    const noPool = keyFailover({ target: upstream.url });
    app.use(noPool);
    capture(await request(app).post(CHAT).send(chatBody));
    await noPool.close();

    // Errors thrown at the caller.
    for (const bad of [
      [K0, K0],
      [K0, `${K1} `],
      [
        { id: 'x', key: K0 },
        { id: 'x', key: K1 },
      ],
    ]) {
      try {
        new KeyPool(bad as never);
      } catch (error) {
        captured.push(String(error), inspect(error));
      }
    }
  } finally {
    consoleSpy.mockRestore();
  }

  captured.push(...warnings);
  expect(captured.length).toBeGreaterThan(15);
  expect(warnings.length + captured.filter((c) => c.includes('ERR_EKF_NO_POOL')).length).toBeGreaterThan(0);
  const everything = captured.join('\n');
  for (const key of KEYS) {
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(key.slice(3)); // without its "sk-" prefix
  }
});

test('nor in the answers of the passthrough guards, the SDK-facing headers, createFailoverFetch failures and the new option errors', async () => {
  const out: string[] = [];
  const add = (res: request.Response): void => void out.push(`${res.status} ${JSON.stringify(res.headers)} ${res.text}`);

  // The worst upstream: it echoes every request, headers and all (Apache's TRACE). Nothing refused may reach it.
  upstream.behaviour = (req, res) => {
    res.writeHead(200, { 'content-type': 'message/http' });
    res.end(`${req.method} ${req.url}\r\n${JSON.stringify(req.headers)}`);
  };
  const app = express();
  const passthrough = keyPassthrough({
    target: upstream.url,
    pool: new KeyPool([...KEYS]),
    logger,
    deny: ['/v1/organization', (path) => path === '/v1/odd' && (1 as never)],
  });
  app.use(passthrough);
  const errors: string[] = [];
  app.use(((error, _req, _res, next) => {
    errors.push(String(error), inspect(error));
    next(error); // Express's own handler answers 500
  }) as express.ErrorRequestHandler);
  const server = await listen(app);
  const port = Number(new URL(server.url).port);
  const raw = (method: string, path: string): Promise<string> =>
    new Promise((resolve, reject) => {
      http
        .request({ host: '127.0.0.1', port, method, path, headers: { 'x-request-id': 'scan-1' } }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(`${res.statusCode} ${JSON.stringify(res.headers)} ${body}`));
        })
        .on('error', reject)
        .end();
    });
  try {
    for (const [method, path] of [
      ['TRACE', '/v1/models'],
      ['PROPFIND', '/v1/files'],
      ['GET', '/v1/organization/admin_api_keys'],
      ['GET', '/v1/..\\..\\admin'],
      ['GET', '/v1/files%2f..%2fadmin'],
      ['GET', '/v1/odd'],
    ]) {
      out.push(await raw(method!, path!));
    }
  } finally {
    await server.close();
    await passthrough.close();
  }
  expect(out.map((o) => o.slice(0, 3))).toEqual(['405', '405', '403', '400', '400', '500']);
  expect(upstream.seen).toHaveLength(0);
  out.push(...errors);

  // The pool's 429 and 502, with their request ids and retry hints.
  let g = gateway(upstream.url, { logger });
  for (const id of ['key-0', 'key-1', 'key-2']) g.pool.markRateLimited(id, 1_234);
  add(await request(g.app).post(CHAT).send(chatBody));
  for (const id of ['key-0', 'key-1', 'key-2']) g.pool.markDisabled(id);
  add(await request(g.app).post(CHAT).send(chatBody));
  g = gateway(upstream.url, { logger, provider: 'anthropic' });
  for (const id of ['key-0', 'key-1', 'key-2']) g.pool.markDisabled(id);
  add(await request(g.app).post('/v1/messages').send(chatBody));

  // createFailoverFetch: an invalid status, a corrupt compressed body, the pool's own answers.
  const pool = new KeyPool([...KEYS]);
  const failoverFetch = createFailoverFetch(pool, { target: upstream.url });
  upstream.behaviour = (_req, res) => {
    res.writeHead(600, { 'content-type': 'application/json' });
    res.write('{');
  };
  const invalid = await failoverFetch(`${upstream.url}/v1/models`).catch((e: unknown) => e);
  out.push(String(invalid), inspect(invalid, { depth: 5 }));
  upstream.behaviour = (_req, res) => {
    res.writeHead(200, { 'content-encoding': 'gzip' });
    res.end('not gzip at all');
  };
  const corrupt = await (await failoverFetch(`${upstream.url}/v1/models`)).text().catch((e: unknown) => e);
  out.push(String(corrupt), inspect(corrupt, { depth: 5 }));
  for (const id of ['key-0', 'key-1', 'key-2']) pool.markRateLimited(id, 5_000);
  const limited = await failoverFetch(`${upstream.url}/v1/models`);
  out.push(`${limited.status} ${JSON.stringify([...limited.headers])} ${await limited.text()}`);
  await failoverFetch.close();

  // Option errors, some with a key value where a path or a duration should be.
  for (const create of [
    () => keyPassthrough({ deny: [K0] }),
    () => keyPassthrough({ allow: K1 }),
    () => new KeyPool({ keys: [...KEYS], maxCooldownMs: Number.MAX_SAFE_INTEGER }),
    () => new KeyPool({ keys: [...KEYS], authCooldownMs: 1e15 }),
    () => keyFailover({ relayAccountHeaders: K2 as never }),
  ]) {
    try {
      create();
      out.push('did not throw');
    } catch (error) {
      out.push(String(error), inspect(error));
    }
  }

  expect(out.filter((o) => o === 'did not throw')).toEqual([]);
  const everything = out.join('\n');
  expect(everything).toContain('x-should-retry');
  for (const key of KEYS) {
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(key.slice(3));
  }
});

test('nor in what avoiding the 429 lets out: groups, skips, probes, objects, budgets, their events, metrics, page and warnings', async () => {
  const out: string[] = [];
  const events: string[] = [];
  const warned: string[] = [];
  const g = gateway(upstream.url, { logger, maxAttempts: 2 }, { logger: { warn: (m) => warned.push(m) }, strategy: 'round-robin' }, (app) =>
    app.get('/status', poolStatus()),
  );
  const registry = new Registry();
  const metrics = poolMetrics(g.pool, { register: registry });
  for (const name of [
    'rateLimited',
    'disabled',
    'enabled',
    'failover',
    'exhausted',
    'attempt',
    'grouped',
    'depleted',
    'probe',
    'affinity',
  ] as const) {
    g.pool.on(name, (e: unknown) => void events.push(`${name} ${JSON.stringify(e)}`));
  }
  // A hostile upstream that echoes the request's key into the organization header and into the created object's id.
  upstream.behaviour = (req, res) => {
    const body = JSON.stringify({ id: `resp_${req.key}`, object: 'response' });
    res.writeHead(200, {
      'content-type': 'application/json',
      'openai-organization': `org-${req.key}`,
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '2s',
    });
    res.end(body);
  };
  // (Its answers themselves are relayed as they are, echo included: they are the upstream's, not the gateway's; not scanned.)
  for (let i = 0; i < 3; i++) await request(g.app).post('/v1/responses').send({ model: 'gpt-4o', input: 'x' });
  expect(g.pool.snapshot().map((k) => k.group)).toEqual([undefined, undefined, undefined]); // nothing learned from an echo
  expect(events.filter((e) => e.startsWith('affinity'))).toEqual([]); // nor any object id holding a key
  // The same organization for every key (one warning), a 429 for the group, a probe, a remembered object, a spent budget.
  upstream.behaviour = (req, res) =>
    req.url === '/v1/responses' ? openaiOkFor(req.key!, res, { id: 'resp_0123456789abcdef', object: 'response' }) : openaiRateLimited(res);
  out.push(JSON.stringify((await request(g.app).post('/v1/responses').send({ model: 'gpt-4o', input: 'x' })).body));
  g.clock.advance(2_000);
  for (let i = 0; i < 3; i++)
    out.push(JSON.stringify((await request(g.app).post('/v1/responses').send({ model: 'gpt-4o', input: 'x' })).body));
  const limited = await request(g.app).post(CHAT).send(chatBody);
  out.push(`${limited.status} ${JSON.stringify(limited.headers)} ${limited.text}`);
  g.clock.advance(60_000);
  out.push(
    (await request(g.app).post('/v1/responses').send({ model: 'gpt-4o', input: 'y', previous_response_id: 'resp_0123456789abcdef' })).text,
  );
  out.push((await request(g.app).get('/status')).text, (await request(g.app).get('/status?format=html')).text, await registry.metrics());
  out.push(JSON.stringify(g.pool.snapshot()), inspect(g.pool, { depth: 10, showHidden: true }));
  for (const create of [
    () => new KeyPool([{ key: K0, group: K1 + ' ' }]),
    () => keyFailover({ maxAttempts: K2 as never }),
    () => new KeyPool({ keys: [...KEYS], cooldownJitter: K0 as never }),
  ]) {
    try {
      create();
      out.push('did not throw');
    } catch (error) {
      out.push(String(error), inspect(error));
    }
  }
  metrics.stop();
  expect(events.some((e) => e.startsWith('grouped'))).toBe(true);
  expect(events.some((e) => e.startsWith('depleted'))).toBe(true);
  expect(events.some((e) => e.startsWith('affinity'))).toBe(true);
  expect(warned).toHaveLength(1);
  expect(out.filter((o) => o === 'did not throw')).toEqual([]);
  const everything = [...out, ...events, ...warned, ...warnings].join('\n');
  for (const key of KEYS) {
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(key.slice(3));
  }
});

function openaiOkFor(_key: string, res: http.ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'openai-organization': 'org-OneForAll000000001' });
  res.end(text);
}

function openaiRateLimited(res: http.ServerResponse): void {
  const text = JSON.stringify({
    error: { message: 'Rate limit reached for gpt-4o-mini', type: 'requests', param: null, code: 'rate_limit_exceeded' },
  });
  res.writeHead(429, { 'content-type': 'application/json', 'openai-organization': 'org-OneForAll000000001', 'retry-after': '1' });
  res.end(text);
}
