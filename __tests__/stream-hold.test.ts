/**
 * Errors inside a 200 stream fail over: the opening of an event stream is
 * held until it says something, an error frame before any content is judged
 * like the HTTP answer it stands for, and the client sees only the answering
 * key's stream, byte for byte. After the commit, a broken upstream ends the
 * client's stream with a provider-shaped error event (the SDKs raise on it).
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import http, { type IncomingHttpHeaders } from 'node:http';
import { Registry } from 'prom-client';
import { KeyPool, createFailoverFetch, type KeyPoolEvents } from '../lib/index.js';
import { poolMetrics } from '../lib/metrics.js';
import { CHAT, FakeClock, K0, K1, KEYS, chatBody, gateway, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { gate } from './support/client.js';
import { byKey, type Behaviour } from './support/mock-upstream.js';
import {
  chatFrames,
  errorFrames,
  framesOf,
  openingOf,
  streamOf,
  wireOf,
  writeFrames,
  type WriteStyle,
} from './support/provider-streams.js';

const upstream = useMockUpstream();

const MESSAGES = '/v1/messages';
const RESPONSES = '/v1/responses';
const messagesBody = { model: 'claude-sonnet-4-5', max_tokens: 256, stream: true, messages: [{ role: 'user', content: 'hi' }] };
const responsesBody = { model: 'gpt-4o-mini', input: 'hi', stream: true };
const chatStreamBody = { ...chatBody, stream: true };

interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** When the first body byte arrived (performance.now()). */
  firstByteAt: number | undefined;
  ended: 'end' | 'aborted';
}

/** A POST over a real socket whose answer is read as it arrives, as raw text. */
function rawPost(url: string, body: unknown, onFirstByte?: () => void): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      let firstByteAt: number | undefined;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (firstByteAt === undefined) {
          firstByteAt = performance.now();
          onFirstByte?.();
        }
        text += chunk;
      });
      const done = (ended: Raw['ended']) => () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, firstByteAt, ended });
      res.on('end', done('end'));
      res.on('aborted', done('aborted'));
      res.on('error', done('aborted'));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** A stream whose opening is `opening`, then `error`, then nothing: the stream is over. */
function failingStream(opening: readonly string[], error: string, style: WriteStyle = 'frame-per-write'): Behaviour {
  return streamOf([...opening, error], style, { 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '12s' });
}

async function serve<T>(app: Parameters<typeof listen>[0], run: (url: string) => Promise<T>): Promise<T> {
  const server = await listen(app);
  try {
    return await run(server.url);
  } finally {
    await server.close();
  }
}

