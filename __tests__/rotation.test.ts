/**
 * Key rotation and removal while requests are in flight: an answer marks the
 * exact key that got it (id and value), and nothing once that key has left the
 * pool; a removed key's walk goes on with the next key.
 */
import request from 'supertest';
import { CHAT, K0, K1, chatBody, gateway, stateId, useMockUpstream } from './support/gateway.js';
import { gate } from './support/client.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai } from './support/provider-answers.js';

const upstream = useMockUpstream();
const ROTATED = 'sk-test-k0-rotated-0000000000r0';

test("replace() with a new value for the same id while the old value's request is in flight: its 401 does not disable the new key", async () => {
  const g = gateway(upstream.url);
  const arrived = gate('the old request at the upstream');
  const release = gate('the test lets the upstream answer');
  upstream.behaviour = byKey(
    {
      [K0]: async (req, res) => {
        arrived.open();
        await release.promise;
        return openai.invalidKey()(req, res); // the old value was revoked: that is why it is rotated
      },
    },
    ok({ by: 'other' }),
  );
  const inFlight = request(g.app)
    .post(CHAT)
    .send(chatBody)
    .then((r) => r);
  await arrived.promise;
  g.pool.replace([
    { id: 'key-0', key: ROTATED },
    { id: 'key-1', key: K1 },
  ]);
  release.open();
  const res = await inFlight;

  expect(res.status).toBe(200);
  expect(res.body).toEqual({ by: 'other' });
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(g.pool.snapshot()[0]).toEqual({ id: 'key-0', hint: ROTATED.slice(-4), state: 'available' });
  upstream.reset();
  await request(g.app).post(CHAT).send(chatBody);
  expect(upstream.keysSeen()).toEqual([ROTATED]);
});

test('remove() while a request is using that key: its answer marks nothing and the walk goes on with the next key', async () => {
  const g = gateway(upstream.url);
  const events: string[] = [];
  g.pool.on('disabled', (e) => events.push(`disabled ${e.id}`));
  g.pool.on('rateLimited', (e) => events.push(`rateLimited ${e.id}`));
  const arrived = gate('the request at the upstream');
  const release = gate('the upstream may answer');
  upstream.behaviour = byKey(
    {
      [K0]: async (req, res) => {
        arrived.open();
        await release.promise;
        return openai.rateLimited(chatBody.model, { 'retry-after': '30' })(req, res);
      },
    },
    ok({ by: 'k1' }),
  );
  const inFlight = request(g.app)
    .post(CHAT)
    .send(chatBody)
    .then((r) => r);
  await arrived.promise;
  g.pool.remove('key-0');
  release.open();
  const res = await inFlight;

  expect(res.status).toBe(200);
  expect(res.body).toEqual({ by: 'k1' });
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(events).toEqual([]);
  expect(upstream.aborted).toEqual([]); // the removed key's answer was read to its end, not left hanging
  expect(g.pool.ids()).toEqual(['key-1', 'key-2']);
});

test('a key that stays in a replace() (same id and value) keeps its state; its late answer still marks it', async () => {
  const g = gateway(upstream.url);
  const arrived = gate('the request at the upstream');
  const release = gate('the upstream may answer');
  upstream.behaviour = byKey(
    {
      [K0]: async (req, res) => {
        arrived.open();
        await release.promise;
        return openai.invalidKey()(req, res);
      },
    },
    ok(),
  );
  const inFlight = request(g.app)
    .post(CHAT)
    .send(chatBody)
    .then((r) => r);
  await arrived.promise;
  g.pool.replace([K0, K1]); // the same keys, rebuilt
  release.open();
  await inFlight;
  expect(g.pool.snapshot()[0]).toMatchObject({ id: 'key-0', state: 'disabled' });
  expect(stateId('key-0', K0)).toMatch(/^key-0@[0-9a-f]{12}$/);
});
