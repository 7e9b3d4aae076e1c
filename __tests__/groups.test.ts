/**
 * Keys that share a bucket: a configured `group`, or the organization the
 * provider's answers name (`openai-organization`, `anthropic-organization-id`).
 * A rate limit (key x model) cools every key of the group; an empty account
 * takes the group out when the provider says it is the organization's; a pool
 * whose keys are all in one group gets one warning. Real answers and headers
 * from a mock upstream on 127.0.0.1, an injected clock.
 */
import type { Express } from 'express';
import request from 'supertest';
import { KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, K2, chatBody, gateway, useMockUpstream } from './support/gateway.js';
import { byKey, type Behaviour } from './support/mock-upstream.js';
import { anthropic, anthropicOk, openai, openaiError, openaiLimitHeaders, openaiOk, organizationOf } from './support/provider-answers.js';

const upstream = useMockUpstream();

const post = (app: Express, model = chatBody.model) =>
  request(app)
    .post(CHAT)
    .send({ ...chatBody, model });
const ORG_A = 'org-AcmeShared0000001';
const ORG_B = 'org-BetaOwn000000002';
/** Each key's answers name its organization: k0 and k1 share ORG_A, k2 has ORG_B. */
const orgs: Record<string, string> = { [K0]: ORG_A, [K1]: ORG_A, [K2]: ORG_B };
const limited = (model = 'gpt-4o-mini'): Behaviour =>
  openaiError(
    429,
    {
      message: `Rate limit reached for ${model} in organization ${ORG_A} on requests per min (RPM): Limit 3, Used 3, Requested 1.`,
      type: 'requests',
      code: 'rate_limit_exceeded',
    },
    { ...openaiLimitHeaders('1s', '20s'), 'openai-organization': ORG_A, 'retry-after': '20' },
  );
const okFrom: Behaviour = (req, res) => openaiOk({ by: req.key }, { organization: orgs[req.key!] })(req, res);

describe('a configured group', () => {
  test('a 429 on k0 cools k1 too (same group) for that model only; k2 (another group) answers; both come back together', async () => {
    const g = gateway(
      upstream.url,
      {},
      {
        keys: [
          { key: K0, group: 'acme' },
          { key: K1, group: 'acme' },
          { key: K2, group: 'beta' },
        ],
      },
    );
    upstream.behaviour = byKey({ [K0]: limited() }, okFrom);
    const res = await post(g.app);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ by: K2 });
    expect(upstream.keysSeen()).toEqual([K0, K2]); // k1 was never tried: its group is limited
    const until = g.clock.time + 20_000;
    expect(g.pool.snapshot()).toEqual([
      { id: 'key-0', hint: K0.slice(-4), state: 'available', models: [{ model: 'gpt-4o-mini', cooldownUntil: until }], group: 'acme' },
      { id: 'key-1', hint: K1.slice(-4), state: 'available', models: [{ model: 'gpt-4o-mini', cooldownUntil: until }], group: 'acme' },
      { id: 'key-2', hint: K2.slice(-4), state: 'available', group: 'beta' },
    ]);

    upstream.seen.length = 0;
    upstream.behaviour = okFrom;
    await post(g.app, 'gpt-4o'); // another model: the group is not limited on it
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K2]);

    g.clock.advance(20_000);
    upstream.seen.length = 0;
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0]);
  });

  test('the rateLimited event names the group; enable(id) puts the whole group back', async () => {
    const g = gateway(upstream.url, {}, { keys: [{ key: K0, group: 'acme' }, { key: K1, group: 'acme' }, K2] });
    const events: unknown[] = [];
    g.pool.on('rateLimited', (e) => events.push(e));
    upstream.behaviour = byKey({ [K0]: limited() }, okFrom);
    await post(g.app);
    expect(events).toEqual([
      expect.objectContaining({ id: 'key-0', group: 'acme', model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 20_000 }),
    ]);
    g.pool.enable('key-0');
    expect(g.pool.snapshot().map((k) => k.models)).toEqual([undefined, undefined, undefined]);
  });

  test('a group name is checked like the rest of a key entry, and never printed with the key', () => {
    expect(() => new KeyPool([{ key: K0, group: '' }])).toThrow(/index 0 has a "group" that is not a non-empty string of at most 128/);
    expect(() => new KeyPool([{ key: K0, group: 'a b' }])).toThrow(/"group"/);
    expect(() => new KeyPool([{ key: K0, group: 'x'.repeat(129) }])).toThrow(/"group"/);
    expect(() => new KeyPool([{ key: K0, group: 5 as never }])).toThrow(/"group" .*\(5\)/);
    try {
      new KeyPool([{ key: K0, group: '\n' }]);
    } catch (error) {
      expect(String(error)).not.toContain(K0);
    }
  });
});