describe('an error frame before any content fails over; the client sees the answering key only, byte for byte', () => {
  test.each<WriteStyle>(['frame-per-write', 'all-at-once', 'awkward', 'crlf'])(
    'Anthropic: message_start, ping, then overloaded_error on k0 ({ overloaded: "skip" }): k1 streams (%s)',
    async (style) => {
      const g = gateway(upstream.url, { provider: 'anthropic', failover: { overloaded: 'skip' } });
      const failovers: unknown[] = [];
      g.pool.on('failover', (e) => failovers.push(e));
      const healthy = framesOf('messages');
      upstream.behaviour = byKey(
        { [K0]: failingStream(openingOf('messages'), errorFrames.anthropicOverloaded, style) },
        streamOf(healthy, style),
      );

      const res = await serve(g.app, (url) => rawPost(url + MESSAGES, messagesBody));

      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      expect(res.text).toBe(wireOf(healthy, style));
      expect(res.ended).toBe('end');
      expect(upstream.keysSeen()).toEqual([K0, K1]);
      expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
      expect(failovers).toEqual([{ id: 'key-0', hint: K0.slice(-4), status: 529, action: 'skip', cause: 'overloaded', inStream: true }]);
    },
  );

  test('Anthropic: an overloaded_error in the opening, by default, is answered as the 529 it stands for (the SDK retries that)', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    upstream.behaviour = failingStream(openingOf('messages'), errorFrames.anthropicOverloaded);
    const res = await serve(g.app, (url) => rawPost(url + MESSAGES, messagesBody));
    expect(res.status).toBe(529);
    expect(res.headers['content-type']).toBe('application/json');
    expect(JSON.parse(res.text)).toEqual({
      type: 'error',
      error: { type: 'overloaded_error', message: 'Overloaded' },
      request_id: 'req_011CSHoEeqs5C35K2UUqR7Fy',
    });
    expect(res.headers['x-request-id']).toBe('req_stream');
    expect(upstream.keysSeen()).toEqual([K0]);
  });

  test('Anthropic: a rate_limit_error in the opening cools k0 for that model; k1 streams', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    const healthy = framesOf('messages');
    upstream.behaviour = byKey({ [K0]: failingStream(openingOf('messages'), errorFrames.anthropicRateLimited) }, streamOf(healthy));
    const res = await serve(g.app, (url) => rawPost(url + MESSAGES, messagesBody));
    expect(res.text).toBe(healthy.join(''));
    expect(statesFor(g.pool, 'claude-sonnet-4-5')).toEqual(['cooling', 'available', 'available']);
  });

  test.each<WriteStyle>(['frame-per-write', 'awkward', 'crlf'])(
    'OpenAI Responses: response.created, then an insufficient_quota error event: k0 out of quota, k1 streams (%s)',
    async (style) => {
      const g = gateway(upstream.url);
      const healthy = framesOf('responses');
      upstream.behaviour = byKey(
        { [K0]: failingStream(openingOf('responses').slice(0, 1), errorFrames.responsesQuota, style) },
        streamOf(healthy, style),
      );
      const res = await serve(g.app, (url) => rawPost(url + RESPONSES, responsesBody));
      expect(res.text).toBe(wireOf(healthy, style));
      expect(upstream.keysSeen()).toEqual([K0, K1]);
      expect(g.pool.snapshot()[0]).toMatchObject({ state: 'disabled', disabledReason: 'quota' });
    },
  );

  test('OpenAI chat: a first frame data: {"error": ...} with rate_limit_exceeded cools k0 (from the 200 headers); k1 streams', async () => {
    const g = gateway(upstream.url);
    const healthy = chatFrames();
    upstream.behaviour = byKey({ [K0]: failingStream([], errorFrames.chatRateLimited) }, streamOf(healthy));
    const res = await serve(g.app, (url) => rawPost(url + CHAT, chatStreamBody));
    expect(res.text).toBe(healthy.join(''));
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 12_000 }]);
  });

  test('OpenAI chat: a role-only chunk, then a server_error frame (no cause): answered as a 500, nothing marked', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = failingStream(chatFrames().slice(0, 1), errorFrames.chatServerError);
    const res = await serve(g.app, (url) => rawPost(url + CHAT, chatStreamBody));
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text)).toEqual(JSON.parse(errorFrames.chatServerError.slice('data: '.length)));
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('the official openai SDK streams a Responses answer through the gateway after an in-stream failover, event for event', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey(
      { [K0]: failingStream(openingOf('responses').slice(0, 1), errorFrames.responsesQuota) },
      streamOf(framesOf('responses')),
    );
    const types = await serve(g.app, async (url) => {
      const client = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${url}/v1` });
      const stream = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true });
      const seen: string[] = [];
      for await (const event of stream) seen.push(event.type);
      return seen;
    });
    expect(types).toEqual(framesOf('responses').map((f) => /^event: (\S+)/.exec(f)![1]));
    expect(upstream.keysSeen()).toEqual([K0, K1]);
  });
});

describe('the hold is bounded and can be turned off', () => {
  test('a Responses stream whose first text is late reaches the client within streamHoldMs, with the opening byte for byte', async () => {
    const g = gateway(upstream.url, { streamHoldMs: 150 });
    const release = gate('the test lets the first text go', 10_000);
    const opening = openingOf('responses');
    let openedAt = 0;
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
      openedAt = performance.now();
      await writeFrames(res, opening, 'frame-per-write');
      await release.promise; // a reasoning model thinking, for as long as the test says
      await writeFrames(res, framesOf('responses').slice(opening.length), 'all-at-once');
      res.end();
    };
    const res = await serve(g.app, (url) => rawPost(url + RESPONSES, responsesBody, () => release.open()));
    const wait = res.firstByteAt! - openedAt;
    console.log(`first byte ${wait.toFixed(1)} ms after the stream opened (streamHoldMs 150)`);
    expect(wait).toBeGreaterThanOrEqual(140);
    expect(wait).toBeLessThan(150 + 100);
    expect(res.text).toBe(framesOf('responses').join(''));
  });

  test('an opening past 64 KiB (keep-alive comments) commits without content, and goes through whole', async () => {
    const g = gateway(upstream.url);
    const pings = Array.from({ length: 700 }, (_, i) => `: keep-alive ${'x'.repeat(100)} ${i}\n\n`);
    const frames = [...pings, ...chatFrames()];
    upstream.behaviour = streamOf(frames, 'all-at-once');
    const res = await serve(g.app, (url) => rawPost(url + CHAT, chatStreamBody));
    expect(res.text).toBe(frames.join(''));
  });

  test('streamHoldMs: 0 turns the hold off: the error frame reaches the client inside its 200 stream, nothing marked', async () => {
    const g = gateway(upstream.url, { streamHoldMs: 0 });
    upstream.behaviour = failingStream(openingOf('responses').slice(0, 1), errorFrames.responsesQuota);
    const res = await serve(g.app, (url) => rawPost(url + RESPONSES, responsesBody));
    expect(res.status).toBe(200);
    expect(res.text).toBe(openingOf('responses')[0]! + errorFrames.responsesQuota);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('a client that leaves while the opening is held aborts the upstream; no key is marked', async () => {
    const opened = gate('the opening at the upstream');
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      await writeFrames(res, openingOf('messages'), 'frame-per-write');
      opened.open();
      await new Promise((resolve) => res.on('close', resolve));
    };
    const gw = gateway(upstream.url, { provider: 'anthropic', streamHoldMs: 10_000 });
    await serve(gw.app, async (url) => {
      const req = http.request(url + MESSAGES, { method: 'POST', headers: { 'content-type': 'application/json' } });
      req.on('error', () => {});
      req.end(JSON.stringify(messagesBody));
      await opened.promise;
      req.destroy();
      for (const deadline = Date.now() + 3000; upstream.aborted.length === 0 && Date.now() < deadline;)
        await new Promise((r) => setTimeout(r, 10));
    });
    expect(upstream.aborted).toHaveLength(1);
    expect(gw.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('a stream that ends while held (no content at all) is relayed as it was', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    const frames = [...openingOf('messages'), 'event: message_stop\ndata: {"type":"message_stop"}\n\n'];
    upstream.behaviour = streamOf(frames);
    const res = await serve(g.app, (url) => rawPost(url + MESSAGES, messagesBody));
    expect(res.text).toBe(frames.join(''));
    expect(res.ended).toBe('end');
  });
});

describe('after the commit, a broken upstream ends the stream with an error event the SDKs raise on', () => {
  /** A stream that sends its opening and first content, then breaks: reset, or silence. */
  const breaking =
    (frames: readonly string[], how: 'reset' | 'silence'): Behaviour =>
    async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      await writeFrames(res, frames, 'frame-per-write');
      if (how === 'reset') res.destroy();
      else await new Promise((resolve) => res.on('close', resolve));
    };

  test('openai SDK, chat: a reset after the first content raises; the client never sees [DONE]', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = breaking(chatFrames().slice(0, 2), 'reset');
    await serve(g.app, async (url) => {
      const client = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${url}/v1`, maxRetries: 0 });
      const stream = await client.chat.completions.create({ ...chatBody, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
      const got: string[] = [];
      await expect(
        (async () => {
          for await (const chunk of stream) got.push(chunk.choices[0]?.delta.content ?? '');
        })(),
      ).rejects.toThrow(/The upstream stream broke off before it was complete/);
      expect(got).toEqual(['', 'Hel']);
    });
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('openai SDK, Responses: silence past timeoutMs between chunks raises with the error event', async () => {
    const g = gateway(upstream.url, { timeoutMs: 300 });
    const frames = framesOf('responses');
    const upToText = frames.findIndex((f) => f.includes('response.output_text.delta')) + 1;
    upstream.behaviour = breaking(frames.slice(0, upToText), 'silence');
    const raw = await serve(g.app, (url) => rawPost(url + RESPONSES, responsesBody));
    expect(raw.text).toBe(
      frames.slice(0, upToText).join('') +
        '\n\nevent: error\ndata: {"type":"error","code":"stream_interrupted","message":"The upstream stream broke off before it was complete.","param":null}\n\n',
    );
    upstream.reset();
    upstream.behaviour = breaking(frames.slice(0, upToText), 'silence');
    await serve(g.app, async (url) => {
      const client = new OpenAI({ apiKey: 'gateway-user-token', baseURL: `${url}/v1`, maxRetries: 0 });
      const stream = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true });
      await expect(
        (async () => {
          for await (const event of stream) void event;
        })(),
      ).rejects.toThrow(/broke off/);
    });
  });

  test('@anthropic-ai/sdk: a reset after the first text delta raises; the client never sees message_stop', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    const frames = framesOf('messages');
    const upToText = frames.findIndex((f) => f.startsWith('event: content_block_delta')) + 1;
    upstream.behaviour = breaking(frames.slice(0, upToText), 'reset');
    await serve(g.app, async (url) => {
      const client = new Anthropic({ apiKey: 'gateway-user-token', baseURL: url, maxRetries: 0 });
      const stream = await client.messages.create({ ...messagesBody, stream: true } as Anthropic.MessageCreateParamsStreaming);
      const types: string[] = [];
      await expect(
        (async () => {
          for await (const event of stream) types.push(event.type);
        })(),
      ).rejects.toThrow(/broke off/);
      expect(types).toEqual(['message_start', 'content_block_start', 'content_block_delta']);
    });
  });

  test('a healthy stream is unchanged byte for byte, and the SDKs read every event', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' });
    upstream.behaviour = streamOf(framesOf('messages'), 'awkward');
    const raw = await serve(g.app, (url) => rawPost(url + MESSAGES, messagesBody));
    expect(raw.text).toBe(framesOf('messages').join(''));
    const text = await serve(g.app, async (url) => {
      const client = new Anthropic({ apiKey: 'gateway-user-token', baseURL: url });
      const message = await client.messages.stream(messagesBody as Anthropic.MessageStreamParams).finalMessage();
      return message.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
    });
    expect(text).toBe('Hello! This is a mock answer from the upstream.');
  });
});

