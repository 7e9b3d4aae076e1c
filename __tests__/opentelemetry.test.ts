import { context, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { Express, NextFunction, Request, Response } from 'express';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import request from 'supertest';
import { createFailoverFetch, KeyFailoverError, KeyPool, keyPassthrough, openaiCompatible } from '../lib/index.js';
import { poolTracing, type PoolTracing, type PoolTracingOptions } from '../lib/opentelemetry.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, useMockUpstream, type Gateway } from './support/gateway.js';
import { gate, postStreaming } from './support/client.js';
import { byKey, json, ok, status } from './support/mock-upstream.js';
import { anthropic as anthropicAnswers, openai } from './support/provider-answers.js';

const upstream = useMockUpstream();
const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const tracer = tracerProvider.getTracer('test');
const contextManager = new AsyncLocalStorageContextManager();
const tracings: PoolTracing[] = [];

beforeAll(() => context.setGlobalContextManager(contextManager.enable()));
// Every span of every test is scanned for key values (whole, and without their "sk-").
afterEach(() => {
  const everything = exported();
  for (const key of KEYS) {
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(key.slice(3));
  }
  exporter.reset();
});
afterAll(async () => {
  for (const tracing of tracings) tracing.stop();
  context.disable();
  await tracerProvider.shutdown();
});

/** A gateway with the tracing middleware mounted in front of keyFailover, as the README shows. */
function tracedGateway(
  options: Parameters<typeof gateway>[1] = {},
  tracingOptions: PoolTracingOptions = {},
  before?: (app: Express) => void,
): Gateway & { tracing: PoolTracing } {
  let tracing!: PoolTracing;
  const gw = gateway(upstream.url, options, {}, (app) => {
    before?.(app);
    tracing = poolTracing(app.locals['keyPool'] as KeyPool, { tracer, ...tracingOptions });
    tracings.push(tracing);
    app.use(tracing);
  });
  return { ...gw, tracing };
}

const spans = (): ReadableSpan[] => exporter.getFinishedSpans();
const named = (kind: SpanKind) => spans().filter((s) => s.kind === kind);
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const ms = ([seconds, nanos]: [number, number]) => seconds * 1000 + nanos / 1e6;

/** Everything a trace exporter would send: names, attributes, events, status messages. */
function exported(): string {
  return JSON.stringify(
    spans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status, resource: s.resource.attributes })),
  );
}

/** The request span ends on the response's close, a moment after the client has its answer. */
async function settled(count: number): Promise<void> {
  for (let i = 0; i < 100 && spans().length < count; i++) await new Promise((resolve) => setTimeout(resolve, 5));
}

