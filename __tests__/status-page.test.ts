/**
 * The status page in a real headless Chromium (Debian's, through playwright-core).
 * The pool's clock is the FakeClock, frozen; only the page's own countdown runs
 * in real time, for a second or two. The page's refreshes are held back while
 * the countdown is read, then let through to check that the page follows the
 * pool.
 */
import type { NextFunction, Request, Response } from 'express';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, Locator, Page, Route } from 'playwright-core';
import request from 'supertest';
import { STATE_COLOURS } from '../lib/observe/status-page.js';
import { poolStatus } from '../lib/index.js';
import { colourDistance, dominantColour, hexToRgb, launchChromium } from './support/chromium.js';
import { CHAT, K0, K1, KEYS, chatBody, closeGateways, gateway, listen, type Gateway } from './support/gateway.js';
import { MockUpstream, byKey, ok, type Behaviour } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';
import { needs } from './support/services.js';

// Skipped, with one line at the end of the run, where Chromium is missing (a failure in CI mode).
const { test, beforeAll, afterAll } = needs('chromium');

/** The provider's answer with a Retry-After header added. */
const withRetryAfter =
  (answer: Behaviour, seconds: string): Behaviour =>
  (req, res) => {
    res.setHeader('retry-after', seconds);
    return answer(req, res);
  };

/** Where the full-page screenshot goes, to look at by hand. */
const SCREENSHOT = path.join(tmpdir(), 'express-key-failover', 'status-page.png');

const ADMIN = { username: 'admin', password: 'admin-password-for-tests' };
const REFRESH = /[?&]format=json(&|$)/;

let upstream: MockUpstream;
let gw: Gateway;
let server: { url: string; close: () => Promise<void> };
let browser: Browser | undefined;
let page: Page;
let adminRevoked = false;
const held: Route[] = [];
const browserErrors: string[] = [];

/** The user's own auth in front of the status page: HTTP Basic here. */
function requireAdmin(req: Request, res: Response, next: NextFunction): void {
  const expected = `Basic ${Buffer.from(`${ADMIN.username}:${ADMIN.password}`).toString('base64')}`;
  if (req.headers.authorization !== expected) {
    res.status(401).set('www-authenticate', 'Basic realm="admin"').send('authentication required');
  } else if (adminRevoked) {
    res.status(403).send('forbidden');
  } else {
    next();
  }
}

const seconds = (text: string | null): number => {
  const match = /^(?:(\d+)h )?(?:(\d+)m )?(\d+)s$/.exec(text ?? '');
  if (!match) throw new Error(`not a countdown: ${JSON.stringify(text)}`);
  return Number(match[1] ?? 0) * 3600 + Number(match[2] ?? 0) * 60 + Number(match[3]);
};

const countdown = (id: string) => page.locator(`tr[data-key-id="${id}"] td.remaining`);
/** The element's text once it differs from `old`: the page's countdown ticks at least once a second. */
async function nextText(locator: Locator, old: string | null, ms = 3000): Promise<string | null> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
    const text = await locator.textContent();
    if (text !== old) return text;
  }
  throw new Error(`the text stayed ${JSON.stringify(old)} for ${ms} ms`);
}
const badge = (id: string) => page.locator(`tr[data-key-id="${id}"] .badge`);

beforeAll(async () => {
  upstream = await MockUpstream.start();
  // An operator who would rather try an out-of-money key again after a while than wait for enable().
  gw = gateway(upstream.url, { failover: { insufficient_quota: 'cooldown' } }, {}, (app) =>
    app.get('/admin/keys', requireAdmin, poolStatus()),
  );
  // key-0: out of quota, cooling 10 minutes for every model; key-1: revoked; key-2 serves.
  upstream.behaviour = byKey({ [K0]: withRetryAfter(openai.insufficientQuota(), '600'), [K1]: openai.invalidKey() }, ok());
  expect((await request(gw.app).post(CHAT).send(chatBody)).status).toBe(200);
  // Then key-2 hits gpt-4o's limit for 5 minutes: it still serves every other model.
  upstream.behaviour = openai.rateLimited('gpt-4o', { 'retry-after': '300' });
  expect(
    (
      await request(gw.app)
        .post(CHAT)
        .send({ ...chatBody, model: 'gpt-4o' })
    ).status,
  ).toBe(429);
  server = await listen(gw.app);

  browser = await launchChromium();
  const context = await browser.newContext({ httpCredentials: ADMIN, viewport: { width: 760, height: 320 } });
  page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') browserErrors.push(message.text());
  });
  page.on('pageerror', (error) => browserErrors.push(error.message));
  await page.route(REFRESH, (route) => {
    held.push(route);
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await closeGateways();
  await upstream?.close();
});

