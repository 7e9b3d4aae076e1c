import express from 'express';
import request from 'supertest';
import { createFailoverFetch, keyPassthrough, KeyPool } from '../lib/index.js';
import { CHAT, K0, KEYS, chatBody, gateway, useMockUpstream } from './support/gateway.js';

/**
 * Headers that make a framework or proxy in front of the upstream take another
 * method or path (Express's method-override, IIS's X-Original-URL, ...) never
 * leave the gateway: the gateway chose the request line, and a pool key is on it.
 */
const upstream = useMockUpstream();

const OVERRIDES = {
  'x-http-method-override': 'DELETE',
  'x-http-method': 'DELETE',
  'x-method-override': 'DELETE',
  'x-original-url': '/v1/organization/admin_api_keys',
  'x-rewrite-url': '/v1/organization/users',
};

function expectNoOverrides(): void {
  expect(upstream.seen).toHaveLength(1);
  const seen = upstream.seen[0]!;
  for (const name of Object.keys(OVERRIDES)) expect(seen.headers[name]).toBeUndefined();
  expect(seen.headers['x-kept']).toBe('yes'); // an ordinary header still goes
  expect(seen.key).toBe(K0);
}

test('keyFailover drops method and path override headers', async () => {
  const { app } = gateway(upstream.url);
  const res = await request(app).post(CHAT).set(OVERRIDES).set('x-kept', 'yes').send(chatBody);
  expect(res.status).toBe(200);
  expect(upstream.seen[0]!.method).toBe('POST');
  expect(upstream.seen[0]!.url).toBe(CHAT);
  expectNoOverrides();
});

test('keyPassthrough drops them', async () => {
  const app = express();
  const passthrough = keyPassthrough({ target: upstream.url, pool: new KeyPool([...KEYS]), logger: false });
  app.use(passthrough);
  const res = await request(app).get('/v1/models').set(OVERRIDES).set('x-kept', 'yes');
  await passthrough.close();
  expect(res.status).toBe(200);
  expect([upstream.seen[0]!.method, upstream.seen[0]!.url]).toEqual(['GET', '/v1/models']);
  expectNoOverrides();
});

test('createFailoverFetch drops them', async () => {
  const failoverFetch = createFailoverFetch(new KeyPool([...KEYS]), { target: upstream.url });
  const res = await failoverFetch(`${upstream.url}/v1/models`, { headers: { ...OVERRIDES, 'x-kept': 'yes' } });
  await res.arrayBuffer();
  await failoverFetch.close();
  expect(res.status).toBe(200);
  expect([upstream.seen[0]!.method, upstream.seen[0]!.url]).toEqual(['GET', '/v1/models']);
  expectNoOverrides();
});