test('one span per request, one child span per attempt, with key id and hint, status, cause, outcome and model', async () => {
  const { app } = tracedGateway();
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }), [K1]: openai.invalidKey() }, ok());

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(200);
  await settled(4);

  const [requestSpan] = named(SpanKind.INTERNAL);
  const attempts = named(SpanKind.CLIENT);
  expect(requestSpan!.name).toBe('ekf chat');
  expect(requestSpan!.attributes).toEqual({
    'gen_ai.provider.name': 'openai',
    'gen_ai.operation.name': 'chat',
    'openai.api.type': 'chat_completions',
    'http.request.method': 'POST',
    'gen_ai.request.model': 'gpt-4o-mini',
    'ekf.attempts': 3,
    'http.response.status_code': 200,
    'ekf.key.id': 'key-2',
    'ekf.key.hint': K2.slice(-4),
  });
  expect(requestSpan!.status.code).toBe(SpanStatusCode.UNSET);
  expect(requestSpan!.events.map((e) => [e.name, e.attributes])).toEqual([
    [
      'ekf.failover',
      {
        'ekf.key.id': 'key-0',
        'ekf.key.hint': K0.slice(-4),
        'http.response.status_code': 429,
        'ekf.action': 'cooldown',
        'ekf.cause': 'rate_limited',
      },
    ],
    [
      'ekf.failover',
      {
        'ekf.key.id': 'key-1',
        'ekf.key.hint': K1.slice(-4),
        'http.response.status_code': 401,
        'ekf.action': 'disable',
        'ekf.cause': 'invalid_key',
      },
    ],
  ]);

  expect(attempts.map((s) => s.name)).toEqual(['chat gpt-4o-mini', 'chat gpt-4o-mini', 'chat gpt-4o-mini']);
  expect(attempts.map((s) => parentOf(s))).toEqual([1, 2, 3].map(() => requestSpan!.spanContext().spanId));
  expect(attempts.map((s) => s.spanContext().traceId)).toEqual([1, 2, 3].map(() => requestSpan!.spanContext().traceId));
  const common = {
    'gen_ai.provider.name': 'openai',
    'gen_ai.operation.name': 'chat',
    'openai.api.type': 'chat_completions',
    'gen_ai.request.model': 'gpt-4o-mini',
    'ekf.in_stream': false,
  };
  expect(attempts.map((s) => s.attributes)).toEqual([
    {
      ...common,
      'ekf.key.id': 'key-0',
      'ekf.key.hint': K0.slice(-4),
      'ekf.attempt': 1,
      'ekf.attempt.outcome': 'cooldown',
      'http.response.status_code': 429,
      'ekf.cause': 'rate_limited',
      'error.type': 'rate_limited',
    },
    {
      ...common,
      'ekf.key.id': 'key-1',
      'ekf.key.hint': K1.slice(-4),
      'ekf.attempt': 2,
      'http.request.resend_count': 1,
      'ekf.attempt.outcome': 'disable',
      'http.response.status_code': 401,
      'ekf.cause': 'invalid_key',
      'error.type': 'invalid_key',
    },
    {
      ...common,
      'ekf.key.id': 'key-2',
      'ekf.key.hint': K2.slice(-4),
      'ekf.attempt': 3,
      'http.request.resend_count': 2,
      'ekf.attempt.outcome': 'relayed',
      'http.response.status_code': 200,
    },
  ]);
  expect(attempts.map((s) => s.status.code)).toEqual([SpanStatusCode.ERROR, SpanStatusCode.ERROR, SpanStatusCode.UNSET]);
  // Each attempt lies inside the request span, one after the other (the SDK anchors each span on Date.now(): 1 ms of slack).
  for (const [i, attempt] of attempts.entries()) {
    expect(ms(attempt.startTime)).toBeGreaterThanOrEqual(ms(requestSpan!.startTime) - 1);
    expect(ms(attempt.endTime)).toBeLessThanOrEqual(ms(requestSpan!.endTime) + 1);
    expect(ms(attempt.endTime)).toBeGreaterThanOrEqual(ms(attempt.startTime));
    if (i > 0) expect(ms(attempt.startTime)).toBeGreaterThanOrEqual(ms(attempts[i - 1]!.endTime) - 1);
  }
});

test('the request span is a child of the span active when it starts (the HTTP server span of an instrumented app)', async () => {
  let outerSpanId: string | undefined;
  const { app } = tracedGateway({}, {}, (app) =>
    app.use((_req: Request, res: Response, next: NextFunction) => {
      const outer = tracer.startSpan('POST /v1/chat/completions', { kind: SpanKind.SERVER });
      outerSpanId = outer.spanContext().spanId;
      res.once('close', () => outer.end());
      context.with(trace.setSpan(context.active(), outer), next);
    }),
  );

  await request(app).post(CHAT).send(chatBody);
  await settled(3);

  const [requestSpan] = named(SpanKind.INTERNAL);
  expect(parentOf(requestSpan!)).toBe(outerSpanId);
  expect(named(SpanKind.CLIENT).map(parentOf)).toEqual([requestSpan!.spanContext().spanId]);
});

test('an exhausted pool: the 429 is on the request span with an exhausted event, and no attempt at all the second time', async () => {
  const { app } = tracedGateway();
  upstream.behaviour = openai.rateLimited('gpt-4o-mini', { 'retry-after': '20' });

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(429);
  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(429);
  await settled(5);

  const [first, second] = named(SpanKind.INTERNAL);
  expect(named(SpanKind.CLIENT)).toHaveLength(3);
  for (const span of [first!, second!]) {
    expect(span.attributes['ekf.exhausted.reason']).toBe('rate_limited');
    expect(span.attributes['http.response.status_code']).toBe(429);
    expect(span.events.at(-1)).toMatchObject({ name: 'ekf.exhausted', attributes: { 'ekf.exhausted.reason': 'rate_limited' } });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
  }
  expect(first!.attributes['ekf.attempts']).toBe(3);
  expect(second!.attributes['ekf.attempts']).toBe(0);
  expect(second!.events.at(-1)!.attributes!['ekf.retry_after_ms']).toBe(20_000);
});

