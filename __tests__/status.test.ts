import { createHash } from 'node:crypto';
import express, { type Express } from 'express';
import request from 'supertest';
import { KeyPool, poolStatus } from '../lib/index.js';
import { renderStatusPage } from '../lib/observe/status-page.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, gateway, type Gateway, useMockUpstream } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';
const hint = (key: string) => key.slice(-4);

const upstream = useMockUpstream();

/**
 * A gateway whose key-0 got a 429 for gpt-4o-mini (Retry-After 30), key-1 a 401 invalid_api_key,
 * key-2 served the request; /admin/keys shows the pool.
 */
async function gatewayAfterFailover(poolOptions = {}): Promise<Gateway> {
  const gw = gateway(upstream.url, {}, poolOptions, (app) => app.get('/admin/keys', poolStatus()));
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }), [K1]: openai.invalidKey() }, ok());
  expect((await request(gw.app).post(CHAT).send(chatBody)).status).toBe(200);
  return gw;
}

const renderedFor = (pool: KeyPool): string =>
  renderStatusPage({ now: pool.now(), strategy: pool.strategy, counts: { available: 0, cooling: 0, disabled: 0 }, keys: pool.snapshot() });

const expectNoKeyValue = (text: string) => {
  for (const key of KEYS) expect(text).not.toContain(key);
};

describe('JSON', () => {
  test('now, strategy, counts and each key as the snapshot has it, on the pool clock; no-store', async () => {
    const { app, clock } = await gatewayAfterFailover();
    const res = await request(app).get('/admin/keys');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['vary']).toMatch(/Accept/);
    expect(res.body).toEqual({
      now: clock.time,
      strategy: 'ordered',
      counts: { available: 2, cooling: 0, disabled: 1 },
      keys: [
        {
          id: 'key-0',
          hint: hint(K0),
          state: 'available',
          models: [{ model: 'gpt-4o-mini', cooldownUntil: clock.time + 30_000 }],
          group: organizationOf(K0),
        },
        { id: 'key-1', hint: hint(K1), state: 'disabled', disabledReason: 'auth', group: organizationOf(K1) },
        { id: 'key-2', hint: hint(K2), state: 'available' },
      ],
    });
    expectNoKeyValue(res.text);

    clock.advance(30_000);
    const later = await request(app).get('/admin/keys');
    expect(later.body.now).toBe(clock.time);
    expect(later.body.counts).toEqual({ available: 2, cooling: 0, disabled: 1 });
    expect(later.body.keys[0]).toEqual({ id: 'key-0', hint: hint(K0), state: 'available', group: organizationOf(K0) });
  });

  test('an authCooldownMs gives a disabled key its disabledUntil', async () => {
    const { app, clock } = await gatewayAfterFailover({ authCooldownMs: 300_000 });
    const res = await request(app).get('/admin/keys');
    expect(res.body.keys[1]).toEqual({
      id: 'key-1',
      hint: hint(K1),
      state: 'disabled',
      disabledReason: 'auth',
      disabledUntil: clock.time + 300_000,
      group: organizationOf(K1),
    });
  });

  test('the pool option wins over app.locals.keyPool', async () => {
    const clock = new FakeClock();
    const other = new KeyPool({ keys: [{ id: 'other', key: K2 }], strategy: 'round-robin', now: clock.now });
    const app = express();
    app.locals['keyPool'] = new KeyPool([K0]);
    app.get('/status', poolStatus({ pool: other }));
    const res = await request(app).get('/status');
    expect(res.body).toEqual({
      now: clock.time,
      strategy: 'round-robin',
      counts: { available: 1, cooling: 0, disabled: 0 },
      keys: [{ id: 'other', hint: hint(K2), state: 'available' }],
    });
  });

  test('no pool: 500 JSON that says to set app.locals.keyPool', async () => {
    const app = express();
    app.get('/admin/keys', poolStatus());
    for (const accept of ['application/json', BROWSER_ACCEPT]) {
      const res = await request(app).get('/admin/keys').set('accept', accept);
      expect(res.status).toBe(500);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.body).toEqual({
        error: {
          message: 'poolStatus(): the app has no key pool: set app.locals.keyPool = new KeyPool([...]) or pass poolStatus({ pool }).',
          code: 'ERR_EKF_NO_POOL',
        },
      });
    }
  });
});

