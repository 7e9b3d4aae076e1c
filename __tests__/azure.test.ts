import express from 'express';
import http from 'node:http';
import OpenAI, { AzureOpenAI } from 'openai';
import request from 'supertest';
import {
  createFailoverFetch,
  keyFailover,
  KeyFailoverError,
  KeyPool,
  openaiCompatible,
  type KeyFailoverMiddleware,
  type KeyFailoverOptions,
} from '../lib/index.js';
import { matchRoute, parseRoutes } from '../lib/providers/routes.js';
import { FakeClock, K0, K1, K2, KEYS, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { byKey, json, type Behaviour } from './support/mock-upstream.js';
import { azure as azureAnswers } from './support/provider-answers.js';

/**
 * Azure OpenAI through the `openai` package's own AzureOpenAI class: the
 * client's endpoint is the gateway (mounted at /azure), the gateway's target
 * is the resource root (here, the mock upstream).
 */
const upstream = useMockUpstream();
const API_VERSION = '2024-10-21';
const GATEWAY_TOKEN = 'gateway-user-token-azure-0000000';
const middlewares: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(middlewares.map((m) => m.close())));

function azureGateway(options: Omit<KeyFailoverOptions, 'target' | 'provider'> = {}, providerOptions = {}) {
  const clock = new FakeClock();
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
  const app = express();
  const middleware = keyFailover({
    target: upstream.url,
    provider: openaiCompatible({ preset: 'azure', ...providerOptions }),
    pool,
    logger: false,
    ...options,
  });
  middlewares.push(middleware);
  app.use('/azure', middleware);
  app.use((_req, res) => void res.status(404).json({ fellThrough: true }));
  return { app, pool, clock };
}

const completion = (model = 'gpt-4o') => ({
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model,
  choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'hello from azure' } }],
  usage: { prompt_tokens: 1, completion_tokens: 3, total_tokens: 4 },
});
const answer =
  (body: unknown): Behaviour =>
  (_req, res) =>
    json(res, 200, body, { 'apim-request-id': 'ok-1', 'x-ms-region': 'Sweden Central' });

async function withClient<T>(
  app: express.Express,
  use: (client: AzureOpenAI, url: string) => Promise<T>,
  deployment = 'gpt-4o-prod',
): Promise<T> {
  const server = await listen(app);
  try {
    const client = new AzureOpenAI({ endpoint: `${server.url}/azure`, deployment, apiVersion: API_VERSION, apiKey: GATEWAY_TOKEN });
    return await use(client, server.url);
  } finally {
    await server.close();
  }
}

test('AzureOpenAI chat.completions: the deployment route fails over on Azure 429, the cooldown is for that deployment', async () => {
  const { app, pool } = azureGateway();
  upstream.behaviour = byKey({ [K0]: azureAnswers.rateLimited('gpt-4o-prod') }, answer(completion()));

  const result = await withClient(app, (client) =>
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
  );

  expect(result.choices[0]!.message.content).toBe('hello from azure');
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  for (const seen of upstream.seen) {
    expect(seen.url).toBe(`/openai/deployments/gpt-4o-prod/chat/completions?api-version=${API_VERSION}`);
    expect(seen.headers['api-key']).toBe(seen.key);
    expect(seen.headers.authorization).toBeUndefined();
    expect(JSON.stringify(seen.headers)).not.toContain(GATEWAY_TOKEN);
  }
  // Azure meters a deployment: the 429 cools key-0 for gpt-4o-prod only, whatever the body's model says.
  expect(statesFor(pool, 'gpt-4o-prod')).toEqual(['cooling', 'available', 'available']);
  expect(statesFor(pool, 'gpt-4o')).toEqual(['available', 'available', 'available']);
});

test('AzureOpenAI: another deployment is not kept off a key cooling for one', async () => {
  const { app } = azureGateway();
  upstream.behaviour = (req, res) =>
    req.key === K0 && req.url.includes('/deployments/gpt-4o-prod/') ? azureAnswers.rateLimited()(req, res) : answer(completion())(req, res);
  const ask = (client: AzureOpenAI) => client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });

  await withClient(app, ask, 'gpt-4o-prod');
  await withClient(app, ask, 'gpt-4o-batch');

  expect(upstream.seen.map((r) => [r.url.split('?')[0], r.key])).toEqual([
    ['/openai/deployments/gpt-4o-prod/chat/completions', K0],
    ['/openai/deployments/gpt-4o-prod/chat/completions', K1],
    ['/openai/deployments/gpt-4o-batch/chat/completions', K0],
  ]);
});

