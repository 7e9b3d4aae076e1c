import http from 'node:http';
import net from 'node:net';
import request from 'supertest';
import { CHAT, K0, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { gate } from './support/client.js';
import { ok } from './support/mock-upstream.js';

const upstream = useMockUpstream();

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function until(what: string, condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('upstream unreachable: 502 in OpenAI shape, no key marked, no other key tried', async () => {
  const { app, pool } = gateway(`http://127.0.0.1:${await closedPort()}`);

  const res = await request(app).post(CHAT).send(chatBody);

  expect(res.status).toBe(502);
  expect(res.body).toEqual({
    error: { message: 'The upstream API could not be reached.', type: 'upstream_error', param: null, code: 'upstream_unreachable' },
  });
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('upstream resets the connection before headers: 502, only one key tried, none marked', async () => {
  const { app, pool } = gateway(upstream.url);
  upstream.behaviour = (_req, res) => void res.socket?.destroy();

  const res = await request(app).post(CHAT).send(chatBody);

  expect(res.status).toBe(502);
  expect(res.body.error.code).toBe('upstream_unreachable');
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('no response headers within timeoutMs: 504 and the upstream request is aborted', async () => {
  const { app, pool } = gateway(upstream.url, { timeoutMs: 150 });
  upstream.behaviour = () => new Promise(() => {}); // never answers

  const res = await request(app).post(CHAT).send(chatBody);

  expect(res.status).toBe(504);
  expect(res.body).toEqual({
    error: { message: 'The upstream API did not answer in time.', type: 'upstream_error', param: null, code: 'upstream_timeout' },
  });
  await until('the upstream to see the aborted request', () => upstream.aborted.length === 1);
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('a client that disconnects while waiting aborts the upstream request; no key is marked', async () => {
  const { app, pool } = gateway(upstream.url);
  const server = await listen(app);
  const arrived = gate('the request at the upstream');
  upstream.behaviour = () => {
    arrived.open();
    return new Promise(() => {});
  };

  const req = http.request(server.url + CHAT, { method: 'POST', headers: { 'content-type': 'application/json' } });
  req.on('error', () => {});
  req.end(JSON.stringify(chatBody));
  await arrived.promise;
  req.destroy();

  await until('the upstream to see the close', () => upstream.aborted.length === 1);
  await server.close();
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('a client that disconnects mid-stream aborts the upstream stream', async () => {
  const { app } = gateway(upstream.url);
  const server = await listen(app);
  upstream.behaviour = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: first\n\n'); // and never ends
  };

  const req = http.request(server.url + CHAT, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
    res.once('data', () => req.destroy());
  });
  req.on('error', () => {});
  req.end(JSON.stringify(chatBody));

  await until('the upstream to see the close', () => upstream.aborted.length === 1);
  await server.close();
  expect(upstream.keysSeen()).toEqual([K0]);
});

test('the gateway keeps serving after all of the above', async () => {
  const { app } = gateway(upstream.url);
  upstream.behaviour = ok({ fine: true });
  const res = await request(app).post(CHAT).send(chatBody);
  expect(res.body).toEqual({ fine: true });
});