describe('content negotiation', () => {
  let app: Express;
  beforeAll(async () => {
    ({ app } = await gatewayAfterFailover());
  });

  test.each([
    ['no Accept', undefined, '', 'json'],
    ['Accept: */*', '*/*', '', 'json'],
    ['Accept: application/json', 'application/json', '', 'json'],
    ['a browser', BROWSER_ACCEPT, '', 'html'],
    ['Accept: text/html', 'text/html', '', 'html'],
    ['?format=html over Accept: application/json', 'application/json', '?format=html', 'html'],
    ['?format=json over a browser', BROWSER_ACCEPT, '?format=json', 'json'],
    ['an unknown format falls back on Accept', BROWSER_ACCEPT, '?format=xml', 'html'],
  ])('%s -> %s', async (_name, accept, query, expected) => {
    const req = request(app).get(`/admin/keys${query}`);
    if (accept !== undefined) req.set('accept', accept);
    const res = await req;
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(expected === 'html' ? /^text\/html/ : /^application\/json/);
    expect(res.headers['cache-control']).toBe('no-store');
  });

  test('HEAD answers the headers only; other methods go to next()', async () => {
    const statusApp = express();
    statusApp.locals['keyPool'] = new KeyPool([K0]);
    statusApp.use('/admin/keys', poolStatus());
    const head = await request(statusApp).head('/admin/keys');
    expect([head.status, head.headers['content-type'], head.text]).toEqual([200, expect.stringMatching(/^application\/json/), undefined]);
    expect((await request(statusApp).post('/admin/keys')).status).toBe(404);
    expect((await request(statusApp).delete('/admin/keys')).status).toBe(404);
  });
});

