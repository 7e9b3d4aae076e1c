import { CHAT, K0, K1, chatBody, gateway, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { openai } from './support/provider-answers.js';
import { gate, postStreaming } from './support/client.js';
import { byKey, type Behaviour } from './support/mock-upstream.js';

const upstream = useMockUpstream();

const streamBody = { ...chatBody, stream: true };
const event = (n: number) => `data: {"choices":[{"delta":{"content":"tok${n}"}}]}\n\n`;

/** An SSE upstream that sends the first event, then waits for `release` before the rest. */
function sse(release: Promise<void>, options: { dieAfterFirst?: boolean } = {}): Behaviour {
  return async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-upstream-stream': '1' });
    res.write(event(1));
    await release;
    if (options.dieAfterFirst) return void res.destroy();
    res.write(event(2));
    res.end('data: [DONE]\n\n');
  };
}

test('SSE chunks reach the client as the upstream sends them', async () => {
  const { app, pool } = gateway(upstream.url);
  const server = await listen(app);
  const firstSeen = gate('the first SSE chunk at the client, before the upstream sent the last');
  upstream.behaviour = sse(firstSeen.promise);

  const res = await postStreaming(server.url + CHAT, streamBody, (chunk, i) => {
    if (i === 0) {
      expect(chunk).toBe(event(1));
      firstSeen.open();
    }
  });
  await server.close();

  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toBe('text/event-stream');
  expect(res.headers['x-upstream-stream']).toBe('1');
  expect(res.ended).toBe('end');
  expect(res.chunks.join('')).toBe(event(1) + event(2) + 'data: [DONE]\n\n');
  expect(res.chunks.length).toBeGreaterThanOrEqual(2);
  expect(JSON.parse(upstream.seen[0]!.body.toString())).toEqual(streamBody);
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('a 429 before the stream starts fails over; the stream comes from k1', async () => {
  const { app, pool } = gateway(upstream.url);
  const server = await listen(app);
  const firstSeen = gate('first chunk after failover');
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '3' }) }, sse(firstSeen.promise));

  const res = await postStreaming(server.url + CHAT, streamBody, (_c, i) => i === 0 && firstSeen.open());
  await server.close();

  expect(res.status).toBe(200);
  expect(res.chunks.join('')).toBe(event(1) + event(2) + 'data: [DONE]\n\n');
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(statesFor(pool)).toEqual(['cooling', 'available', 'available']);
});

test('an upstream that dies mid-stream ends the client stream with an error event, never a complete-looking end; no retry, no key marked', async () => {
  const { app, pool } = gateway(upstream.url);
  const server = await listen(app);
  const firstSeen = gate('first chunk before the upstream dies');
  upstream.behaviour = sse(firstSeen.promise, { dieAfterFirst: true });

  const res = await postStreaming(server.url + CHAT, streamBody, (_c, i) => i === 0 && firstSeen.open());
  await server.close();

  expect(res.status).toBe(200);
  expect(res.ended).toBe('end');
  expect(res.chunks.join('')).toBe(
    event(1) +
      '\n\ndata: {"error":{"message":"The upstream stream broke off before it was complete.","type":"upstream_error","param":null,"code":"stream_interrupted"}}\n\n',
  );
  expect(res.chunks.join('')).not.toContain('[DONE]');
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});
