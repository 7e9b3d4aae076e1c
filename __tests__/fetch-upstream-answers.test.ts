/**
 * createFailoverFetch and what an upstream may answer beyond the ordinary:
 * a status no Response can carry.
 */
import OpenAI from 'openai';
import { createFailoverFetch, KeyPool, type FailoverFetch } from '../lib/index.js';
import { K0, K1, K2 } from './support/gateway.js';
import { MockUpstream, type Behaviour } from './support/mock-upstream.js';

let upstream: MockUpstream;
const fetches: FailoverFetch[] = [];
beforeAll(async () => {
  upstream = await MockUpstream.start();
});
afterEach(() => upstream.reset());
afterAll(async () => {
  await Promise.all(fetches.map((f) => f.close()));
  await upstream.close();
});

function setup(options: Parameters<typeof createFailoverFetch>[1] = {}): { fetch: FailoverFetch; openai: OpenAI; pool: KeyPool } {
  const pool = new KeyPool([K0, K1, K2]);
  const fetch = createFailoverFetch(pool, options);
  fetches.push(fetch);
  return { fetch, pool, openai: new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch }) };
}

const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }] };

describe('a status outside 200-599', () => {
  const hanging: Behaviour = (_req, res) => {
    res.writeHead(600, 'Weird', { 'content-type': 'application/json', 'content-length': '1000' });
    res.write('{"partial":'); // and never the rest
  };

  test('rejects as a failed fetch (TypeError), at once, and frees the upstream connection', async () => {
    const { fetch, pool } = setup({ timeoutMs: 60_000 });
    upstream.behaviour = hanging;
    const started = Date.now();

    const error = await fetch(`${upstream.url}/v1/models`).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toBe('fetch failed: the upstream answered with HTTP status 600, which a Response cannot carry');
    expect(Date.now() - started).toBeLessThan(2_000);
    for (const deadline = Date.now() + 2_000; upstream.aborted.length === 0 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 10));
    expect(upstream.aborted.map((r) => r.url)).toEqual(['/v1/models']); // the gateway hung up; it did not wait for timeoutMs
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('the openai SDK reports a connection error', async () => {
    const { openai } = setup({ timeoutMs: 60_000 });
    upstream.behaviour = hanging;
    const pending = openai.chat.completions.create(ask, { maxRetries: 0 });
    await expect(pending).rejects.toBeInstanceOf(OpenAI.APIConnectionError);
  });
});