test('an unreachable upstream: the attempt says so, the request span is an error with the 502', async () => {
  const { app } = tracedGateway();
  upstream.behaviour = (_req, res) => {
    res.socket!.destroy();
  };

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(502);
  await settled(2);

  const [attempt] = named(SpanKind.CLIENT);
  expect(attempt!.attributes).toMatchObject({ 'ekf.attempt.outcome': 'unreachable', 'error.type': 'unreachable' });
  expect(attempt!.attributes['http.response.status_code']).toBeUndefined();
  const [requestSpan] = named(SpanKind.INTERNAL);
  expect(requestSpan!.attributes).toMatchObject({ 'http.response.status_code': 502, 'error.type': '502' });
  expect(requestSpan!.status.code).toBe(SpanStatusCode.ERROR);
});

test('a streamed answer: the request span lasts until the stream ends; a client that leaves mid-stream makes it an error', async () => {
  const { app } = tracedGateway();
  const server = await listen(app);
  const release = gate('the test lets the stream end');
  upstream.behaviour = async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n');
    await release.promise;
    res.end('data: [DONE]\n\n');
  };

  const streamed = await postStreaming(server.url + CHAT, { ...chatBody, stream: true }, () => release.open());
  expect(streamed.ended).toBe('end');
  await settled(2);
  const [whole] = named(SpanKind.INTERNAL);
  const [attempt] = named(SpanKind.CLIENT);
  expect(ms(whole!.endTime)).toBeGreaterThanOrEqual(ms(attempt!.endTime));
  expect(whole!.status.code).toBe(SpanStatusCode.UNSET);

  exporter.reset();
  upstream.behaviour = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'); // and never ends
  };
  await new Promise<void>((resolve) => {
    const req = http.request(server.url + CHAT, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.end(JSON.stringify({ ...chatBody, stream: true }));
  });
  await settled(2);
  await server.close();
  const [left] = named(SpanKind.INTERNAL);
  expect(left!.status.code).toBe(SpanStatusCode.ERROR);
  expect(left!.attributes['error.type']).toBe('client_aborted');
});

test('keyPassthrough behind the same tracing: a GET that fails over gets attempt spans too', async () => {
  const { app } = tracedGateway();
  app.use(keyPassthrough({ target: upstream.url, logger: false }));
  upstream.behaviour = byKey({ [K0]: openai.rateLimited() }, (_req, res) => json(res, 200, { object: 'list', data: [] }));

  expect((await request(app).get('/v1/models')).status).toBe(200);
  await settled(3);

  const [requestSpan] = named(SpanKind.INTERNAL);
  expect(requestSpan!.name).toBe('ekf GET');
  expect(requestSpan!.attributes['gen_ai.operation.name']).toBeUndefined();
  expect(named(SpanKind.CLIENT).map((s) => [s.name, s.attributes['ekf.key.id'], s.attributes['ekf.attempt.outcome']])).toEqual([
    ['ekf attempt', 'key-0', 'cooldown'],
    ['ekf attempt', 'key-1', 'relayed'],
  ]);
});

test('anthropic: gen_ai.provider.name and the messages route', async () => {
  const { app } = tracedGateway({ provider: 'anthropic' }, { provider: 'anthropic' });
  upstream.behaviour = byKey({ [K0]: anthropicAnswers.overloaded() }, ok({ type: 'message' }));

  expect((await request(app).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [] })).status).toBe(529);
  await settled(2);

  const [attempt] = named(SpanKind.CLIENT);
  expect(attempt!.name).toBe('chat claude-sonnet-4-5');
  expect(attempt!.attributes).toMatchObject({
    'gen_ai.provider.name': 'anthropic',
    'ekf.cause': 'overloaded',
    'ekf.attempt.outcome': 'relayed',
    'error.type': '529',
  });
  expect(attempt!.attributes['openai.api.type']).toBeUndefined();
});

test("Azure (the preset): gen_ai.provider.name is azure.ai.openai, the model is the route's deployment", async () => {
  const azure = openaiCompatible({ preset: 'azure' });
  const { app } = tracedGateway({ provider: azure }, { provider: azure });
  upstream.behaviour = byKey({ [K0]: status(429) }, ok());

  await request(app).post('/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21').send(chatBody);
  await settled(3);

  expect(named(SpanKind.CLIENT).map((s) => [s.name, s.attributes['gen_ai.provider.name'], s.attributes['gen_ai.request.model']])).toEqual([
    ['chat gpt-4o-prod', 'azure.ai.openai', 'gpt-4o-prod'],
    ['chat gpt-4o-prod', 'azure.ai.openai', 'gpt-4o-prod'],
  ]);
});

