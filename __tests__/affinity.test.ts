/**
 * Stateful objects stay on their key: the key that created a response, a file,
 * a batch... (read from the `id` of the create call's answer, JSON or stream)
 * is the one a request naming that object goes to; while that key cools, the
 * client gets the pool's 429 with its Retry-After instead of another project's
 * 404. Bounded in count and time; unknown ids walk the pool as usual.
 */
import express, { type Express } from 'express';
import OpenAI from 'openai';
import type { ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import request from 'supertest';
import { createFailoverFetch, keyFailover, keyPassthrough, KeyPool, MemoryKeyStateStore } from '../lib/index.js';
import { objectRoute } from '../lib/walk/affinity.js';
import { CHAT, FakeClock, K0, K1, K2, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { json, type SeenRequest } from './support/mock-upstream.js';
import { openai, openaiOk } from './support/provider-answers.js';

const upstream = useMockUpstream();
const RESPONSES = '/v1/responses';

let made = 0;
/** The upstream: each key is its own project; objects made with one are 404 on the others, as OpenAI does. */
function projects() {
  const owner = new Map<string, string>();
  const notFound = (res: ServerResponse, id: string) =>
    json(res, 404, {
      error: {
        message: `Previous response with id '${id}' not found.`,
        type: 'invalid_request_error',
        param: 'previous_response_id',
        code: 'previous_response_not_found',
      },
    });
  upstream.behaviour = (req: SeenRequest, res: ServerResponse) => {
    const body = req.body.length > 0 ? (JSON.parse(req.body.toString()) as Record<string, unknown>) : {};
    const named =
      typeof body['previous_response_id'] === 'string' ? body['previous_response_id'] : /^\/v1\/\w+\/([\w-]+)/.exec(req.url)?.[1];
    if (named !== undefined && owner.get(named) !== req.key) return notFound(res, named);
    if (req.method === 'POST' && req.url === RESPONSES) {
      const id = `resp_${(++made).toString(16).padStart(24, '0')}`;
      owner.set(id, req.key!);
      if (body['stream'] === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(
          `event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"${id}","object":"response","status":"in_progress"}}\n\n`,
        );
        res.end(
          `event: response.completed\ndata: {"type":"response.completed","sequence_number":1,"response":{"id":"${id}","status":"completed"}}\n\n`,
        );
        return;
      }
      return openaiOk({ id, object: 'response', status: 'completed', output: [], by: req.key })(req, res);
    }
    return openaiOk({ id: named, by: req.key })(req, res);
  };
  return owner;
}

const create = (app: Express, extra: object = {}) =>
  request(app)
    .post(RESPONSES)
    .send({ model: 'gpt-4o', input: 'hi', ...extra });

test('previous_response_id goes to the key that created the response, also when another key comes first', async () => {
  const g = gateway(upstream.url, {}, { strategy: 'round-robin' });
  const events: string[] = [];
  g.pool.on('affinity', (e) => events.push(`${e.outcome} ${e.id} ${e.object}`));
  projects();
  await create(g.app); // key-0
  const second = await create(g.app); // key-1 (round-robin)
  expect(second.body.by).toBe(K1);
  upstream.seen.length = 0;
  const followUp = await create(g.app, { previous_response_id: second.body.id });
  expect(followUp.status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K1]); // round-robin would have sent it to key-2: a 404 from another project
  expect(events).toEqual(['learned key-0 response', 'learned key-1 response', 'routed key-1 response', 'learned key-1 response']);
});

test('a streamed create is read as it passes: the id in response.created is remembered, the stream relayed byte for byte', async () => {
  const g = gateway(upstream.url, {}, { strategy: 'round-robin' });
  projects();
  await create(g.app);
  const streamed = await create(g.app, { stream: true })
    .buffer(true)
    .parse((res, done) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => done(null, text));
    });
  const id = /"id":"(resp_\w+)"/.exec(streamed.body as string)![1]!;
  expect(streamed.body).toContain('event: response.completed');
  upstream.seen.length = 0;
  await create(g.app, { previous_response_id: id });
  expect(upstream.keysSeen()).toEqual([K1]);
});

test('a compressed create answer (the client asked for gzip) is decoded on the side for its id; the client gets the bytes as sent', async () => {
  const g = gateway(upstream.url, {}, { strategy: 'round-robin' });
  projects();
  const plain = upstream.behaviour;
  upstream.behaviour = (req, res) => {
    if (req.method !== 'POST' || JSON.parse(req.body.toString()).previous_response_id !== undefined) return plain(req, res);
    const id = `resp_${(++made).toString(16).padStart(24, '0')}`;
    const body = gzipSync(JSON.stringify({ id, object: 'response', status: 'completed', output: [] }));
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length });
    res.end(body);
  };
  await create(g.app).set('accept-encoding', 'gzip');
  const second = await create(g.app).set('accept-encoding', 'gzip'); // key-1
  expect(second.headers['content-encoding']).toBe('gzip');
  const id = second.body.id as string;
  upstream.seen.length = 0;
  upstream.behaviour = plain;
  await create(g.app, { previous_response_id: id });
  expect(upstream.keysSeen()).toEqual([K1]);
});

