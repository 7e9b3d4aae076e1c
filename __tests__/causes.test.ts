/**
 * The cause table: every row answered with the provider's own body and headers,
 * asserting the keys the upstream saw in order, what the client got, and the
 * pool after (injected clock).
 */
import type { Express } from 'express';
import request from 'supertest';
import { gzipSync } from 'node:zlib';
import { CHAT, K0, K1, K2, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { rawPost } from './support/client.js';
import { byKey, ok, type Behaviour } from './support/mock-upstream.js';
import { ORG, anthropic, anthropicLimitHeaders, oneOrganization, openai, openaiError, organizationOf } from './support/provider-answers.js';

const upstream = useMockUpstream();

const MESSAGES = '/v1/messages';
const post = (app: Express, body: object = chatBody) => request(app).post(CHAT).send(body);
const postMessages = (app: Express, model = 'claude-sonnet-4-5') =>
  request(app)
    .post(MESSAGES)
    .set('anthropic-version', '2023-06-01')
    .send({ model, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
const states = (g: { pool: { snapshot(): { state: string }[] } }) => g.pool.snapshot().map((k) => k.state);

describe('OpenAI: key invalid or revoked disables the key for every model', () => {
  test.each([
    ['invalid_api_key', openai.invalidKey()],
    ['account_deactivated', openai.accountDeactivated()],
    ['access_terminated', openai.accessTerminated()],
  ])('401 %s on k0: k0 disabled (auth), k1 answers; later requests, any model, skip k0', async (_code, answer) => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: answer }, ok({ by: 'k1' }));

    const res = await post(g.app);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ by: 'k1' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'disabled',
      disabledReason: 'auth',
      group: organizationOf(K0),
    });

    g.clock.advance(24 * 3600_000);
    await post(g.app, { ...chatBody, model: 'gpt-4.1' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K1]);
  });
});

describe('OpenAI: account out of money takes the key out until enable() or quotaCooldownMs', () => {
  test.each([
    ['insufficient_quota', openai.insufficientQuota()],
    ['billing_not_active', openai.billingNotActive()],
    ['credit_balance_exhausted', openai.creditBalanceExhausted()],
  ])('429 %s on k0: k0 out (quota), still out 10 minutes later, back on enable()', async (_code, answer) => {
    const g = gateway(upstream.url);
    const disabled: unknown[] = [];
    g.pool.on('disabled', (e) => disabled.push(e));
    upstream.behaviour = byKey({ [K0]: answer }, ok());

    expect((await post(g.app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'disabled',
      disabledReason: 'quota',
      group: organizationOf(K0),
    });
    // Billing is the organization's: the key's group is out (one key of it here).
    expect(disabled).toEqual([
      { id: 'key-0', hint: K0.slice(-4), reason: 'quota', group: organizationOf(K0), status: 429, cause: 'insufficient_quota' },
    ]);

    g.clock.advance(10 * 60_000);
    expect((await post(g.app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1, K1]);
    expect(g.pool.snapshot()[0]!.state).toBe('disabled');

    g.pool.enable('key-0');
    upstream.behaviour = ok();
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K1, K1, K0]);
  });

  test('quotaCooldownMs brings an out-of-money key back by itself, with its own enabled reason', async () => {
    const g = gateway(upstream.url, {}, { quotaCooldownMs: 3_600_000, authCooldownMs: 60_000 });
    const enabled: unknown[] = [];
    g.pool.on('enabled', (e) => enabled.push(e));
    upstream.behaviour = byKey({ [K0]: openai.insufficientQuota() }, ok());
    await post(g.app);
    expect(g.pool.snapshot()[0]).toMatchObject({ state: 'disabled', disabledReason: 'quota', disabledUntil: g.clock.time + 3_600_000 });

    g.clock.advance(3_599_999);
    expect(states(g)[0]).toBe('disabled');
    g.clock.advance(1);
    expect(states(g)[0]).toBe('available');
    expect(enabled).toEqual([{ id: 'key-0', hint: K0.slice(-4), reason: 'quotaCooldown' }]);
  });

  test('every key out of money: 502 all_keys_out_of_quota, and no upstream call for the next request', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = openai.insufficientQuota();
    const res = await post(g.app);
    expect(res.status).toBe(502);
    expect(res.body.error).toMatchObject({ type: 'insufficient_quota', code: 'all_keys_out_of_quota' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect((await post(g.app)).status).toBe(502);
    expect(upstream.seen).toHaveLength(3);
  });
});

describe('OpenAI: a rate limit cools the key for the request model only', () => {
  test('429 rate_limit_exceeded for gpt-4o: k0 cools for gpt-4o for the reset the headers give', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '20', ...limitHeaders() }) }, ok());

    const res = await post(g.app, { ...chatBody, model: 'gpt-4o' });
    expect(res.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'available',
      models: [{ model: 'gpt-4o', cooldownUntil: g.clock.time + 20_000 }],
      group: organizationOf(K0),
    });
  });

  test('a 429 whose body has no code is a rate limit too', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.rateLimitedNoCode({ 'retry-after': '7' }) }, ok());
    await post(g.app);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 7_000 }]);
  });

  test('503 slow_down (this organization sends too fast) cools the key like a rate limit', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.slowDown() }, ok());
    expect((await post(g.app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 30_000 }]);
  });
});