describe('HTML', () => {
  test('a table of id, hint, state badge and time left, server-rendered on the pool clock', async () => {
    const { app, clock } = await gatewayAfterFailover({ authCooldownMs: 3_723_000 });
    const res = await request(app).get('/admin/keys?format=html');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.text).toContain(`<main id="pool" data-now="${clock.time}">`);
    expect(res.text).toContain(
      `<tr data-key-id="key-0" data-state="available"><td class="id">key-0</td><td class="hint">…${hint(K0)}</td>` +
        `<td class="group">${organizationOf(K0)}</td>` +
        `<td class="state"><span class="badge available">available</span></td><td class="remaining"></td>` +
        `<td class="models"><span class="model" data-model="gpt-4o-mini">gpt-4o-mini <span data-until="${clock.time + 30_000}">30s</span></span></td></tr>`,
    );
    expect(res.text).toContain(
      `<span class="badge disabled">disabled</span></td><td class="remaining" data-until="${clock.time + 3_723_000}"`,
    );
    expect(res.text).toContain('>1h 02m 03s</td>');
    expect(res.text).toContain('<span class="badge available">available</span></td><td class="remaining"></td><td class="models"></td>');
    expect(res.text).toContain(
      '<span id="counts">2 available · 0 cooling · 1 disabled</span> · strategy <span id="strategy">ordered</span>',
    );

    // A key-wide cooldown, and a key out of quota, as the page shows them.
    const { pool } = await gatewayAfterFailover();
    pool.markRateLimited('key-2', 45_000);
    pool.markDisabled('key-1', { reason: 'quota' });
    const page = renderedFor(pool);
    expect(page).toContain(
      `<tr data-key-id="key-2" data-state="cooling"><td class="id">key-2</td><td class="hint">…${hint(K2)}</td>` +
        `<td class="group">—</td>` +
        `<td class="state"><span class="badge cooling">cooling</span></td>` +
        `<td class="remaining" data-until="${clock.time + 45_000}" title="${new Date(clock.time + 45_000).toISOString()}">45s</td>`,
    );
    expect(page).toContain('<span class="badge disabled">disabled</span><span class="reason">out of quota</span></td>');
    expectNoKeyValue(res.text);
  });

  test("the group column, a key being probed, and the pool's own skips ahead of a 429 (limit used up), escaped", async () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [{ key: K0, group: '<acme>' }, K1, K2], now: clock.now, cooldownJitter: 0 });
    // key-0's group: no requests left for gpt-4o-mini (an answer said so); key-1: a 429 that ended, its probe out.
    pool.lessons.markDepleted(pool.walker().next()!, 12_000, 'gpt-4o-mini', { limit: 'requests', remaining: 0 });
    pool.lessons.markDepleted(pool.walker().next()!, 20_000, undefined, { limit: 'requests', remaining: 0 });
    pool.markRateLimited('key-1', 1_000);
    clock.advance(1_000);
    const walker = pool.walker();
    expect(walker.next()?.id).toBe('key-1');
    expect(walker.probe).toBeDefined();
    const page = renderedFor(pool);
    expect(page).toContain(
      '<td class="group">&lt;acme&gt;</td><td class="state"><span class="badge cooling">cooling</span><span class="reason">limit used up</span></td>',
    );
    expect(page).toContain(
      `<span class="model" data-model="gpt-4o-mini" data-reason="remaining">gpt-4o-mini <span data-until="${clock.time + 11_000}">11s</span> (limit used up)</span>`,
    );
    expect(page).toContain(
      '<td class="group">—</td><td class="state"><span class="badge available">available</span><span class="reason">probing</span></td>',
    );
    expect(pool.snapshot()[1]).toEqual({ id: 'key-1', hint: hint(K1), state: 'available', probing: true });
    expect(pool.snapshot()[0]).toMatchObject({ group: '<acme>', coolingReason: 'remaining' });
  });

  test('a disabled key with no authCooldownMs is "until enabled"; a short key has no hint', async () => {
    const pool = new KeyPool([{ id: 'short', key: 'sk-short' }, K1]);
    pool.markDisabled('key-1');
    const app = express();
    app.get('/s', poolStatus({ pool }));
    const res = await request(app).get('/s').set('accept', 'text/html');
    expect(res.text).toContain('<td class="hint">—</td>');
    expect(res.text).toContain('<span class="badge disabled">disabled</span></td><td class="remaining">until enabled</td>');
    expect(res.text).not.toContain('sk-short');
  });

  test("every value is escaped: ids are user configuration, hints are the keys' own characters", async () => {
    const hostileKey = 'sk-test-hint-escape-00"<&>';
    const pool = new KeyPool([
      { id: '<img src=x onerror=alert(1)>', key: K0 },
      { id: `"><script>alert('id')</script>`, key: hostileKey },
      { id: "a'b&c", key: K2 },
    ]);
    pool.markRateLimited(`"><script>alert('id')</script>`, 5_000);
    const app = express();
    app.get('/s', poolStatus({ pool }));
    const res = await request(app).get('/s?format=html');

    expect(res.text).toContain('<td class="id">&lt;img src=x onerror=alert(1)&gt;</td>');
    expect(res.text).toContain('<tr data-key-id="&lt;img src=x onerror=alert(1)&gt;" data-state="available">');
    expect(res.text).toContain('<tr data-key-id="&quot;&gt;&lt;script&gt;alert(&#39;id&#39;)&lt;/script&gt;" data-state="cooling">');
    expect(res.text).toContain('<td class="hint">…&quot;&lt;&amp;&gt;</td>');
    expect(res.text).toContain('<td class="id">a&#39;b&amp;c</td>');
    expect(res.text).not.toContain('<img');
    expect(res.text).not.toContain('<script>alert(');
    // Exactly one script element: the page's own.
    expect(res.text.match(/<script/g)).toHaveLength(1);
    expectNoKeyValue(res.text);
    expect(res.text).not.toContain(hostileKey);
  });

  test("Content-Security-Policy: only the page's own script and style (by hash), fetches to the same origin, nothing external", async () => {
    const { app } = await gatewayAfterFailover();
    const res = await request(app).get('/admin/keys').set('accept', BROWSER_ACCEPT);
    const csp = res.headers['content-security-policy'] as string;
    const directives = Object.fromEntries(csp.split('; ').map((d) => [d.split(' ')[0], d.split(' ').slice(1).join(' ')]));
    const script = /<script>([\s\S]*)<\/script>/.exec(res.text)![1]!;
    const style = /<style>([\s\S]*)<\/style>/.exec(res.text)![1]!;
    const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
    expect(directives).toEqual({
      'default-src': "'none'",
      'script-src': sha256(script),
      'style-src': sha256(style),
      'connect-src': "'self'",
      'base-uri': "'none'",
      'form-action': "'none'",
      'frame-ancestors': "'none'",
    });
    expect(csp).not.toContain('unsafe');
    // No external resource: no src or href attribute, no URL in the markup or the style.
    expect(res.text).not.toMatch(/\s(src|href)=/);
    expect(res.text).not.toMatch(/https?:\/\//);
    expect(res.text).not.toMatch(/url\(|@import/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('options', () => {
  test('a wrong pool or an unknown option is refused at creation, naming it', () => {
    expect(() => poolStatus({ pool: {} as KeyPool })).toThrow(/poolStatus\(\): option "pool" must be a KeyPool, got object/);
    expect(() => poolStatus({ pol: new KeyPool([K0]) } as never)).toThrow(/poolStatus\(\): unknown option "pol". Known options: pool/);
    expect(() => poolStatus(null as never)).toThrow(/poolStatus\(\): options must be an object, got null/);
  });
});

describe('deadlines no Date can hold', () => {
  const YEAR = 365 * 24 * 60 * 60 * 1000;

  test('a cooldown past the year 275760 (a direct mark) still renders: HTML and JSON 200, the countdown without a date title', async () => {
    const gw = gateway(upstream.url, {}, {}, (app) => app.get('/admin/keys', poolStatus()));
    gw.pool.markRateLimited('key-0', Number.MAX_SAFE_INTEGER);
    const until = gw.pool.snapshot()[0]!.cooldownUntil!;
    expect(() => new Date(until).toISOString()).toThrow(RangeError); // the premise

    const html = await request(gw.app).get('/admin/keys?format=html');
    expect(html.status).toBe(200);
    expect(html.text).toMatch(new RegExp(`<td class="remaining" data-until="${until}">\\d+h \\d\\dm \\d\\ds</td>`));
    const json = await request(gw.app).get('/admin/keys');
    expect([json.status, json.body.keys[0].cooldownUntil]).toEqual([200, until]);
  });

  test('a hostile Retry-After against maxCooldownMs at its one-year bound: the key cools one year, the page renders', async () => {
    const gw = gateway(upstream.url, {}, { maxCooldownMs: YEAR }, (app) => app.get('/admin/keys', poolStatus()));
    upstream.behaviour = byKey(
      { [K0]: openai.rateLimited(chatBody.model, { 'retry-after': '9'.repeat(20), 'retry-after-ms': '9'.repeat(30) }) },
      ok(),
    );
    expect((await request(gw.app).post(CHAT).send(chatBody)).status).toBe(200);
    expect(gw.pool.snapshot()[0]!.models).toEqual([{ model: chatBody.model, cooldownUntil: gw.clock.time + YEAR }]);

    const html = await request(gw.app).get('/admin/keys?format=html');
    expect(html.status).toBe(200);
    expect(html.text).toContain(`<span data-until="${gw.clock.time + YEAR}">8760h 00m 00s</span>`);
  });
});