test("while the creating key cools, a follow-up gets the pool's 429 with that key's Retry-After, not another project's 404", async () => {
  const g = gateway(upstream.url);
  projects();
  const made = await create(g.app);
  g.pool.markRateLimited('key-0', 25_000, { model: 'gpt-4o' });
  upstream.seen.length = 0;
  const res = await create(g.app, { previous_response_id: made.body.id });
  expect(res.status).toBe(429);
  expect(res.headers['retry-after']).toBe('25');
  expect(res.body.error.code).toBe('rate_limit_exceeded');
  expect(upstream.seen).toHaveLength(0);
  // Another model's cooldown is not this request's: it goes through.
  g.clock.advance(25_000);
  g.pool.markRateLimited('key-0', 25_000, { model: 'gpt-4o-mini' });
  expect((await create(g.app, { previous_response_id: made.body.id })).status).toBe(200);
});

test('a disabled or removed creating key: the request walks the pool (another key of its project may reach it)', async () => {
  const g = gateway(upstream.url);
  projects();
  const made = await create(g.app);
  g.pool.markDisabled('key-0');
  upstream.seen.length = 0;
  const res = await create(g.app, { previous_response_id: made.body.id });
  expect(upstream.keysSeen()).toEqual([K1]);
  expect(res.status).toBe(404); // what the upstream says: the object is key-0's
});

test('an unknown id, or one that is not an id at all, walks the pool as usual', async () => {
  const g = gateway(upstream.url);
  projects();
  await create(g.app, { previous_response_id: 'resp_unknown000000000000' });
  await create(g.app, { previous_response_id: 'x'.repeat(500) });
  await create(g.app, { previous_response_id: { not: 'a string' } });
  expect(upstream.keysSeen()).toEqual([K0, K0, K0]);
});

test('store: false makes nothing to follow: nothing is remembered', async () => {
  const g = gateway(upstream.url);
  const learned: unknown[] = [];
  g.pool.on('affinity', (e) => learned.push(e));
  projects();
  await create(g.app, { store: false });
  expect(learned).toEqual([]);
});

test('bounded in time (affinityTtlMs) and in count (maxObjects): past either, a follow-up walks the pool', async () => {
  const store = new MemoryKeyStateStore({ maxObjects: 2 });
  const g = gateway(upstream.url, {}, { strategy: 'round-robin', affinityTtlMs: 60_000, store });
  projects();
  await create(g.app);
  const kept = await create(g.app); // key-1
  g.clock.advance(60_000);
  upstream.seen.length = 0;
  await create(g.app, { previous_response_id: kept.body.id }); // forgotten: round-robin, key-2
  expect(upstream.keysSeen()).toEqual([K2]);

  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await create(g.app)).body.id as string);
  expect(store.objectEntries().map((e) => e.object)).toEqual([ids[1], ids[2]]); // the oldest went
  const owner = upstream.seen.at(-1)!.key;
  upstream.seen.length = 0;
  await create(g.app, { previous_response_id: ids[2] });
  expect(upstream.keysSeen()).toEqual([owner]);
  expect(() => new MemoryKeyStateStore({ maxObjects: 0 })).toThrow(/option "maxObjects" must be a positive integer/);
  expect(() => gateway(upstream.url, {}, { affinityTtlMs: -1 })).toThrow(/option "affinityTtlMs" must be a non-negative integer/);
});

test('affinityTtlMs: 0 turns affinity off', async () => {
  const g = gateway(upstream.url, {}, { strategy: 'round-robin', affinityTtlMs: 0 });
  projects();
  await create(g.app);
  const second = await create(g.app);
  upstream.seen.length = 0;
  await create(g.app, { previous_response_id: second.body.id });
  expect(upstream.keysSeen()).toEqual([K2]);
});

