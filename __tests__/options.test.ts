import express from 'express';
import request from 'supertest';
import { keyFailover, KeyFailoverError } from '../lib/index.js';
import { CHAT, chatBody } from './support/gateway.js';

test.each([
  [{ target: 'api.openai.com' }, /option "target" must be an absolute http\(s\) URL.*got "api.openai.com"/],
  [{ target: 'ftp://example.com' }, /option "target" must be an absolute http\(s\) URL/],
  [{ target: 42 }, /option "target".*got 42/],
  [{ target: 'https://user:pw@example.com' }, /must not carry credentials, a query or a fragment/],
  [{ target: 'https://example.com/?a=1' }, /must not carry credentials, a query or a fragment/],
  [{ pool: ['sk-a'] }, /option "pool" must be a KeyPool/],
  [
    { target: 'https://api.openai.com/v1/' },
    /option "target" ends in \/v1.*\/v1\/v1\/\.\.\.\); give the base URL without \/v1, such as "https:\/\/api.openai.com"/,
  ],
  [{ target: 'https://openrouter.ai/api/v1' }, /such as "https:\/\/openrouter.ai\/api"/],
  [{ byok: 'x-api-key' }, /option "byok" must be a function, got a string/],
  [{ maxBodyBytes: 0 }, /option "maxBodyBytes" must be a positive integer, got 0/],
  [{ maxBodyBytes: 1.5 }, /option "maxBodyBytes" must be a positive integer/],
  [{ timeoutMs: -1 }, /option "timeoutMs" must be a positive integer, got -1/],
  [{ failover: [429] }, /option "failover" must be an object mapping statuses or causes to actions/],
  [{ failover: { 200: 'skip' } }, /option "failover" has the key "200"; keys must be HTTP error statuses from 400 to 599/],
  [{ failover: { abc: 'skip' } }, /has the key "abc"/],
  [{ failover: { 429: 'retry' } }, /maps 429 to "retry"; use one of 'cooldown', 'disable', 'skip', 'relay'/],
  [{ logger: 'console' }, /option "logger" must be an object with a warn\(message\) method/],
  [{ timeout: 5 }, /unknown option "timeout"/],
  ['https://api.openai.com', /expected an options object, got a string/],
])('keyFailover(%p) throws naming the option', (options, message) => {
  let error: unknown;
  try {
    keyFailover(options as never);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(KeyFailoverError);
  expect((error as Error).message).toMatch(/^keyFailover\(\): /);
  expect((error as Error).message).toMatch(message);
});

test('no pool anywhere: 500 naming app.locals.keyPool, logged once with its code', async () => {
  const warnings: string[] = [];
  const app = express();
  const middleware = keyFailover({ target: 'http://127.0.0.1:9', logger: { warn: (m) => warnings.push(m) } });
  app.use(middleware);

  const res = await request(app).post(CHAT).send(chatBody);
  await request(app).post(CHAT).send(chatBody);
  await middleware.close();

  expect(res.status).toBe(500);
  expect(res.body.error.message).toMatch(/app\.locals\.keyPool = new KeyPool/);
  expect(res.body.error.type).toBe('server_error');
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatch(/^\[express-key-failover\] .*ERR_EKF_NO_POOL/);
});