describe('a learned group', () => {
  test("the first answer that names a key's organization puts it in that group; keys of one organization then cool together", async () => {
    const g = gateway(upstream.url, {}, { strategy: 'round-robin' });
    const grouped: unknown[] = [];
    g.pool.on('grouped', (e) => grouped.push(e));
    upstream.behaviour = okFrom;
    for (let i = 0; i < 3; i++) await post(g.app);
    expect(g.pool.snapshot().map((k) => k.group)).toEqual([ORG_A, ORG_A, ORG_B]);
    expect(grouped).toEqual([
      { id: 'key-0', hint: K0.slice(-4), group: ORG_A },
      { id: 'key-1', hint: K1.slice(-4), group: ORG_A },
      { id: 'key-2', hint: K2.slice(-4), group: ORG_B },
    ]);

    // The walk starts at k0 (round-robin): its 429 is ORG_A's, so k1 is passed over without an upstream call.
    upstream.seen.length = 0;
    upstream.behaviour = byKey({ [K0]: limited() }, okFrom);
    const res = await post(g.app);
    expect(res.body).toEqual({ by: K2 });
    expect(upstream.keysSeen()).toEqual([K0, K2]);
    // Before: the same pool without groups would have sent k1 the next 429 too.
  });

  test('an Anthropic key learns its group from anthropic-organization-id', async () => {
    const g = gateway(upstream.url, { provider: 'anthropic' }, { strategy: 'round-robin' });
    const org = '3f6c1b8e-2d4a-4c7b-9e1f-5a0d8c2b7e61';
    upstream.behaviour = (req, res) =>
      anthropicOk({ type: 'message', by: req.key }, { organization: req.key === K2 ? 'other-org' : org })(req, res);
    const send = () =>
      request(g.app)
        .post('/v1/messages')
        .set('anthropic-version', '2023-06-01')
        .send({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [] });
    for (let i = 0; i < 3; i++) await send();
    expect(g.pool.snapshot().map((k) => k.group)).toEqual([org, org, 'other-org']);

    upstream.seen.length = 0;
    upstream.behaviour = byKey({ [K0]: anthropic.rateLimited({ 'retry-after': '15', 'anthropic-organization-id': org }) }, (req, res) =>
      anthropicOk({ by: req.key })(req, res),
    );
    await send(); // round-robin: starts at k0
    expect(upstream.keysSeen()).toEqual([K0, K2]);
  });

  test('a later answer naming another organization does not move the key; a configured group wins over any answer', async () => {
    const g = gateway(upstream.url, {}, { keys: [K0, { key: K1, group: 'mine' }, K2] });
    upstream.behaviour = (req, res) => openaiOk({}, { organization: 'org-first' })(req, res);
    await post(g.app);
    upstream.behaviour = (req, res) => openaiOk({}, { organization: 'org-second' })(req, res);
    await post(g.app);
    g.pool.markDisabled('key-0');
    await post(g.app); // k1 answers, naming org-second
    g.pool.enable('key-0');
    expect(g.pool.snapshot().map((k) => k.group)).toEqual(['org-first', 'mine', undefined]);
  });

  test('hostile client: its own OpenAI-Organization header cannot move a key between groups, even through an upstream that echoes it', async () => {
    const g = gateway(upstream.url);
    // An upstream that reflects the request's OpenAI-Organization into its answer (a proxy gone wrong).
    upstream.behaviour = (req, res) =>
      openaiOk({}, { organization: (req.headers['openai-organization'] as string | undefined) ?? organizationOf(req.key) })(req, res);
    await request(g.app).post(CHAT).set('openai-organization', 'org-attacker').send(chatBody);
    expect(upstream.seen[0]!.headers['openai-organization']).toBeUndefined(); // never forwarded with a pool key
    expect(g.pool.snapshot()[0]!.group).toBe(organizationOf(K0));
  });

  test('a group name that is not a plain token (too long, spaces) teaches nothing', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = (req, res) => openaiOk({}, { organization: 'x'.repeat(200) })(req, res);
    await post(g.app);
    upstream.behaviour = (req, res) => openaiOk({}, { organization: 'has spaces in it' })(req, res);
    await post(g.app);
    expect(g.pool.snapshot()[0]!.group).toBeUndefined();
  });
});