test('keyPassthrough: a file uploaded (streamed multipart) with one key is read, and used by a batch, with that key', async () => {
  const clock = new FakeClock();
  const pool = new KeyPool({ keys: [K0, K1, K2], now: clock.now, strategy: 'round-robin' });
  const app = express();
  // allow: the operator lets tenants reach the account's stored objects (one tenant here), which keyPassthrough refuses by default.
  app.use(
    keyFailover({ target: upstream.url, pool, logger: false }),
    keyPassthrough({ target: upstream.url, pool, logger: false, allow: '/' }),
  );
  const files = new Map<string, string>();
  upstream.behaviour = (req, res) => {
    if (req.method === 'POST' && req.url === '/v1/files') {
      const id = `file-${(++made).toString(36).padStart(22, 'A')}`;
      files.set(id, req.key!);
      return openaiOk({ object: 'file', id, purpose: 'batch', filename: 'input.jsonl' })(req, res);
    }
    const named =
      /^\/v1\/files\/([\w-]+)/.exec(req.url)?.[1] ?? (JSON.parse(req.body.toString() || '{}') as { input_file_id?: string }).input_file_id;
    if (named !== undefined && files.get(named) !== req.key) return openai.modelNotFound()(req, res);
    if (req.url === '/v1/batches') return openaiOk({ id: 'batch_abc123', object: 'batch', input_file_id: named })(req, res);
    return openaiOk({ id: named, object: 'file' })(req, res);
  };
  const server = await listen(app);
  try {
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob(['{"custom_id":"1"}\n']), 'input.jsonl');
    await fetch(`${server.url}/v1/files`, { method: 'POST', body: form }); // key-0
    const uploaded = (await (await fetch(`${server.url}/v1/files`, { method: 'POST', body: form })).json()) as { id: string }; // key-1
    upstream.seen.length = 0;
    expect((await fetch(`${server.url}/v1/files/${uploaded.id}/content`)).status).toBe(200);
    const batch = await fetch(`${server.url}/v1/batches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: uploaded.id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    });
    expect(batch.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K1, K1]);
  } finally {
    await server.close();
  }
});

test('createFailoverFetch with the openai SDK: responses.create({ previous_response_id }) goes where the first one was made', async () => {
  const pool = new KeyPool({ keys: [K0, K1, K2], strategy: 'round-robin' });
  const fetch = createFailoverFetch(pool, { target: upstream.url });
  const client = new OpenAI({ apiKey: 'unused', baseURL: `${upstream.url}/v1`, fetch, maxRetries: 0 });
  projects();
  try {
    const first = await client.responses.create({ model: 'gpt-4o', input: 'hi' });
    for (let i = 0; i < 4; i++) {
      const next = await client.responses.create({ model: 'gpt-4o', input: 'and?', previous_response_id: first.id });
      expect(next.status).toBe('completed');
    }
    expect(new Set(upstream.keysSeen())).toEqual(new Set([K0]));
  } finally {
    await fetch.close();
  }
});

test('hostile client: the ids it names cannot pin anyone else, nor grow the map; only answers of create calls add to it', async () => {
  const g = gateway(upstream.url, {}, { strategy: 'round-robin' });
  projects();
  const made = await create(g.app); // key-0's
  // A client that names that object in every request pins only its own requests; a chat request is not touched.
  for (let i = 0; i < 5; i++) await create(g.app, { previous_response_id: made.body.id });
  upstream.seen.length = 0;
  for (let i = 0; i < 3; i++) await request(g.app).post(CHAT).send(chatBody);
  expect(new Set(upstream.keysSeen()).size).toBe(3);
  // Naming a thousand made-up ids adds nothing: lookups never write.
  const store = new MemoryKeyStateStore({ maxObjects: 5 });
  const h = gateway(upstream.url, {}, { store });
  for (let i = 0; i < 50; i++) await create(h.app, { previous_response_id: `resp_${i}fake00000000000000`, store: false });
  expect(store.objectEntries()).toEqual([]);
});

test('the routes and fields followed (the README table)', () => {
  const named = (method: string, path: string, body?: object) =>
    objectRoute(method, path, body ? Buffer.from(JSON.stringify(body)) : null)?.named();
  expect(objectRoute('POST', CHAT, Buffer.from('{}'))).toBeUndefined();
  expect(objectRoute('POST', '/v1/messages', Buffer.from('{}'))).toBeUndefined();
  expect(named('POST', RESPONSES, { previous_response_id: 'resp_1abc', conversation: 'conv_9' })).toEqual(['resp_1abc', 'conv_9']);
  expect(named('POST', RESPONSES, { conversation: { id: 'conv_77' } })).toEqual(['conv_77']);
  expect(named('GET', '/v1/responses/resp_1abc/input_items')).toEqual(['resp_1abc']);
  expect(named('DELETE', '/v1/files/file-abc')).toEqual(['file-abc']);
  expect(named('POST', '/v1/batches', { input_file_id: 'file-xyz' })).toEqual(['file-xyz']);
  expect(named('POST', '/v1/vector_stores/vs_1/files', { file_id: 'file-2' })).toEqual(['vs_1', 'file-2']);
  expect(named('POST', '/v1/fine_tuning/jobs', { training_file: 'file-t', validation_file: 'file-v' })).toEqual(['file-t', 'file-v']);
  expect(named('GET', '/v1/messages/batches/msgbatch_01/results')).toEqual(['msgbatch_01']);
  expect(named('GET', '/openai/v1/conversations/conv_5/items')).toEqual(['conv_5']); // a base path (Azure, createFailoverFetch)
  expect(objectRoute('POST', '/v1/files', null)?.creates?.kind).toBe('file');
  expect(objectRoute('POST', RESPONSES, Buffer.from('{"store":false}'))?.creates).toBeUndefined();
  expect(objectRoute('GET', '/v1/files', null)).toBeUndefined();
});