describe('createFailoverFetch holds too', () => {
  test('the openai SDK with createFailoverFetch: an insufficient_quota error event on k0 fails over to k1, event for event', async () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
    const fetch = createFailoverFetch(pool, { target: upstream.url });
    try {
      upstream.behaviour = byKey(
        { [K0]: failingStream(openingOf('responses').slice(0, 2), errorFrames.responsesQuota) },
        streamOf(framesOf('responses')),
      );
      const client = new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch });
      const stream = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true });
      const types: string[] = [];
      for await (const event of stream) types.push(event.type);
      expect(types).toEqual(framesOf('responses').map((f) => /^event: (\S+)/.exec(f)![1]));
      expect(upstream.keysSeen()).toEqual([K0, K1]);
      expect(pool.snapshot()[0]).toMatchObject({ state: 'disabled', disabledReason: 'quota' });
    } finally {
      await fetch.close();
    }
  });
});

test('events and metrics tell an in-stream failover from a status one', async () => {
  const registry = new Registry();
  const g = gateway(upstream.url);
  poolMetrics(g.pool, { register: registry });
  const attempts: KeyPoolEvents['attempt'][0][] = [];
  g.pool.on('attempt', (e) => attempts.push(e));
  upstream.behaviour = byKey({ [K0]: failingStream([], errorFrames.chatRateLimited) }, streamOf(chatFrames()));
  await serve(g.app, (url) => rawPost(url + CHAT, chatStreamBody));
  expect(attempts.map(({ id, status, outcome, cause, inStream }) => ({ id, status, outcome, cause, inStream }))).toEqual([
    { id: 'key-0', status: 429, outcome: 'cooldown', cause: 'rate_limited', inStream: true },
    { id: 'key-1', status: 200, outcome: 'relayed', cause: undefined, inStream: undefined },
  ]);
  const text = await registry.metrics();
  expect(text).toContain(
    'ekf_failovers_total{pool="default",key_id="key-0",status="429",action="cooldown",cause="rate_limited",in_stream="true"} 1',
  );
  for (const key of KEYS) expect(text + JSON.stringify(attempts)).not.toContain(key);
});
