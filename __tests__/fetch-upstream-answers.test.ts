/**
 * createFailoverFetch and what an upstream may answer beyond the ordinary:
 * a status no Response can carry, and a compressed body although the
 * request asked for none.
 */
import type { ServerResponse } from 'node:http';
import zlib from 'node:zlib';
import OpenAI from 'openai';
import { createFailoverFetch, KeyPool, type FailoverFetch } from '../lib/index.js';
import { K0, K1, K2, statesFor, useFetchUpstream } from './support/gateway.js';
import { gate } from './support/client.js';
import { byKey, status, type Behaviour } from './support/mock-upstream.js';

const { upstream, track } = useFetchUpstream();

function setup(options: Parameters<typeof createFailoverFetch>[1] = {}): { fetch: FailoverFetch; openai: OpenAI; pool: KeyPool } {
  const pool = new KeyPool([K0, K1, K2]);
  const fetch = createFailoverFetch(pool, { target: upstream.url, ...options });
  track(fetch);
  return { fetch, pool, openai: new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch }) };
}

const completion = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'gpt-4o-mini',
  choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'Hello from a compressed answer.' } }],
};
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

describe('a compressed answer although none was asked for', () => {
  const body = Buffer.from(JSON.stringify(completion));
  const compressed =
    (encoding: string, bytes: Buffer): Behaviour =>
    (req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-encoding': encoding,
        'content-length': String(bytes.length),
        'x-request-id': 'req_1',
      });
      res.end(bytes);
      expect(req.headers['accept-encoding']).toBeUndefined();
    };

  test.each([
    ['gzip', zlib.gzipSync(body)],
    ['x-gzip', zlib.gzipSync(body)],
    ['deflate', zlib.deflateSync(body)],
    ['deflate', zlib.deflateRawSync(body)], // raw deflate, as some servers send it
    ['br', zlib.brotliCompressSync(body)],
    ['GZIP', zlib.gzipSync(body)],
    ['br, gzip', zlib.gzipSync(zlib.brotliCompressSync(body))],
  ])('%s: the SDK gets the decoded JSON; Content-Encoding and Content-Length are gone', async (encoding, bytes) => {
    const { fetch, openai } = setup();
    upstream.behaviour = compressed(encoding, bytes);

    const reply = await openai.chat.completions.create(ask);
    expect(reply.choices[0]!.message.content).toBe('Hello from a compressed answer.');
    expect(upstream.seen[0]!.headers['accept-encoding']).toBeUndefined(); // it compressed although asked for nothing

    const raw = await fetch(`${upstream.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify(ask) });
    expect([raw.headers.get('content-encoding'), raw.headers.get('content-length'), raw.headers.get('x-request-id')]).toEqual([
      null,
      null,
      'req_1',
    ]);
    expect(await raw.json()).toEqual(completion);
  });

  test('an unknown coding is left as it is, header included, as fetch does', async () => {
    const { fetch } = setup();
    upstream.behaviour = compressed('compress', Buffer.from('LZW bytes'));
    const res = await fetch(`${upstream.url}/v1/models`);
    expect(res.headers.get('content-encoding')).toBe('compress');
    expect(await res.text()).toBe('LZW bytes');
  });

  test('a gzip SSE stream is decoded as it arrives: the first event reaches the SDK before the upstream sends the next', async () => {
    const { openai } = setup();
    const firstSeen = gate('the SDK to yield the first event while the upstream holds the rest');
    upstream.behaviour = async (_req, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      const gzip = zlib.createGzip();
      gzip.pipe(res);
      const event = (content: string) =>
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content } }] })}\n\n`;
      gzip.write(event('Hel'));
      gzip.flush();
      await firstSeen.promise; // a buffering decoder would deadlock here
      gzip.write(event('lo'));
      gzip.end('data: [DONE]\n\n');
    };

    const stream = await openai.chat.completions.create({ ...ask, stream: true });
    const parts: string[] = [];
    for await (const chunk of stream) {
      parts.push(chunk.choices[0]!.delta.content ?? '');
      if (parts.length === 1) firstSeen.open();
    }
    expect(parts).toEqual(['Hel', 'lo']);
  });

  test('a skipped answer held while other keys were tried is decoded too', async () => {
    const { openai } = setup();
    const refusal = zlib.gzipSync(
      JSON.stringify({
        error: { message: 'Project does not have access to model', type: 'invalid_request_error', code: 'model_not_found' },
      }),
    );
    upstream.behaviour = (_req, res) => {
      res.writeHead(403, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(refusal.length) });
      res.end(refusal);
    };

    const error = await openai.chat.completions.create(ask).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as InstanceType<typeof OpenAI.PermissionDeniedError>).message).toMatch(/Project does not have access to model/);
    expect(upstream.keysSeen()).toEqual([K0, K1]); // the second identical answer about the request ends the walk
  });

  test('a corrupt body errors the stream, it does not end as if complete, and the connection is freed', async () => {
    const { fetch } = setup();
    upstream.behaviour = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.write(zlib.gzipSync(body).subarray(0, 10));
      res.write(Buffer.from('definitely not deflate data'));
    };
    const res = await fetch(`${upstream.url}/v1/models`);
    await expect(res.text()).rejects.toThrow();
    for (const deadline = Date.now() + 2_000; upstream.aborted.length === 0 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 10));
    expect(upstream.aborted).toHaveLength(1);
  });

  test('a 429 compressed answer still fails over', async () => {
    const { openai, pool } = setup();
    upstream.behaviour = byKey({ [K0]: status(429, { 'retry-after': '7' }) }, compressed('gzip', zlib.gzipSync(body)));
    const reply = await openai.chat.completions.create(ask);
    expect(reply.id).toBe('chatcmpl-1');
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(statesFor(pool)).toEqual(['cooling', 'available', 'available']);
  });
});