describe('OpenAI: the request is at fault, not the key: no mark, next key, none left: the last answer', () => {
  test.each<[string, Behaviour, number]>([
    ['429 Request too large', openai.tooLarge(), 429],
    ['401 mismatched_organization', openai.mismatchedOrganization(), 401],
    ['401 mismatched_project', openai.mismatchedProject(), 401],
    ['401 missing_scope', openai.missingScope(), 401],
    ['403 unsupported_country_region_territory', openai.unsupportedRegion(), 403],
    ['403 model not allowed for the project', openai.modelNotAllowed(), 403],
    ['404 model_not_found', openai.modelNotFound(), 404],
  ])(
    '%s from two keys of one account: the second ends the walk, relayed, nothing marked, next request on k0',
    async (_name, answer, code) => {
      const g = gateway(upstream.url);
      const marks: string[] = [];
      for (const event of ['rateLimited', 'disabled'] as const) g.pool.on(event, () => marks.push(event));
      upstream.behaviour = oneOrganization(answer); // keys of one organization

      const res = await post(g.app);
      expect(res.status).toBe(code);
      expect(res.headers['x-request-id']).toMatch(/^req_/);
      expect(upstream.keysSeen()).toEqual([K0, K1]); // a third key of the account would say it again, for the whole body
      expect(res.body.error.message).toBeTruthy();
      expect(g.pool.snapshot()).toEqual(
        g.pool.ids().map((id, i) => ({ id, hint: [K0, K1, K2][i]!.slice(-4), state: 'available', ...(i < 2 ? { group: ORG } : {}) })),
      );
      expect(marks).toEqual([]);

      upstream.behaviour = ok();
      expect((await post(g.app)).status).toBe(200);
      expect(upstream.keysSeen().at(-1)).toBe(K0);
    },
  );

  test('answers that name two projects (or two organizations) are two accounts: the walk goes on to the third key', async () => {
    const g = gateway(upstream.url);
    const noAccess = (project: string): Behaviour =>
      openaiError(403, {
        message: `Project \`${project}\` does not have access to model \`gpt-4o\``,
        type: 'invalid_request_error',
        code: 'model_not_found',
      });
    upstream.behaviour = byKey({ [K0]: noAccess('proj_Aa11Bb22Cc33'), [K1]: noAccess('proj_Dd44Ee55Ff66') }, ok({ by: 'k2' }));
    expect((await post(g.app)).body).toEqual({ by: 'k2' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);

    upstream.reset();
    const tooLarge = (org: string): Behaviour =>
      openaiError(
        429,
        {
          message: `Request too large for gpt-4o in organization ${org} on tokens per min (TPM): Limit 30000, Requested 36055.`,
          type: 'tokens',
          code: 'rate_limit_exceeded',
        },
        { 'openai-organization': org },
      );
    upstream.behaviour = byKey({ [K0]: tooLarge('org-Aa11Bb22Cc33'), [K1]: tooLarge('org-Dd44Ee55Ff66') }, ok({ by: 'k2' }));
    expect((await post(g.app)).body).toEqual({ by: 'k2' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('keys configured with their own organization are two accounts, whatever the answers name', async () => {
    const g = gateway(
      upstream.url,
      {},
      {
        keys: [
          { key: K0, organization: 'org-Aa11Bb22Cc33' },
          { key: K1, organization: 'org-Dd44Ee55Ff66' },
          { key: K2, organization: 'org-Gg77Hh88Ii99' },
        ],
      },
    );
    upstream.behaviour = openai.modelNotFound();
    expect((await post(g.app)).status).toBe(404);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
  });

  test('another key (another organization) may allow what one refused: k0 too large, k1 answers', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.tooLarge() }, ok({ by: 'k1' }));
    const res = await post(g.app);
    expect(res.body).toEqual({ by: 'k1' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });
});

describe('an unrecognised 401: the key is out only once another key answers the same request differently', () => {
  test('k0 gives an unknown 401, k1 answers: k0 is disabled', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.unknown401() }, ok({ by: 'k1' }));
    expect((await post(g.app)).body).toEqual({ by: 'k1' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(states(g)).toEqual(['disabled', 'available', 'available']);
  });

  test('every key gives the same unknown 401: the walk stops at the second, relays it, and marks nothing', async () => {
    const g = gateway(upstream.url);
    const events: string[] = [];
    for (const event of ['disabled', 'enabled', 'failover'] as const) g.pool.on(event, () => events.push(event));
    upstream.behaviour = openai.unknown401();

    const res = await post(g.app);
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('ip_not_authorized');
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
    expect(events).toEqual([]);

    // Repeating the request cannot drain the pool one key at a time.
    for (let i = 0; i < 5; i++) expect((await post(g.app)).status).toBe(401);
    expect(upstream.keysSeen()).toEqual([K0, K1, K0, K1, K0, K1, K0, K1, K0, K1, K0, K1]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('the only key left gives an unknown 401: relayed, and the key stays (nothing could confirm it)', async () => {
    const g = gateway(upstream.url);
    g.pool.markDisabled('key-1');
    g.pool.markDisabled('key-2');
    upstream.behaviour = openai.unknown401();
    const res = await post(g.app);
    expect(res.status).toBe(401);
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(states(g)).toEqual(['available', 'disabled', 'disabled']);
  });
});

describe('OpenAI: overloaded is the provider, not the key', () => {
  test('503 is relayed from k0 as it is, no other key tried, nothing marked', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = openai.overloaded();
    const res = await post(g.app);
    expect(res.status).toBe(503);
    expect(res.body.error.message).toBe('The server is overloaded or not ready yet.');
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });
});

describe('Anthropic', () => {
  const anthropicGateway = (poolOptions = {}) => gateway(upstream.url, { provider: 'anthropic' }, poolOptions);

  test('401 authentication_error: k0 disabled (auth), k1 answers', async () => {
    const g = anthropicGateway();
    upstream.behaviour = byKey({ [K0]: anthropic.invalidKey() }, ok({ type: 'message' }));
    expect((await postMessages(g.app)).body).toEqual({ type: 'message' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]).toMatchObject({ state: 'disabled', disabledReason: 'auth' });
  });

  test.each<[string, Behaviour]>([
    ['429 enforced_spend_limit_reached', anthropic.spendLimit()],
    ['400 "You have reached your specified API usage limits"', anthropic.usageLimits()],
    ['400 credit balance too low', anthropic.creditTooLow()],
    ['402 billing_error', anthropic.billing()],
  ])('%s: k0 out for want of money, k1 answers', async (_name, answer) => {
    const g = anthropicGateway();
    upstream.behaviour = byKey({ [K0]: answer }, ok({ type: 'message' }));
    expect((await postMessages(g.app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]).toMatchObject({ state: 'disabled', disabledReason: 'quota' });
  });

  test('429 rate_limit_error: k0 cools for that model, from retry-after; another model still uses k0', async () => {
    const g = anthropicGateway();
    const reset = new Date(g.clock.time + 40_000);
    upstream.behaviour = byKey({ [K0]: anthropic.rateLimited(anthropicLimitHeaders(reset, 20)) }, ok({ type: 'message' }));
    expect((await postMessages(g.app, 'claude-sonnet-4-5')).status).toBe(200);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'claude-sonnet-4-5', cooldownUntil: g.clock.time + 20_000 }]);

    upstream.behaviour = ok({ type: 'message' });
    await postMessages(g.app, 'claude-haiku-4-5');
    await postMessages(g.app, 'claude-sonnet-4-5');
    expect(upstream.keysSeen()).toEqual([K0, K1, K0, K1]);
  });

  test.each<[string, Behaviour, number]>([
    ['403 permission_error', anthropic.permission(), 403],
    ['404 not_found_error for the model', anthropic.modelNotFound(), 404],
  ])('%s from two keys of one organization: the second answer relayed, nothing marked', async (_name, answer, code) => {
    const g = anthropicGateway();
    upstream.behaviour = oneOrganization(answer);
    const res = await postMessages(g.app);
    expect(res.status).toBe(code);
    expect(res.body.type).toBe('error');
    expect(res.headers['request-id']).toBe(res.body.request_id);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('529 overloaded_error is relayed from k0, nothing marked', async () => {
    const g = anthropicGateway();
    upstream.behaviour = anthropic.overloaded();
    const res = await postMessages(g.app);
    expect(res.status).toBe(529);
    expect(res.body.error).toEqual({ type: 'overloaded_error', message: 'Overloaded' });
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });
});

describe('reading failing bodies', () => {
  test('a gzip-compressed error body is told by its cause and relayed byte for byte, still compressed', async () => {
    const g = gateway(upstream.url);
    const body = gzipSync(
      JSON.stringify({
        error: {
          message: 'OpenAI-Organization header should match organization for API key',
          type: 'invalid_request_error',
          param: null,
          code: 'mismatched_organization',
        },
      }),
    );
    upstream.behaviour = (_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length });
      res.end(body);
    };
    const server = await listen(g.app);
    const res = await rawPost(`${server.url}${CHAT}`, chatBody, { 'accept-encoding': 'gzip' }).finally(() => server.close());
    expect(res.status).toBe(401);
    expect(res.headers['content-encoding']).toBe('gzip');
    expect(res.body.equals(body)).toBe(true);
    expect(upstream.keysSeen()).toEqual([K0, K1]); // request_not_allowed, twice the same: the walk ends, none marked
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('a success is never read by the gateway: a 200 that looks like an error goes through as it is, from k0', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = ok({ error: { type: 'insufficient_quota', code: 'insufficient_quota', message: 'x' } });
    const res = await post(g.app);
    expect(res.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('an error body that is not JSON falls back on the status: a 429 of HTML is still a rate limit', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey(
      {
        [K0]: (_req, res) => {
          res.writeHead(429, { 'content-type': 'text/html', 'retry-after': '9' });
          res.end('<html><body>Too Many Requests</body></html>');
        },
      },
      ok(),
    );
    await post(g.app);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 9_000 }]);
  });
});

describe('the failover option takes causes, and a cause entry wins over a status entry', () => {
  test("{ insufficient_quota: 'cooldown' }: an out-of-money key cools (for every model) and comes back", async () => {
    const g = gateway(upstream.url, { failover: { insufficient_quota: 'cooldown' } }, { defaultCooldownMs: 300_000 });
    upstream.behaviour = byKey({ [K0]: openai.insufficientQuota() }, ok());
    await post(g.app);
    expect(g.pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'cooling',
      cooldownUntil: g.clock.time + 300_000,
      group: organizationOf(K0),
    });
  });

  test("{ overloaded: 'skip' }: a 529 fails over to the next key", async () => {
    const g = gateway(upstream.url, { provider: 'anthropic', failover: { overloaded: 'skip' } });
    upstream.behaviour = byKey({ [K0]: anthropic.overloaded() }, ok({ type: 'message' }));
    expect((await postMessages(g.app)).body).toEqual({ type: 'message' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
  });

  test("{ 429: 'skip', rate_limited: 'cooldown' }: the cause entry decides for a rate limit, the status entry for the rest", async () => {
    const g = gateway(upstream.url, { failover: { 429: 'skip', rate_limited: 'cooldown' } });
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '5' }), [K1]: openai.insufficientQuota() }, ok());
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    // k0: rate_limited -> its cause entry (cooldown). k1: insufficient_quota has no entry -> the 429 entry (skip), not the default.
    expect(g.pool.snapshot().map((k) => [k.state, k.models?.length ?? 0])).toEqual([
      ['available', 1],
      ['available', 0],
      ['available', 0],
    ]);
  });

  test("{ 401: 'skip' } (a status entry) wins over the default of a cause: an invalid key is only skipped", async () => {
    const g = gateway(upstream.url, { failover: { 401: 'skip' } });
    upstream.behaviour = byKey({ [K0]: openai.invalidKey() }, ok());
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(states(g)).toEqual(['available', 'available', 'available']);
  });

  test('an unknown key in the failover map is refused, naming the causes', () => {
    expect(() => gateway(upstream.url, { failover: { quota: 'cooldown' } as never })).toThrow(
      /option "failover" has the key "quota"; keys must be HTTP error statuses from 400 to 599 or causes \(invalid_key, insufficient_quota, rate_limited, request_too_large, request_not_allowed, overloaded, unauthorized\)/,
    );
  });
});

function limitHeaders(): Record<string, string> {
  return { 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '20s' };
}