test('the page renders each key with its state; the CSP lets its own script run', async () => {
  const response = await page.goto(`${server.url}/admin/keys`);
  expect(response?.status()).toBe(200);
  expect(response?.headers()['content-type']).toBe('text/html; charset=utf-8');
  expect(response?.headers()['content-security-policy']).toMatch(/script-src 'sha256-/);
  await page.waitForSelector('tr[data-key-id="key-2"]');

  expect(
    await page
      .locator('tr[data-key-id]')
      .evaluateAll((rows) => rows.map((r) => [r.getAttribute('data-key-id'), r.getAttribute('data-state')])),
  ).toEqual([
    ['key-0', 'cooling'],
    ['key-1', 'disabled'],
    ['key-2', 'available'],
  ]);
  expect(await badge('key-0').textContent()).toBe('cooling');
  expect(await page.locator('tr[data-key-id="key-0"] td.hint').textContent()).toBe(`…${K0.slice(-4)}`);
  // Each key's group, learned from the organization its answers name.
  expect(await page.locator('tr[data-key-id] td.group').allTextContents()).toEqual([K0, K1, KEYS[2]].map((k) => organizationOf(k)));
  expect(await countdown('key-1').textContent()).toBe('until enabled');
  expect(
    await page.locator('tr[data-key-id="key-2"] td.models .model').evaluateAll((els) => els.map((e) => e.getAttribute('data-model'))),
  ).toEqual(['gpt-4o']);
  expect(seconds(await page.locator('tr[data-key-id="key-2"] td.models [data-until]').textContent())).toBeGreaterThan(280);
  expect(await page.locator('tr[data-key-id="key-0"] td.models').textContent()).toBe('');
  const html = await page.content();
  for (const key of KEYS) expect(html).not.toContain(key);
});

test('the screenshot shows the cooling key amber, the available key green, the disabled key red', async () => {
  for (const [id, state] of [
    ['key-0', 'cooling'],
    ['key-1', 'disabled'],
    ['key-2', 'available'],
  ] as const) {
    const { rgb, share } = dominantColour(await badge(id).screenshot());
    const expected = hexToRgb(STATE_COLOURS[state]);
    expect({ id, rgb, close: colourDistance(rgb, expected) <= 8, mostlyBadge: share > 0.5 }).toEqual({
      id,
      rgb: expect.any(Array),
      close: true,
      mostlyBadge: true,
    });
  }
  // The three colours are far apart, so that a wrong badge could not pass for another.
  const [a, c, d] = (['available', 'cooling', 'disabled'] as const).map((s) => hexToRgb(STATE_COLOURS[s]));
  expect(Math.min(colourDistance(a!, c!), colourDistance(a!, d!), colourDistance(c!, d!))).toBeGreaterThan(80);

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
});

test('the countdown runs on the page clock, against the server time (months away from the browser clock)', async () => {
  const first = await countdown('key-0').textContent();
  // The pool clock is frozen at the 429: 10 minutes left, less what the page has been open.
  expect(seconds(first)).toBeLessThanOrEqual(600);
  expect(seconds(first)).toBeGreaterThan(580);
  const second = await nextText(countdown('key-0'), first);
  expect(seconds(second)).toBeLessThan(seconds(first)); // every refresh is held back: the page's own tick did this
});

test('the page refreshes from ?format=json behind the same auth and follows the pool', async () => {
  gw.pool.enable('key-1');
  gw.clock.advance(120_000);
  // key-2's answers said gpt-4o-mini has nothing left for 40 s: the pool's own skip, shown as such.
  const walker = gw.pool.walker();
  let key2 = walker.next();
  while (key2 !== undefined && key2.id !== 'key-2') key2 = walker.next();
  if (key2 === undefined) throw new Error('key-2 is not available');
  gw.pool.lessons.markDepleted(key2, 40_000, 'gpt-4o-mini', { limit: 'requests', remaining: 0 });
  await Promise.all(held.splice(0).map((route) => route.continue()));
  await page.unroute(REFRESH);

  await page.waitForSelector('tr[data-key-id="key-1"][data-state="available"]', { timeout: 5000 });
  expect(seconds(await countdown('key-0').textContent())).toBeLessThanOrEqual(480);
  expect(seconds(await countdown('key-0').textContent())).toBeGreaterThan(470);
  expect(await page.locator('#counts').textContent()).toBe('2 available · 1 cooling · 0 disabled');
  expect(await page.locator('tr[data-key-id="key-2"] [data-reason="remaining"]').textContent()).toMatch(
    /^gpt-4o-mini \d+s \(limit used up\)$/,
  );
  // The rows the page's script built from the JSON carry the group too.
  expect(await page.locator('tr[data-key-id] td.group').allTextContents()).toEqual([K0, K1, KEYS[2]].map((k) => organizationOf(k)));
  expect(await page.locator('#note').textContent()).toMatch(/^Updated .*; refreshes every 2 s\.$/);
});

test('a refresh that fails says so and keeps the last state, still counting down', async () => {
  adminRevoked = true;
  await page.waitForSelector('#note.stale', { timeout: 5000 });
  expect(await page.locator('#note').textContent()).toBe('Refresh failed (HTTP 403); showing the last state, counting down.');
  expect(await page.locator('tr[data-key-id="key-0"]').getAttribute('data-state')).toBe('cooling');
  const before = await countdown('key-0').textContent();
  expect(seconds(await nextText(countdown('key-0'), before))).toBeLessThan(seconds(before));
  adminRevoked = false;
});

test('nothing was refused or broken in the browser (CSP violations are console errors)', () => {
  expect(browserErrors.filter((e) => !/status of 403/.test(e))).toEqual([]);
});

describe('a deadline past the year 275760', () => {
  // Reachable with a direct mark (or a store holding a wild value); headers alone stop at maxCooldownMs, at most a year.
  test('the page still renders and refreshes, and the browser reports no error', async () => {
    const far = gateway(upstream.url, {}, {}, (app) => app.get('/far', poolStatus()));
    far.pool.markRateLimited('key-0', Number.MAX_SAFE_INTEGER);
    far.pool.markRateLimited('key-1', 90_000);
    const farServer = await listen(far.app);
    const context = await browser!.newContext({ viewport: { width: 760, height: 320 } });
    const farPage = await context.newPage();
    const errors: string[] = [];
    farPage.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') errors.push(message.text());
    });
    farPage.on('pageerror', (error) => errors.push(error.message));
    try {
      const response = await farPage.goto(`${farServer.url}/far?format=html`);
      expect(response?.status()).toBe(200);
      const cell = farPage.locator('tr[data-key-id="key-0"] td.remaining');
      expect(await cell.textContent()).toMatch(/^\d{6,}h \d\dm \d\ds$/);
      expect(await cell.getAttribute('title')).toBeNull();
      expect(await farPage.locator('tr[data-key-id="key-1"] td.remaining').textContent()).toMatch(/^1m 30s$|^1m 2\ds$/);

      // A refresh re-renders every row from the JSON: it must not fail on the far deadline either.
      await farPage.locator('#note', { hasText: /^Updated / }).waitFor({ timeout: 6000 });
      expect(await farPage.locator('#note').getAttribute('class')).toBe('');
      expect(await cell.textContent()).toMatch(/^\d{6,}h \d\dm \d\ds$/);
      expect(await farPage.locator('tr[data-key-id="key-1"] td.remaining').getAttribute('title')).toBe(
        new Date(far.pool.snapshot()[1]!.cooldownUntil!).toISOString(),
      );
    } finally {
      await context.close();
      await farServer.close();
    }
    expect(errors).toEqual([]);
  });
});
