import request from 'supertest';
import { KeyFailoverError, openaiCompatible } from '../lib/index.js';
import { K0, K1, K2, gateway, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { anthropic as anthropicAnswers } from './support/provider-answers.js';
import { gate, postStreaming } from './support/client.js';
import { byKey, ok, status } from './support/mock-upstream.js';

const upstream = useMockUpstream();

const messagesBody = { model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] };

describe('anthropic', () => {
  const anthropicGateway = (options = {}) => gateway(upstream.url, { provider: 'anthropic', ...options });

  test('POST /v1/messages: key in x-api-key, 429 and 401 fail over, version headers pass through', async () => {
    const { app, pool } = anthropicGateway();
    upstream.behaviour = byKey(
      { [K0]: anthropicAnswers.rateLimited({ 'retry-after': '9' }), [K1]: anthropicAnswers.invalidKey() },
      ok({ type: 'message' }),
    );

    const res = await request(app)
      .post('/v1/messages')
      .set('x-api-key', 'gateway-user-token')
      .set('authorization', 'Bearer gateway-user-token')
      .set('anthropic-version', '2023-06-01')
      .set('anthropic-beta', 'prompt-caching-2024-07-31')
      .send(messagesBody);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ type: 'message' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    for (const seen of upstream.seen) {
      expect(seen.url).toBe('/v1/messages');
      expect(seen.headers.authorization).toBeUndefined();
      expect(seen.headers['anthropic-version']).toBe('2023-06-01');
      expect(seen.headers['anthropic-beta']).toBe('prompt-caching-2024-07-31');
    }
    expect(statesFor(pool, 'claude-sonnet-4-5')).toEqual(['cooling', 'disabled', 'available']);
  });

  test('/v1/messages/count_tokens is intercepted; OpenAI routes are not', async () => {
    const { app } = anthropicGateway();
    app.use((_req, res) => void res.status(404).json({ fellThrough: true }));
    expect((await request(app).post('/v1/messages/count_tokens').send(messagesBody)).status).toBe(200);
    expect((await request(app).post('/v1/chat/completions').send({})).body).toEqual({ fellThrough: true });
    expect(upstream.seen.map((r) => r.url)).toEqual(['/v1/messages/count_tokens']);
  });

  test('errors the middleware writes use the Anthropic envelope', async () => {
    const { app } = anthropicGateway();
    upstream.behaviour = status(429, { 'retry-after': '4' });

    const res = await request(app).post('/v1/messages').send(messagesBody);

    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('4');
    expect(res.body).toEqual({
      type: 'error',
      error: { type: 'rate_limit_error', message: 'All configured keys are rate-limited; retry after the time in the Retry-After header.' },
    });
  });

  test('529 overloaded is relayed by default, and fails over when configured', async () => {
    const overloaded = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } };
    upstream.behaviour = byKey({ [K0]: status(529, {}, overloaded) }, ok({ type: 'message' }));

    const relayed = await request(anthropicGateway().app).post('/v1/messages').send(messagesBody);
    expect(relayed.status).toBe(529);
    expect(relayed.body).toEqual(overloaded);
    expect(upstream.keysSeen()).toEqual([K0]);

    const failedOver = await request(anthropicGateway({ failover: { 529: 'skip' } }).app)
      .post('/v1/messages')
      .send(messagesBody);
    expect(failedOver.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K0, K1]);
  });

  test('SSE with event: lines is relayed unchanged, as it arrives', async () => {
    const { app } = anthropicGateway();
    const server = await listen(app);
    const first = gate('first Anthropic event at the client');
    const events = [
      'event: message_start\ndata: {"type":"message_start"}\n\n',
      'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n',
      'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ];
    upstream.behaviour = byKey({ [K0]: status(429) }, async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(events[0]);
      await first.promise;
      res.write(events[1]);
      res.end(events[2]);
    });

    const res = await postStreaming(server.url + '/v1/messages', { ...messagesBody, stream: true }, (_c, i) => i === 0 && first.open());
    await server.close();

    expect(res.status).toBe(200);
    expect(res.chunks.join('')).toBe(events.join(''));
    expect(upstream.keysSeen()).toEqual([K0, K1]);
  });

  test('byok: true takes the client key from x-api-key, one attempt, pool untouched', async () => {
    const { app, pool } = anthropicGateway({ byok: true });
    upstream.behaviour = status(429, { 'retry-after': '30' });
    const clientKey = 'sk-ant-client-0000000000000000zz';

    const res = await request(app).post('/v1/messages').set('x-api-key', clientKey).send(messagesBody);

    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('30');
    expect(upstream.keysSeen()).toEqual([clientKey]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });
});

describe('OpenAI-compatible hosts', () => {
  test('Azure OpenAI: api-key header, api-version query, target path kept', async () => {
    const azure = openaiCompatible({ name: 'azure', authHeader: 'api-key', query: { 'api-version': '2024-10-21' } });
    const { app } = gateway(`${upstream.url}/openai`, { provider: azure });
    upstream.behaviour = byKey({ [K0]: status(429) }, ok());

    const res = await request(app)
      .post('/v1/chat/completions?api-version=1999-01-01&x=1')
      .set('authorization', 'Bearer gateway-user-token')
      .send({});

    expect(res.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    for (const seen of upstream.seen) {
      expect(seen.url).toBe('/openai/v1/chat/completions?api-version=2024-10-21&x=1');
      expect(seen.headers['api-key']).toBe(seen.key);
      expect(seen.headers.authorization).toBeUndefined();
    }
  });

  test('a bearer host (OpenRouter, Groq): base path and custom routes', async () => {
    const groq = openaiCompatible({ name: 'groq', routes: ['/v1/chat/completions', '/v1/audio/transcriptions'] });
    const { app } = gateway(`${upstream.url}/openai`, { provider: groq });

    await request(app).post('/v1/audio/transcriptions').send({});

    expect(upstream.seen[0]!.url).toBe('/openai/v1/audio/transcriptions');
    expect(upstream.seen[0]!.headers.authorization).toBe(`Bearer ${K0}`);
  });

  test('byok: true with a bearer host reads the client key from Authorization', async () => {
    const { app, pool } = gateway(upstream.url, { byok: true });
    await request(app).post('/v1/chat/completions').set('authorization', 'Bearer sk-client-key-000000000000xx').send({});
    expect(upstream.keysSeen()).toEqual(['sk-client-key-000000000000xx']);
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });

  test.each([
    [{ authHeader: 'bad header' }, /option "authHeader" must be a valid header name/],
    [{ query: { 'api-version': 1 } }, /option "query" must be an object of string values/],
    [{ routes: ['v1/chat'] }, /option "routes" must be a non-empty array of paths starting with "\/"/],
    [{ header: 'x' }, /unknown option "header"/],
  ])('openaiCompatible(%p) throws naming the option', (options, message) => {
    expect(() => openaiCompatible(options as never)).toThrow(KeyFailoverError);
    expect(() => openaiCompatible(options as never)).toThrow(message);
  });

  test("provider must be 'openai', 'anthropic' or a provider object", () => {
    expect(() => gateway(upstream.url, { provider: 'gemini' as never })).toThrow(
      /option "provider" must be 'openai', 'anthropic' or a provider from openaiCompatible\(\{\.\.\.\}\), got "gemini"/,
    );
  });
});