describe('an empty account', () => {
  test("insufficient_quota (billing is the organization's) takes every key of the group out; a project budget only its key", async () => {
    const g = gateway(upstream.url, {}, { keys: [{ key: K0, group: 'acme' }, { key: K1, group: 'acme' }, K2] });
    upstream.behaviour = byKey({ [K0]: openai.insufficientQuota() }, okFrom);
    expect((await post(g.app)).body).toEqual({ by: K2 });
    expect(upstream.keysSeen()).toEqual([K0, K2]);
    expect(g.pool.snapshot().map((k) => [k.state, k.disabledReason])).toEqual([
      ['disabled', 'quota'],
      ['disabled', 'quota'],
      ['available', undefined],
    ]);
    g.pool.enable('key-1'); // topped up: the group is back
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);

    upstream.seen.length = 0;
    upstream.behaviour = byKey(
      {
        [K0]: openaiError(429, {
          message: 'You have exceeded the budget set for this project.',
          type: 'insufficient_quota',
          code: 'project_spend_limit_exceeded',
        }),
      },
      okFrom,
    );
    expect((await post(g.app)).body).toEqual({ by: K1 });
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
  });

  test('quotaCooldownMs brings the whole group back, with one enabled event per key', async () => {
    const g = gateway(upstream.url, {}, { keys: [{ key: K0, group: 'acme' }, { key: K1, group: 'acme' }, K2], quotaCooldownMs: 60_000 });
    const enabled: string[] = [];
    g.pool.on('enabled', (e) => enabled.push(`${e.id} ${e.reason}`));
    upstream.behaviour = byKey({ [K0]: openai.insufficientQuota() }, okFrom);
    await post(g.app);
    g.clock.advance(60_000);
    expect(g.pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
    expect(enabled).toEqual(['key-0 quotaCooldown', 'key-1 quotaCooldown']);
  });
});

describe('one warning when failover adds no capacity', () => {
  test('at start-up, for configured groups', () => {
    const warnings: string[] = [];
    new KeyPool({
      keys: [
        { key: K0, group: 'acme' },
        { key: K1, group: 'acme' },
      ],
      logger: { warn: (m) => warnings.push(m) },
    });
    new KeyPool({
      keys: [
        { key: K0, group: 'acme' },
        { key: K1, group: 'beta' },
      ],
      logger: { warn: (m) => warnings.push(m) },
    });
    new KeyPool({ keys: [{ key: K0, group: 'acme' }], logger: { warn: (m) => warnings.push(m) } });
    expect(warnings).toEqual([
      expect.stringMatching(/all 2 keys are in one group \("acme"\).*failover between these keys adds no capacity/),
    ]);
  });

  test('at first learning, once', async () => {
    const warnings: string[] = [];
    const g = gateway(upstream.url, {}, { strategy: 'round-robin', logger: { warn: (m) => warnings.push(m) } });
    upstream.behaviour = (req, res) => openaiOk({}, { organization: ORG_A })(req, res);
    for (let i = 0; i < 6; i++) await post(g.app);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`all 3 keys are in one group \\("${ORG_A}"\\)`));
    for (const key of [K0, K1, K2]) expect(warnings[0]).not.toContain(key);
  });
});
