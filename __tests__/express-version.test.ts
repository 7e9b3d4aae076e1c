import express from 'express';
import request from 'supertest';
import { keyFailover, KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, chatBody } from './support/gateway.js';
import { MockUpstream, byKey, ok, status } from './support/mock-upstream.js';

// This file runs in both jest projects: `express` is Express 5 in one, Express 4 in the other.
const major = Number((require('express/package.json') as { version: string }).version.split('.')[0]);

let upstream: MockUpstream;
beforeAll(async () => {
  upstream = await MockUpstream.start();
});
afterAll(() => upstream.close());

test('runs on the Express major this jest project names', () => {
  expect(major).toBe((globalThis as { expectedExpressMajor?: number }).expectedExpressMajor);
  // Express 4 still ships the query middleware that Express 5 removed: the running code is the major it says.
  expect(typeof (express as unknown as { query?: unknown }).query === 'function').toBe(major === 4);
});

test('per-route mount after an auth middleware, body parser in front, errors to the app error handler', async () => {
  const app = express();
  app.locals['keyPool'] = new KeyPool([K0, K1]);
  const requireAuth: express.RequestHandler = (req, res, next) => {
    if (req.get('authorization') !== 'Bearer gateway-user-token') return void res.status(401).json({ error: 'gateway auth' });
    next();
  };
  const failover = keyFailover({ target: upstream.url, logger: false });
  app.use(express.json());
  app.post(CHAT, requireAuth, failover);
  app.use((_req, res) => void res.status(404).json({ error: 'not here' }));
  upstream.behaviour = byKey({ [K0]: status(429) }, ok({ major }));

  const denied = await request(app).post(CHAT).send(chatBody);
  const served = await request(app).post(CHAT).set('authorization', 'Bearer gateway-user-token').send(chatBody);
  const other = await request(app).post('/v1/embeddings').set('authorization', 'Bearer gateway-user-token').send({});
  await failover.close();

  expect(denied.status).toBe(401);
  expect(served.status).toBe(200);
  expect(served.body).toEqual({ major });
  expect(other.status).toBe(404);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(JSON.parse(upstream.seen[1]!.body.toString())).toEqual(chatBody);
});