test('the model attribute is bounded: 128 characters at most, whole code points', async () => {
  const { app } = tracedGateway();
  const model = '🦙'.repeat(300);
  upstream.behaviour = byKey({ [K0]: openai.rateLimited(model) }, ok());

  await request(app)
    .post(CHAT)
    .send({ ...chatBody, model });
  await settled(3);

  for (const span of spans()) {
    const value = span.attributes['gen_ai.request.model'] as string;
    expect(Array.from(value).length).toBeLessThanOrEqual(128);
    expect(value).toMatch(/^(🦙)+$/u);
    expect(span.name.length).toBeLessThanOrEqual(128 * 2 + 5);
  }
});

test('createFailoverFetch inside a traced handler: its attempts are children of the span active there', async () => {
  const pool = new KeyPool([K0, K1]);
  const tracing = poolTracing(pool, { tracer });
  tracings.push(tracing);
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  upstream.behaviour = byKey({ [K0]: status(429) }, ok());

  const parent = tracer.startSpan('agent step');
  await context.with(trace.setSpan(context.active(), parent), () =>
    fetch(upstream.url + CHAT, { method: 'POST', body: JSON.stringify(chatBody) }).then((r) => r.text()),
  );
  parent.end();
  await fetch.close();

  const attempts = named(SpanKind.CLIENT);
  expect(attempts.map((s) => [s.name, s.attributes['ekf.key.id'], parentOf(s)])).toEqual([
    ['ekf attempt', 'key-0', parent.spanContext().spanId],
    ['ekf attempt', 'key-1', parent.spanContext().spanId],
  ]);
});

test('an attempt whose failure was found inside a 200 stream says so (ekf.in_stream), on its span and its failover event', () => {
  const pool = new KeyPool([K0]);
  const tracing = poolTracing(pool, { tracer });
  const res = Object.assign(new EventEmitter(), { headersSent: true, statusCode: 200, writableFinished: true });
  tracing({ method: 'POST', path: '/v1/chat/completions' } as Request, res as unknown as Response, () => {
    // What the stream hold emits for an error frame before the first content (the field is optional until it does).
    pool.emit('attempt', {
      id: 'key-0',
      hint: '',
      attempt: 1,
      outcome: 'cooldown',
      status: 200,
      cause: 'rate_limited',
      durationMs: 3,
      inStream: true,
    } as never);
    pool.emit('failover', { id: 'key-0', hint: '', status: 200, action: 'cooldown', cause: 'rate_limited', inStream: true } as never);
  });
  res.emit('close');
  tracing.stop();

  const [attempt] = named(SpanKind.CLIENT);
  expect(attempt!.attributes).toMatchObject({ 'ekf.in_stream': true, 'ekf.cause': 'rate_limited', 'error.type': 'rate_limited' });
  const [requestSpan] = named(SpanKind.INTERNAL);
  expect(requestSpan!.events[0]!.attributes).toMatchObject({ 'ekf.in_stream': true });
  expect(parentOf(attempt!)).toBe(requestSpan!.spanContext().spanId);
});

test('stop() stops listening to the pool', () => {
  const pool = new KeyPool([K0]);
  const tracing = poolTracing(pool, { tracer });
  expect(pool.listenerCount('attempt')).toBe(1);
  tracing.stop();
  expect(['attempt', 'failover', 'exhausted'].map((e) => pool.listenerCount(e))).toEqual([0, 0, 0]);
});

test.each([
  [() => poolTracing({} as never), /poolTracing\(\): the first argument must be a KeyPool, got object/],
  [() => poolTracing(new KeyPool([K0]), 'x' as never), /options must be an object, got a string/],
  [() => poolTracing(new KeyPool([K0]), { tracer: {} as never }), /option "tracer" must be an OpenTelemetry Tracer/],
  [() => poolTracing(new KeyPool([K0]), { provider: 'gemini' as never }), /option "provider" must be 'openai', 'anthropic' or a provider/],
  [() => poolTracing(new KeyPool([K0]), { exporter: 1 } as never), /unknown option "exporter"/],
])('misconfiguration throws naming the option (%#)', (make, message) => {
  expect(make).toThrow(KeyFailoverError);
  expect(make).toThrow(message);
});

test('the main entry never loads @opentelemetry/api', () => {
  jest.isolateModules(() => {
    jest.doMock('@opentelemetry/api', () => {
      throw new Error('@opentelemetry/api was loaded by express-key-failover (the main entry)');
    });
    expect(() => require('../lib/index.js')).not.toThrow();
    expect(() => require('../lib/opentelemetry.js')).toThrow(/@opentelemetry\/api was loaded/); // the mock does catch a load
  });
});
