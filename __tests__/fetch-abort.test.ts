/**
 * An abort from the SDK reaches the upstream through createFailoverFetch
 * even after a garbage collection: the attempt listens to the caller's own
 * signal, not to the one of a `new Request()` that nothing keeps alive (undici
 * links the two through a WeakRef). Without that, the upstream generation runs
 * on, and is billed, to its end.
 *
 * `gc` comes from V8 itself (the flag set at run time, then a fresh context
 * that has it), so this file needs no special jest or node flags.
 */
import Anthropic from '@anthropic-ai/sdk';
import type { ServerResponse } from 'node:http';
import { PerformanceObserver, constants as perf } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import OpenAI from 'openai';
import { createFailoverFetch, KeyPool } from '../lib/index.js';
import { K0, K1, statesFor, useFetchUpstream } from './support/gateway.js';
import { byKey, status, type SeenRequest } from './support/mock-upstream.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const { upstream, track } = useFetchUpstream();

const CHUNKS = 100;
const EVERY_MS = 20;
/** What the current generation has written; each request has its own count (a lingering one cannot add to the next). */
let current = { written: 0 };

/** An SSE generation of `chunks` chunks, one every EVERY_MS: 2 s (by default) unless the gateway hangs up. */
function generation(format: 'openai' | 'anthropic', chunks = CHUNKS) {
  return (_req: SeenRequest, res: ServerResponse): Promise<void> => {
    const state = { written: 0 };
    current = state;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': 'req_upstream', 'request-id': 'req_upstream' });
    if (format === 'anthropic') {
      res.write(
        'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}\n\n' +
          'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
      );
    }
    return new Promise((resolve) => {
      const timer = setInterval(() => {
        const n = ++state.written;
        res.write(
          format === 'openai'
            ? `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: `w${n} ` } }] })}\n\n`
            : `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `w${n} ` } })}\n\n`,
        );
        if (n === chunks) {
          clearInterval(timer);
          res.end(format === 'openai' ? 'data: [DONE]\n\n' : 'event: message_stop\ndata: {"type":"message_stop"}\n\n');
          resolve();
        }
      }, EVERY_MS);
      res.on('close', () => {
        clearInterval(timer);
        resolve();
      });
    });
  };
}

/** Waits until the upstream saw its connection cut, or the generation would have ended on its own. */
async function upstreamOutcome(chunks = CHUNKS): Promise<{ aborted: number; written: number }> {
  const deadline = Date.now() + chunks * EVERY_MS + 500;
  while (upstream.aborted.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return { aborted: upstream.aborted.length, written: current.written };
}

/** Ordinary allocation (no forced GC) until V8 has run two major collections on its own, or 10 s. */
async function allocateUntilMajorGc(): Promise<number> {
  let majors = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as { detail?: { kind?: number } }).detail?.kind === perf.NODE_PERFORMANCE_GC_MAJOR) majors++;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  let garbage: number[][] = [];
  for (const deadline = Date.now() + 10_000; majors < 2 && Date.now() < deadline;) {
    garbage.push(new Array(200_000).fill(garbage.length)); // 1.6 MB each, up to ~50 MB alive: old space fills
    if (garbage.length > 30) garbage = [];
    await new Promise((r) => setImmediate(r));
  }
  observer.disconnect();
  return majors;
}

function openaiClient(): { openai: OpenAI; pool: KeyPool } {
  const pool = new KeyPool([K0, K1]);
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  track(fetch);
  return { openai: new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch }), pool };
}

const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'Write a long story.' }], stream: true as const };

test('openai SDK: a stream aborted after a forced GC cuts the upstream connection', async () => {
  const { openai, pool } = openaiClient();
  upstream.behaviour = byKey({ [K0]: status(429, { 'retry-after': '30' }) }, generation('openai'));

  const stream = await openai.chat.completions.create(ask);
  gc();
  await new Promise((r) => setTimeout(r, 2 * EVERY_MS));
  gc();
  stream.controller.abort();

  const outcome = await upstreamOutcome();
  expect(outcome.aborted).toBe(1);
  expect(outcome.written).toBeLessThan(CHUNKS / 2);
  expect(upstream.keysSeen()).toEqual([K0, K1]); // the abort hit the attempt that answered, after a failover
  expect(upstream.aborted[0]!.key).toBe(K1);
  expect(statesFor(pool)).toEqual(['cooling', 'available']); // an abort marks no key
});

// (Not iterating: once its iterator runs, openai 7 also cancels the body itself on abort, which would hide the fault.)
test('openai SDK: the same after ordinary allocation (V8 collecting on its own, no forced GC)', async () => {
  const { openai } = openaiClient();
  // Long enough to outlast the allocation (up to 10 s on a busy machine): the abort must be what ends it.
  const chunks = 800;
  upstream.behaviour = generation('openai', chunks);

  const stream = await openai.chat.completions.create(ask);
  expect(await allocateUntilMajorGc()).toBeGreaterThanOrEqual(1);
  stream.controller.abort();

  const outcome = await upstreamOutcome(chunks);
  expect(outcome.aborted).toBe(1);
  expect(outcome.written).toBeLessThan(chunks);
}, 40_000);

test('@anthropic-ai/sdk: after abort() the SDK yields no more chunks, and the upstream connection is cut', async () => {
  const pool = new KeyPool([K0, K1]);
  const fetch = createFailoverFetch(pool, { provider: 'anthropic', target: upstream.url });
  track(fetch);
  const anthropic = new Anthropic({ apiKey: 'unused', baseURL: upstream.url, fetch });
  upstream.behaviour = generation('anthropic');

  const stream = await anthropic.messages.create({
    model: 'claude-sonnet-4-5',
    max_tokens: 1024,
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  });
  gc();
  const texts: string[] = [];
  for await (const event of stream) {
    if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') texts.push(event.delta.text);
    if (texts.length === 3) {
      gc();
      stream.controller.abort();
    }
  }

  expect(texts).toEqual(['w1 ', 'w2 ', 'w3 ']);
  const outcome = await upstreamOutcome();
  expect(outcome.aborted).toBe(1);
  expect(outcome.written).toBeLessThan(CHUNKS / 2);
  expect(upstream.seen[0]!.headers['x-api-key']).toBe(K0);
});

test('a Request input with its own signal: the abort reaches the upstream after a GC too', async () => {
  const pool = new KeyPool([K0]);
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  track(fetch);
  upstream.behaviour = generation('openai');
  const controller = new AbortController();

  const response = await fetch(
    new Request(`${upstream.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify(ask), signal: controller.signal }),
  );
  const reader = response.body!.getReader();
  await reader.read();
  gc();
  await new Promise((r) => setTimeout(r, 2 * EVERY_MS));
  gc();
  controller.abort();

  // A chunk or two may already be queued; after them the body errors, it does not end as if complete.
  const ending = await (async () => {
    for (;;) if ((await reader.read()).done) return 'ended';
  })().catch((error: unknown) => error);
  expect(ending).toMatchObject({ name: 'AbortError' });
  const outcome = await upstreamOutcome();
  expect(outcome.aborted).toBe(1);
  expect(outcome.written).toBeLessThan(CHUNKS / 2);
});