test('AzureOpenAI responses.create: /openai/responses fails over on an Azure 401, which disables the key once another answers', async () => {
  const { app, pool } = azureGateway();
  const response = { id: 'resp_1', object: 'response', created_at: 1, status: 'completed', model: 'gpt-4o', output: [] };
  upstream.behaviour = byKey({ [K0]: azureAnswers.invalidKey() }, answer(response));

  const result = await withClient(app, (client) => client.responses.create({ model: 'gpt-4o-prod', input: 'hi' }));

  expect(result.id).toBe('resp_1');
  expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([
    [`/openai/responses?api-version=${API_VERSION}`, K0],
    [`/openai/responses?api-version=${API_VERSION}`, K1],
  ]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
});

test('AzureOpenAI streaming: chunks arrive through the deployment route after a failover', async () => {
  const { app } = azureGateway();
  upstream.behaviour = byKey({ [K0]: azureAnswers.rateLimited() }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const content of ['Hel', 'lo']) {
      res.write(
        `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: { content } }] })}\n\n`,
      );
    }
    res.end('data: [DONE]\n\n');
  });

  const text = await withClient(app, async (client) => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true });
    let out = '';
    for await (const chunk of stream) out += chunk.choices[0]?.delta.content ?? '';
    return out;
  });

  expect(text).toBe('Hello');
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

test("Azure's v1 API through the plain OpenAI class: /openai/v1/chat/completions", async () => {
  const { app } = azureGateway();
  upstream.behaviour = byKey({ [K0]: azureAnswers.rateLimited() }, answer(completion()));
  const server = await listen(app);
  const client = new OpenAI({ baseURL: `${server.url}/azure/openai/v1`, apiKey: GATEWAY_TOKEN });

  await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
  await server.close();

  expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([
    ['/openai/v1/chat/completions', K0],
    ['/openai/v1/chat/completions', K1],
  ]);
  expect(upstream.seen[0]!.headers.authorization).toBeUndefined();
});

test('a deployment that does not exist is relayed as Azure says it, and marks no key', async () => {
  const { app, pool } = azureGateway();
  upstream.behaviour = azureAnswers.deploymentNotFound();

  const res = await request(app).post('/azure/openai/deployments/nope/chat/completions?api-version=2024-10-21').send({ messages: [] });

  expect(res.status).toBe(404);
  expect(res.body.error.code).toBe('DeploymentNotFound');
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('byok: true with the azure preset reads the client key from api-key; one attempt', async () => {
  const { app, pool } = azureGateway({ byok: true });
  upstream.behaviour = azureAnswers.rateLimited();
  const clientKey = 'client-azure-key-000000000000000';

  const res = await request(app).post('/azure/openai/deployments/gpt-4o-prod/chat/completions').set('api-key', clientKey).send({});

  expect(res.status).toBe(429);
  expect(upstream.keysSeen()).toEqual([clientKey]);
  expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
});

test('the preset pins api-version when given a query, over the client', async () => {
  const { app } = azureGateway({}, { query: { 'api-version': '2025-04-01-preview' } });

  await withClient(app, (client) => client.chat.completions.create({ model: 'gpt-4o', messages: [] }).catch(() => undefined));

  expect(upstream.seen[0]!.url).toBe('/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-04-01-preview');
});

test('AzureOpenAI with createFailoverFetch and the azure preset: the pool key goes in api-key, the SDK key stays home', async () => {
  const pool = new KeyPool({ keys: [...KEYS], now: new FakeClock().now });
  const fetch = createFailoverFetch(pool, { provider: openaiCompatible({ preset: 'azure' }), target: upstream.url });
  const client = new AzureOpenAI({ endpoint: upstream.url, deployment: 'gpt-4o-prod', apiVersion: API_VERSION, apiKey: 'unused', fetch });
  upstream.behaviour = byKey({ [K0]: azureAnswers.rateLimited() }, answer(completion()));

  await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
  await fetch.close();

  expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([
    [`/openai/deployments/gpt-4o-prod/chat/completions?api-version=${API_VERSION}`, K0],
    [`/openai/deployments/gpt-4o-prod/chat/completions?api-version=${API_VERSION}`, K1],
  ]);
  expect(upstream.seen.every((r) => !JSON.stringify(r.headers).includes('unused'))).toBe(true);
});

/** Sends a request line as given: no client library normalises the path first. */
function rawPost(url: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', path, headers: { 'content-type': 'application/json', 'api-key': GATEWAY_TOKEN } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end('{"messages":[]}');
  });
}

