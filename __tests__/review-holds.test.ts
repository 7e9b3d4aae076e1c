/**
 * Review: attacks tried that held up (these pass), kept so that they stay so.
 */
import net from 'node:net';
import express, { type Express } from 'express';
import request from 'supertest';
import { keyFailover, keyPassthrough, KeyPool, type KeyFailoverMiddleware } from '../lib/index.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai } from './support/provider-answers.js';

const upstream = useMockUpstream();
const opened: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(opened.map((m) => m.close())));

function fullGateway(): { app: Express; pool: KeyPool } {
  const app = express();
  const pool = new KeyPool([...KEYS]);
  app.locals['keyPool'] = pool;
  const failover = keyFailover({ target: upstream.url, logger: false });
  const passthrough = keyPassthrough({ target: upstream.url, logger: false });
  opened.push(failover, passthrough);
  app.use(failover, passthrough);
  return { app, pool };
}

/** One raw HTTP/1.1 request over a socket; resolves with the status line. */
async function raw(app: Express, head: string): Promise<string> {
  const server = await listen(app);
  const port = Number(new URL(server.url).port);
  try {
    return await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(head));
      let data = '';
      socket.on('data', (chunk) => {
        data += chunk.toString('latin1');
        if (data.includes('\r\n')) {
          resolve(data.slice(0, data.indexOf('\r\n')));
          socket.destroy();
        }
      });
      socket.on('error', reject);
    });
  } finally {
    await server.close();
  }
}

describe('keyPassthrough request targets', () => {
  test('absolute-form targets reach only the configured origin, and the admin API stays refused in that form', async () => {
    const { app } = fullGateway();
    upstream.behaviour = ok({ data: [] });
    expect(await raw(app, 'GET http://evil.example/v1/organization/users HTTP/1.1\r\nHost: evil.example\r\n\r\n')).toMatch(/ 403 /);
    expect(await raw(app, 'GET http://evil.example//v1/Organization/users HTTP/1.1\r\nHost: evil.example\r\n\r\n')).toMatch(/ 40[03] /);
    expect(await raw(app, 'GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n')).toMatch(/ 200 /);
    expect(upstream.seen.map((r) => [r.url, r.headers.host])).toEqual([['/v1/models', new URL(upstream.url).host]]);
  });

  test('OPTIONS * and lower-case methods never reach the upstream', async () => {
    const { app } = fullGateway();
    expect(await raw(app, 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/ 400 /);
    expect(await raw(app, 'get /v1/models HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/ 400 /); // refused by Node's parser
    expect(upstream.seen).toEqual([]);
  });

  test('admin spellings: case, repeated slashes, encodings', async () => {
    const { app } = fullGateway();
    for (const path of [
      '/V1/ORGANIZATION/users',
      '/v1//organization/users',
      '/v1/%6frganization/users',
      '/v1/organization%2fusers',
      '/v1/./organization/users',
    ]) {
      expect([400, 403]).toContain((await request(app).get(path)).status);
    }
    expect(upstream.seen).toEqual([]);
  });
});

describe('the unrecognised-401 rule', () => {
  test('the same unknown 401 from the second key stops the walk and marks nothing, whatever its message says', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({
      [K0]: openai.unknown401(),
      [K1]: (req, res) => openai.unknown401()(req, res), // same code and type, another request id
    });
    const res = await request(g.app).post(CHAT).send(chatBody);
    expect(res.status).toBe(401);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('(by design) two kinds of unknown 401 alternating over the keys disable all but the last', async () => {
    const g = gateway(upstream.url);
    const other401 = openai.unknown401();
    upstream.behaviour = byKey({
      [K0]: openai.unknown401(),
      [K1]: (req, res) => {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'x', type: 'invalid_request_error', code: 'other_401' } }));
      },
      [K2]: other401,
    });
    await request(g.app).post(CHAT).send(chatBody);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'disabled', 'available']);
  });
});

test('client credentials (x-api-key and api-key too) and account headers never reach the upstream with a pool key (OpenAI)', async () => {
  const g = gateway(upstream.url);
  upstream.behaviour = ok();
  await request(g.app)
    .post(CHAT)
    .set('authorization', 'Bearer gateway-token')
    .set('openai-organization', 'org-client')
    .set('openai-project', 'proj_client')
    .set('x-api-key', 'gateway-token-2')
    .set('api-key', 'gateway-token-3')
    .set('proxy-authorization', 'Basic Zm9vOmJhcg==')
    .set('cookie', 'session=1')
    .set('x-http-method-override', 'DELETE')
    .send(chatBody);
  const headers = upstream.seen[0]!.headers;
  expect(headers.authorization).toBe(`Bearer ${K0}`);
  expect([headers['openai-organization'], headers['openai-project'], headers.cookie, headers['x-http-method-override']]).toEqual([
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
  // A gateway that authenticates its users by x-api-key (or Azure's api-key) does not hand their tokens to the provider.
  expect([headers['x-api-key'], headers['api-key'], headers['proxy-authorization']]).toEqual([undefined, undefined, undefined]);
});
