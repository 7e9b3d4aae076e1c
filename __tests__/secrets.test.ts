import express from 'express';
import { inspect } from 'node:util';
import request from 'supertest';
import { keyFailover, KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, useMockUpstream } from './support/gateway.js';
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