test.each([
  ['..', '/azure/openai/deployments/../chat/completions'],
  ['.', '/azure/openai/deployments/./chat/completions'],
  ['%2e%2e', '/azure/openai/deployments/%2e%2e/chat/completions'],
  ['an encoded slash', '/azure/openai/deployments/a%2fb/chat/completions'],
  ['an encoded backslash', '/azure/openai/deployments/a%5cb/chat/completions'],
  ['a backslash', '/azure/openai/deployments/a\\..\\b/chat/completions'],
  ['two segments', '/azure/openai/deployments/a/b/chat/completions'],
  ['an empty segment', '/azure/openai/deployments//chat/completions'],
  ['a percent-encoded name', '/azure/openai/deployments/gpt%204o/chat/completions'],
  ['a semicolon', '/azure/openai/deployments/gpt;x=1/chat/completions'],
  ['an at sign', '/azure/openai/deployments/a@evil.example/chat/completions'],
  ['129 characters', `/azure/openai/deployments/${'a'.repeat(129)}/chat/completions`],
  ['a trailing slash', '/azure/openai/deployments/gpt-4o/chat/completions/'],
])('a hostile deployment name (%s) is not matched: next(), nothing sent', async (_what, path) => {
  const { app } = azureGateway();
  const server = await listen(app);
  const status = await rawPost(server.url, path);
  await server.close();

  expect(status).toBe(404); // the app's own fall-through
  expect(upstream.seen).toEqual([]);
});

test('the longest accepted deployment name (128 unreserved characters) is sent as the route builds it', async () => {
  const { app } = azureGateway();
  const name = 'A-z_0.9~'.repeat(16);
  upstream.behaviour = answer(completion());

  const res = await request(app).post(`/azure/openai/deployments/${name}/chat/completions`).send({});

  expect(res.status).toBe(200);
  expect(upstream.seen.map((r) => r.url)).toEqual([`/openai/deployments/${name}/chat/completions`]);
});

describe('route patterns', () => {
  test('exact routes are a Set lookup; a pattern matches whole segments and builds the path from the route', () => {
    const routes = parseRoutes('t', ['/v1/chat/completions', '/openai/deployments/:deployment/chat/completions', '/v1/models/:model/x']);
    expect([...routes.routes]).toEqual(['/v1/chat/completions']);
    expect(matchRoute(routes, '/v1/chat/completions')).toEqual({ path: '/v1/chat/completions' });
    expect(matchRoute(routes, '/openai/deployments/d-1/chat/completions')).toEqual({
      path: '/openai/deployments/d-1/chat/completions',
      model: 'd-1',
    });
    expect(matchRoute(routes, '/v1/models/m/x')).toEqual({ path: '/v1/models/m/x', model: 'm' });
    expect(matchRoute(routes, '/openai/deployments/d-1/chat/Completions')).toBeUndefined();
    expect(matchRoute(routes, '/openai/deployments/d-1/chat')).toBeUndefined();
    expect(matchRoute({ routes: new Set(['/a']) }, '/b')).toBeUndefined();
  });

  test.each([
    [{ preset: 'bedrock' }, /option "preset" must be one of 'azure', got "bedrock"/],
    [{ preset: 1 }, /option "preset" must be one of 'azure', got 1/],
    [{ routes: ['/openai/deployments/:1x/chat'] }, /a path parameter is a whole segment ":name"/],
    [{ routes: ['/a/:x/:x'] }, /each name once/],
    [{ routes: ['/a/:'] }, /a path parameter is a whole segment/],
    [{ routes: ['/a/:x-y'] }, /a path parameter is a whole segment/],
  ])('openaiCompatible(%p) throws naming the option', (options, message) => {
    expect(() => openaiCompatible(options as never)).toThrow(KeyFailoverError);
    expect(() => openaiCompatible(options as never)).toThrow(message);
  });

  test('a target that already ends in /openai is refused with the azure preset', () => {
    expect(() => keyFailover({ target: 'https://r.openai.azure.com/openai', provider: openaiCompatible({ preset: 'azure' }) })).toThrow(
      /option "target" ends in \/openai, and the routes already start with \/openai .* such as "https:\/\/r.openai.azure.com"/,
    );
  });

  test('the preset can be overridden option by option', async () => {
    const provider = openaiCompatible({ preset: 'azure', name: 'azure-east', routes: ['/openai/deployments/:deployment/embeddings'] });
    expect(provider.name).toBe('azure-east');
    expect(provider.authHeader(K2)).toEqual(['api-key', K2]);
    expect(matchRoute(provider, '/openai/deployments/e/embeddings')).toEqual({ path: '/openai/deployments/e/embeddings', model: 'e' });
    expect(matchRoute(provider, '/openai/responses')).toBeUndefined();
  });
});
