import OpenAI from 'openai';
import { createFailoverFetch, KeyFailoverError, KeyPool } from '../lib/index.js';
import { FakeClock, K0, K1, K2, statesFor, useFetchUpstream } from './support/gateway.js';
import { openai as openaiAnswers } from './support/provider-answers.js';
import { byKey, json, status, type Behaviour } from './support/mock-upstream.js';

const { upstream, track } = useFetchUpstream();

function client(keys: string[] = [K0, K1, K2]): { openai: OpenAI; pool: KeyPool; clock: FakeClock } {
  const clock = new FakeClock();
  const pool = new KeyPool({ keys, now: clock.now, cooldownJitter: 0 });
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  track(fetch);
  // maxRetries stays at the SDK default on purpose: our answers must not make it retry what the pool already did.
  const openai = new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch });
  return { openai, pool, clock };
}

const completion = (content: string | null, toolCalls?: unknown[]) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'gpt-4o-mini',
  choices: [{ index: 0, finish_reason: toolCalls ? 'tool_calls' : 'stop', message: { role: 'assistant', content, tool_calls: toolCalls } }],
});
const answer =
  (body: unknown): Behaviour =>
  (_req, res) =>
    json(res, 200, body);

test('a chat completion through the official client fails over on 429', async () => {
  const { openai, pool } = client();
  upstream.behaviour = byKey({ [K0]: openaiAnswers.rateLimited('gpt-4o-mini', { 'retry-after': '8' }) }, answer(completion('hello')));

  const result = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });

  expect(result.choices[0]!.message.content).toBe('hello');
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(upstream.seen.map((r) => r.url)).toEqual(['/v1/chat/completions', '/v1/chat/completions']);
  expect(upstream.seen.every((r) => !JSON.stringify(r.headers).includes('unused'))).toBe(true);
  expect(JSON.parse(upstream.seen[1]!.body.toString())).toEqual({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
  expect(statesFor(pool)).toEqual(['cooling', 'available', 'available']);
});

test('a streamed completion arrives as chunks, after a 401 failover', async () => {
  const { openai, pool } = client();
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  upstream.behaviour = byKey({ [K0]: status(401) }, async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const chunk = (content: string) =>
      `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content } }] })}\n\n`;
    res.write(chunk('Hel'));
    await released; // the client must see the first chunk before the upstream sends the rest
    res.write(chunk('lo'));
    res.end('data: [DONE]\n\n');
  });

  const stream = await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: true });
  const parts: string[] = [];
  for await (const event of stream) {
    parts.push(event.choices[0]!.delta.content ?? '');
    if (parts.length === 1) release();
  }

  expect(parts).toEqual(['Hel', 'lo']);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
});

test('a responses call', async () => {
  const { openai } = client();
  upstream.behaviour = byKey({ [K0]: status(403) }, answer({ id: 'resp_1', object: 'response', output: [], output_text: 'ok' }));

  const response = await openai.responses.create({ model: 'gpt-4o-mini', input: 'hi' });

  expect(response.id).toBe('resp_1');
  expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([
    ['/v1/responses', K0],
    ['/v1/responses', K1],
  ]);
});

describe('an agentic loop: each upstream call walks the pool afresh', () => {
  const toolCall = { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } };
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];
  const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];

  async function loop(openai: OpenAI): Promise<string | null> {
    const first = await openai.chat.completions.create({ model: 'm', messages, tools });
    const call = first.choices[0]!.message.tool_calls![0]!;
    const followUp: OpenAI.ChatCompletionMessageParam[] = [
      ...messages,
      first.choices[0]!.message,
      { role: 'tool', tool_call_id: call.id, content: '18°C, sunny' },
    ];
    const second = await openai.chat.completions.create({ model: 'm', messages: followUp, tools });
    return second.choices[0]!.message.content;
  }

  test('call 1 on k0 with a tool call; call 2 hits 429 on k0 and succeeds on k1', async () => {
    const { openai, pool } = client([K0, K1]);
    let calls = 0;
    upstream.behaviour = (req, res) => {
      calls++;
      if (calls === 1) return json(res, 200, completion(null, [toolCall]));
      if (req.key === K0) return json(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '15' });
      return json(res, 200, completion('It is 18°C and sunny in Paris.'));
    };

    expect(await loop(openai)).toBe('It is 18°C and sunny in Paris.');
    expect(upstream.keysSeen()).toEqual([K0, K0, K1]);
    const continuation = JSON.parse(upstream.seen[2]!.body.toString());
    expect(continuation.messages.at(-1)).toEqual({ role: 'tool', tool_call_id: 'call_1', content: '18°C, sunny' });
    expect(upstream.seen[1]!.body.equals(upstream.seen[2]!.body)).toBe(true);
    expect(statesFor(pool, 'm')).toEqual(['cooling', 'available']);
  });

  test('when k1 fails too, the caller gets a 429 error carrying Retry-After, and the SDK does not retry', async () => {
    const { openai } = client([K0, K1]);
    let calls = 0;
    upstream.behaviour = (req, res) => {
      calls++;
      if (calls === 1) return json(res, 200, completion(null, [toolCall]));
      return json(res, 429, { error: { message: 'slow down' } }, { 'retry-after': req.key === K0 ? '15' : '7' });
    };

    const error = await loop(openai).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    const rateLimit = error as InstanceType<typeof OpenAI.RateLimitError>;
    expect(rateLimit.status).toBe(429);
    expect(rateLimit.headers?.get('retry-after')).toBe('7');
    expect(rateLimit.message).toMatch(/All configured keys are rate-limited/);
    expect(upstream.keysSeen()).toEqual([K0, K0, K1]);
    for (const key of [K0, K1]) expect(JSON.stringify(rateLimit)).not.toContain(key);
  });
});

test('an unreachable upstream rejects like fetch (the SDK reports a connection error), no key marked', async () => {
  const pool = new KeyPool([K0, K1]);
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  track(fetch);
  const openai = new OpenAI({ apiKey: 'unused', baseURL: 'http://127.0.0.1:9/v1', fetch, maxRetries: 0 });
  await expect(openai.models.list()).rejects.toBeInstanceOf(OpenAI.APIConnectionError);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available']);
});

test('bad arguments are refused clearly', () => {
  expect(() => createFailoverFetch([K0] as never)).toThrow(/createFailoverFetch\(\): the first argument must be a KeyPool, got an array/);
  expect(() => createFailoverFetch(new KeyPool([K0]), { target: 'x' } as never)).toThrow(KeyFailoverError);
});
