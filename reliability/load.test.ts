import express from 'express';
import diagnostics from 'node:diagnostics_channel';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { inspect } from 'node:util';
import { Registry } from 'prom-client';
import { keyFailover, KeyPool, poolStatus, type KeyFailoverMiddleware, type KeyPoolEvents } from '../lib/index.js';
import { poolMetrics, type PoolMetrics } from '../lib/metrics.js';
import { RETRY_STYLES } from './support/chaos.js';
import { ChaosProcess, type ChaosDump } from './support/chaos-remote.js';
import {
  CHAT,
  Capture,
  KEYS,
  KEY_IDS,
  keyIdOf,
  RESPONSES,
  RecordingClock,
  listen,
  prng,
  runConcurrently,
  send,
  sleep,
  writeFigures,
  type ClientResult,
  type Listening,
} from './support/common.js';
import { errorCode } from './support/gateway.js';
import { checkAgainstModel, logPool, requestContext, type PoolEvent } from './support/pool-log.js';
import { sentBody, type Seen } from './support/upstream.js';

/**
 * Load: 2 000 requests, 100 at a time, half of them streaming, through a
 * gateway whose five keys flip between 200, 429 (five styles of delay
 * header), 401 and slow answers (some past timeoutMs). Every request must get
 * exactly one complete answer consistent with what the upstream said; no key
 * may be handed out while the pool already knew it was cooling or disabled;
 * no request may make more upstream attempts than there are keys.
 */

const TOTAL = 2000;
const CONCURRENCY = 100;
const TIMEOUT_MS = 1500;
const DEFAULT_COOLDOWN_MS = 3000;
const SEED = 20260109;

let chaos: ChaosProcess;
let gatewayServer: Listening;
let middleware: KeyFailoverMiddleware;
let pool: KeyPool;
let events: PoolEvent[];
let metrics: PoolMetrics;
const registry = new Registry();
/** The pool's own events (what a user would log or export), by name. */
const emitted: Record<string, unknown[]> = {};
const clock = new RecordingClock();
const capture = new Capture();
const warnings: string[] = [];
const results: ClientResult[] = [];
const finishes = new Map<string, number>();
const figures: Record<string, unknown> = { seed: SEED };
let failuresSeen = -1;

/**
 * When the gateway's undici client received each attempt's response head
 * (`<load id>/<key id>`): a 504 is right only for an attempt whose head the
 * gateway never got, however early the upstream sent it (two busy event loops
 * on a shared 2-core machine can delay it past timeoutMs).
 */
const headAtGateway = new Map<string, number>();
function onUndiciHeaders(message: unknown): void {
  const headers = (message as { request: { headers: string[] | string } }).request.headers;
  const list = Array.isArray(headers) ? headers : headers.split('\r\n').flatMap((line) => line.split(/: (.*)/s, 2));
  const value = (name: string): string | undefined => {
    const at = list.findIndex((h, k) => k % 2 === 0 && h.toLowerCase() === name);
    return at === -1 ? undefined : list[at + 1];
  };
  const key = value('authorization')?.replace(/^Bearer /, '');
  headAtGateway.set(`${value('x-load-id')}/${keyIdOf(key)}`, Date.now());
}

beforeAll(async () => {
  diagnostics.subscribe('undici:request:headers', onUndiciHeaders);
  pool = new KeyPool({ keys: [...KEYS], now: clock.now, defaultCooldownMs: DEFAULT_COOLDOWN_MS });
  events = logPool(pool, clock);
  for (const name of [
    'rateLimited',
    'disabled',
    'enabled',
    'failover',
    'exhausted',
    'attempt',
  ] as const satisfies (keyof KeyPoolEvents)[]) {
    emitted[name] = [];
    pool.on(name, (event: unknown) => void emitted[name]!.push(event));
  }
  metrics = poolMetrics(pool, { register: registry, poolName: 'load' });
  // The operator puts a key back as soon as the upstream takes it again.
  chaos = await ChaosProcess.start({ seed: SEED, beyondTimeoutMs: TIMEOUT_MS + 500 }, (i) => pool.enable(KEY_IDS[i]!));
  middleware = keyFailover({ target: chaos.url, pool, timeoutMs: TIMEOUT_MS, logger: { warn: (m) => void warnings.push(m) } });
  const app = express();
  app.use((req, res, next) => {
    const id = req.get('x-load-id') ?? '';
    res.on('finish', () => finishes.set(id, (finishes.get(id) ?? 0) + 1));
    requestContext.run(id, next);
  });
  app.get('/status', poolStatus({ pool }));
  app.use(middleware);
  gatewayServer = await listen(app);
});

afterAll(async () => {
  metrics?.stop();
  diagnostics.unsubscribe('undici:request:headers', onUndiciHeaders);
  await gatewayServer?.close();
  await middleware?.close();
  await chaos?.stop();
  writeFigures('load', { ...figures, failuresSeen });
});

/** The gateway's own error code, when the body is its OpenAI-shaped error. */
const gatewayError = (result: ClientResult): string | undefined => errorCode(result.body);

test('2 000 requests at 100 concurrent against a chaos upstream: one complete, consistent answer each', async () => {
  const random = prng(SEED + 1);
  const plan = Array.from({ length: TOTAL }, () => ({ stream: random() < 0.5, route: random() < 0.2 ? RESPONSES : CHAT }));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  // The status output, as an operator would read it during the run: JSON and the HTML page.
  let statusReads = 0;
  const stopSnapshots = setInterval(() => {
    const format = statusReads++ % 2 === 0 ? 'json' : 'html';
    void send(gatewayServer.url, { method: 'GET', path: `/status?format=${format}`, body: '' }).then((r) => {
      if (r.status !== 200) statusFailures.push(`status ${format}: ${r.status}`);
      capture.response(`status ${format}`, r);
    });
  }, 100);
  const statusFailures: string[] = [];
  const consoleSpies = (['log', 'warn', 'error', 'info', 'debug'] as const).map((m) =>
    jest.spyOn(console, m).mockImplementation((...args) => void capture.add(`console.${m}`, args.map(String).join(' '))),
  );
  const processWarnings: string[] = [];
  const onWarning = (w: Error): void => void processWarnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);

  let started = 0;
  const stopWatches: (() => void)[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const t0 = Date.now();
  chaos.start();
  try {
    await runConcurrently(TOTAL, CONCURRENCY, async (i) => {
      started++;
      // Storms: every key slow for 600 ms (so that slow answers, some past timeoutMs, are in every
      // run, whatever the flips did); every key rate-limited for a second; later every key revoked
      // until the pool has disabled them all and answered 502s for 300 ms, then the upstream takes them back.
      if (started === Math.floor(TOTAL * 0.1)) chaos.storm('slow', 600);
      if (started === Math.floor(TOTAL * 0.25)) chaos.storm('limited', 1000);
      if (started === Math.floor(TOTAL * 0.55)) {
        chaos.storm('revoked', 20_000);
        let allDisabledSince = 0;
        const watch = setInterval(() => {
          const allDisabled = pool.snapshot().every((k) => k.state === 'disabled');
          if (!allDisabled) allDisabledSince = 0;
          else if (!allDisabledSince) allDisabledSince = Date.now();
          else if (Date.now() - allDisabledSince >= 300) {
            clearInterval(watch);
            chaos.storm('ok', 0);
          }
        }, 20);
        stopWatches.push(() => clearInterval(watch));
      }
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const body = JSON.stringify({ model: 'gpt-4o-mini', stream: plan[i]!.stream, messages: [{ role: 'user', content: `request ${i}` }] });
      results[i] = await send(gatewayServer.url, {
        path: plan[i]!.route,
        agent,
        body,
        headers: { 'x-load-id': String(i), 'x-request-id': `load-${i}`, authorization: 'Bearer gateway-user-token' },
        deadlineMs: 30_000,
      });
      inFlight--;
      // A client told that every key is out waits before its next request: part of the Retry-After
      // (the run keeps some pressure on the pool while keys come back), or a moment after a 502.
      const r = results[i]!;
      if (r.status === 429) await sleep(Number(r.headers['retry-after'] ?? 1) * 1000 * (0.25 + 0.5 * random()));
      else if (r.status === 502) await sleep(100 + random() * 200);
    });
  } finally {
    stopWatches.forEach((stop) => stop());
    clearInterval(stopSnapshots);
    consoleSpies.forEach((s) => s.mockRestore());
    process.off('warning', onWarning);
    agent.destroy();
  }
  const seconds = (Date.now() - t0) / 1000;
  // Aborted upstream requests close a moment after the client's answer.
  let upstream: ChaosDump = await chaos.dump();
  for (const deadline = Date.now() + 5000; upstream.active > 0 && Date.now() < deadline;) upstream = await chaos.dump();
  loopDelay.disable();
  figures.eventLoopDelayMs = { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 };
  process.stdout.write(`[reliability] loop delay ${JSON.stringify(figures.eventLoopDelayMs)}\n`);

  results.forEach((r, i) => capture.response(`response ${i}`, r));
  capture.add('events', JSON.stringify(events));
  capture.add('pool', inspect(pool, { depth: 10, showHidden: true }));
  capture.add('final snapshot', JSON.stringify(pool.snapshot()));
  capture.add('warnings', warnings.join('\n'));
  for (const [name, list] of Object.entries(emitted)) capture.add(`pool events ${name}`, JSON.stringify(list));
  capture.add('metrics', await registry.metrics());

  // --- the checks; every one appends to `failures` -------------------------------
  const failures: string[] = [];
  const fail = (i: number | string, why: string): void => void failures.push(`request ${i}: ${why}`);

  const attemptsOf = new Map<string, Seen[]>();
  for (const seen of upstream.seen) {
    if (seen.loadId === undefined) failures.push(`upstream request #${seen.seq} without x-load-id`);
    else attemptsOf.set(seen.loadId, [...(attemptsOf.get(seen.loadId) ?? []), seen]);
    if (seen.keyId === undefined) failures.push(`upstream request #${seen.seq} carried a key that is not a pool key`);
    if (seen.url !== CHAT && seen.url !== RESPONSES) failures.push(`upstream request #${seen.seq} went to ${seen.url}`);
  }
  const eventsOf = new Map<string, PoolEvent[]>();
  for (const event of events) if (event.req !== undefined) eventsOf.set(event.req, [...(eventsOf.get(event.req) ?? []), event]);

  const headReachedGateway = (a: Seen): boolean => headAtGateway.has(`${a.loadId}/${a.keyId}`);
  // Heads the chaos sent in time that still reached the gateway after timeoutMs (a loaded machine).
  let unplannedLate = 0;
  const gaveUpOn = new Set<Seen>();

  const statusCounts: Record<string, number> = {};
  const attemptsHistogram: number[] = Array.from({ length: KEYS.length + 2 }, () => 0);
  let completeStreams = 0;
  let failedOver = 0;
  for (let i = 0; i < TOTAL; i++) {
    const id = String(i);
    const r = results[i]!;
    const attempts = attemptsOf.get(id) ?? [];
    const chosen = (eventsOf.get(id) ?? []).filter((e) => e.kind === 'choose').map((e) => (e as { keyId: string }).keyId);
    const code = gatewayError(r);
    statusCounts[`${r.status}${code ? ` ${code}` : ''}`] = (statusCounts[`${r.status}${code ? ` ${code}` : ''}`] ?? 0) + 1;
    attemptsHistogram[Math.min(attempts.length, KEYS.length + 1)]!++;
    if (attempts.length > 1) failedOver++;

    if (r.ended !== 'end') fail(i, `client saw ${r.ended} ${r.error ?? ''} (status ${r.status})`);
    if (finishes.get(id) !== 1) fail(i, `gateway finished ${finishes.get(id) ?? 0} responses`);
    if (attempts.length > pool.size) fail(i, `${attempts.length} upstream attempts for ${pool.size} keys`);
    const keyIds = attempts.map((a) => a.keyId);
    if (new Set(keyIds).size !== keyIds.length) fail(i, `a key tried twice: ${keyIds.join(',')}`);
    if (chosen.join(',') !== keyIds.join(',')) fail(i, `walker chose [${chosen.join(',')}] but upstream saw [${keyIds.join(',')}]`);
    if (attempts.some((a) => a.url !== plan[i]!.route)) fail(i, 'upstream path differs from the route the client used');
    attempts.slice(0, -1).forEach((a) => {
      if (a.status !== 429 && a.status !== 401) fail(i, `failed over after a ${a.status ?? 'missing'} answer`);
    });

    const last = attempts.at(-1);
    if (r.status === 504 && code === 'upstream_timeout') {
      // No head within timeoutMs: the upstream request was aborted.
      if (!last || headReachedGateway(last)) fail(i, `504 although the gateway got the upstream's ${last?.status} head`);
      else {
        gaveUpOn.add(last);
        if (last.note !== 'beyond-timeout') unplannedLate++;
        if (last.answeredAt === undefined && !last.closedEarly) fail(i, 'timed-out upstream request was not aborted');
      }
      if (r.ms < TIMEOUT_MS - 50) fail(i, `504 after ${r.ms} ms, before timeoutMs`);
    } else if (last && last.status === undefined) {
      fail(i, `upstream never answered, client got ${r.status} ${code}`);
    } else if (last?.status === 200) {
      const expected = sentBody(last);
      if (r.status !== 200) fail(i, `upstream said 200, client got ${r.status}`);
      else if (!last.finished) fail(i, 'upstream 200 cut short');
      else if (!r.body.equals(expected)) fail(i, `body differs (${r.body.length} of ${expected.length} bytes)`);
      else if (plan[i]!.stream) {
        if (!r.body.toString().endsWith('data: [DONE]\n\n') || r.headers['content-type'] !== 'text/event-stream')
          fail(i, 'stream incomplete');
        else completeStreams++;
      } else if (r.headers['content-length'] !== String(expected.length)) fail(i, 'content-length differs');
    } else {
      // Every key tried failed over, or none was available: the pool's own answer.
      const exhausted = (eventsOf.get(id) ?? []).some((e) => e.kind === 'exhausted');
      if (!exhausted) fail(i, 'walk did not end in exhaustion');
      if (r.status === 429) {
        if (code !== 'rate_limit_exceeded' || !/^[1-9]\d*$/.test(String(r.headers['retry-after'])))
          fail(i, `bad 429: ${code} ${r.headers['retry-after']}`);
      } else if (r.status === 502) {
        if (code !== 'all_keys_unauthorized') fail(i, `bad 502: ${code}`);
      } else fail(i, `exhausted walk answered ${r.status}`);
    }
    if (attempts.some((a) => a.headers.authorization === 'Bearer gateway-user-token'))
      fail(i, "client's own Authorization reached the upstream");
  }

  // The pool never handed out a key it knew to be cooling or disabled (independent model replay),
  // and each exhausted walk gave the answer (and Retry-After) the model predicts.
  const model = checkAgainstModel(events, KEY_IDS, (req) => {
    const r = results[Number(req)];
    const code = r && gatewayError(r);
    if (!r || (code !== 'rate_limit_exceeded' && code !== 'all_keys_unauthorized')) return undefined;
    return { status: r.status, retryAfter: r.headers['retry-after'] === undefined ? undefined : Number(r.headers['retry-after']) };
  });
  model.violations.forEach((v) => failures.push(`model: ${v.why} (${JSON.stringify(v.event)})`));

  // Each 429 and 401 the upstream sent was marked, with the delay it asked for; and no key was
  // handed out after that mark before the upstream's own deadline (answer time + its delay),
  // unless the operator re-enabled it in between. Requests chosen before the mark were in flight.
  const marks = events.filter((e) => e.kind === 'cooldown' || e.kind === 'disable');
  const markOf = (seen: Seen): PoolEvent | undefined => marks.find((e) => e.req === seen.loadId && 'keyId' in e && e.keyId === seen.keyId);
  let checkedLater = 0;
  for (const seen of upstream.seen) {
    if ((seen.status !== 429 && seen.status !== 401) || gaveUpOn.has(seen)) continue;
    const mark = markOf(seen);
    if (!mark) {
      failures.push(`upstream ${seen.status} to ${seen.loadId}/${seen.keyId} was never marked`);
      continue;
    }
    if (seen.status === 401 && mark.kind !== 'disable') failures.push(`401 marked as ${mark.kind}`);
    if (seen.status === 429) {
      if (mark.kind !== 'cooldown') {
        failures.push(`429 marked as ${mark.kind}`);
        continue;
      }
      const expected = expectedCooldown(seen, mark.t);
      if (mark.ms < expected.min || mark.ms > expected.max)
        failures.push(`429 ${seen.retryStyle}: cooled ${mark.ms} ms, expected ${expected.min}..${expected.max}`);
    }
    // The upstream's own deadline: its date, or its delay counted from when it answered.
    const deadline =
      seen.status === 401
        ? Infinity
        : (seen.retryDate ?? (seen.retryAfterMs !== undefined ? seen.answeredAt! + seen.retryAfterMs : -Infinity));
    for (const later of events) {
      if (later.seq <= mark.seq || !('keyId' in later) || later.keyId !== seen.keyId) continue;
      if (later.kind === 'enable') break;
      if (later.kind === 'choose') {
        checkedLater++;
        if (later.t < deadline) {
          failures.push(
            `${seen.keyId} handed out ${deadline - later.t} ms before the upstream's ${seen.status} deadline (request ${later.req})`,
          );
        }
        break; // past the first later choice, the key was available again: nothing more to check for this mark
      }
    }
  }
  const cooldownMarks = events.filter((e) => e.kind === 'cooldown').length;
  const disableMarks = events.filter((e) => e.kind === 'disable').length;
  const upstream429 = upstream.seen.filter((s) => s.status === 429).length;
  const upstream401 = upstream.seen.filter((s) => s.status === 401).length;
  const read429 = upstream.seen.filter((s) => s.status === 429 && !gaveUpOn.has(s)).length;
  const read401 = upstream.seen.filter((s) => s.status === 401 && !gaveUpOn.has(s)).length;
  if (cooldownMarks !== read429) failures.push(`${cooldownMarks} cooldown marks for ${read429} upstream 429s the gateway read`);
  if (disableMarks !== read401) failures.push(`${disableMarks} disable marks for ${read401} upstream 401s the gateway read`);
  if (upstream.active !== 0) failures.push(`${upstream.active} upstream answers still open`);
  failures.push(...statusFailures);
  // The pool's own 'attempt' events (by x-request-id) tell the same story as the upstream's log.
  const attemptEvents = new Map<string, string[]>();
  for (const e of emitted['attempt'] as { requestId?: string; id: string }[]) {
    attemptEvents.set(e.requestId ?? '?', [...(attemptEvents.get(e.requestId ?? '?') ?? []), e.id]);
  }
  for (const [id, attempts] of attemptsOf) {
    const fromEvents = attemptEvents.get(`load-${id}`) ?? [];
    if (fromEvents.join(',') !== attempts.map((a) => a.keyId).join(','))
      failures.push(`request ${id}: attempt events [${fromEvents}] differ from upstream log`);
  }
  if (processWarnings.length) failures.push(...processWarnings);

  Object.assign(figures, {
    requests: TOTAL,
    concurrency: CONCURRENCY,
    maxInFlight,
    seconds,
    requestsPerSecond: Math.round(TOTAL / seconds),
    streaming: plan.filter((p) => p.stream).length,
    completeStreams,
    clientStatuses: statusCounts,
    upstreamAttempts: upstream.seen.length,
    faultsInjected: upstream429 + upstream401 + upstream.counts.slow! + upstream.counts.storms!,
    attemptsPerRequest: Object.fromEntries(attemptsHistogram.map((n, k) => [k, n]).filter(([, n]) => n)),
    failedOver,
    upstream: { ...upstream.counts, answers429: upstream429, answers401: upstream401, retryStyles: upstream.retryStyles, unplannedLate },
    pool: {
      choices: model.checkedChoices,
      exhaustionsChecked: model.checkedExhaustions,
      cooldownMarks,
      disableMarks,
      enables: events.filter((e) => e.kind === 'enable').length,
      laterChoicesChecked: checkedLater,
    },
    failures: failures.slice(0, 20),
  });
  failuresSeen = failures.length;
  process.stdout.write(
    `[reliability] load: ${JSON.stringify({ requests: TOTAL, seconds, upstreamAttempts: upstream.seen.length, statuses: statusCounts, failures: failures.length })}\n`,
  );

  expect(failures.slice(0, 20)).toEqual([]);
  // The run exercised what it claims to.
  expect(results.filter(Boolean)).toHaveLength(TOTAL);
  // Each retry style at least once (below); how many 429s beyond that depends on cooldowns on the real clock (8 in one CI run, 100 and more on an idle machine).
  expect(upstream429).toBeGreaterThanOrEqual(RETRY_STYLES.length);
  // Revocations come on the chaos upstream's own random schedule, and a key is disabled at its first 401 read:
  // how many more arrive is how many requests were already in flight to it (5 in one CI run, against > 5 before).
  // That every 401 read was marked a disable is checked above, and the 502 of a pool with every key revoked below.
  expect(upstream401).toBeGreaterThan(0);
  for (const style of RETRY_STYLES) expect(upstream.retryStyles[style]).toBeGreaterThan(0);
  expect(upstream.counts.slow).toBeGreaterThan(20);
  expect(upstream.counts.beyondTimeout).toBeGreaterThan(0);
  expect(upstream.counts.recoveries).toBeGreaterThan(0);
  expect(statusCounts['429 rate_limit_exceeded']).toBeGreaterThan(0);
  expect(statusCounts['502 all_keys_unauthorized']).toBeGreaterThan(0);
  expect(statusCounts['504 upstream_timeout']).toBeGreaterThan(0);
  expect(completeStreams).toBeGreaterThan(TOTAL / 8);
  // How many requests fail over depends on how many keys are still available when a 429 lands, and the
  // cooldowns run on the real clock: 121 on an idle machine, 15 in a CI run on a loaded one (the pool
  // cooled for most of its 8 s). Each failover's correctness is checked per request above; this says only
  // that the scenario exercised it.
  expect(failedOver).toBeGreaterThan(0);
  expect(model.checkedChoices).toBe(upstream.seen.length);
  expect(maxInFlight).toBe(CONCURRENCY);
});

/** The cooldown the gateway must derive from a 429's headers (pool bounds: 1 s .. 1 h). */
function expectedCooldown(seen: Seen, markedAt: number): { min: number; max: number } {
  const floor = (ms: number): number => Math.max(1000, ms);
  switch (seen.retryStyle) {
    case 'retry-after':
    case 'retry-after-ms':
    case 'x-ratelimit-reset':
      return { min: floor(seen.retryAfterMs!), max: floor(seen.retryAfterMs!) };
    case 'http-date': {
      // Read against the gateway's clock, some time between the answer and the mark.
      const date = seen.retryDate!;
      return { min: floor(date - markedAt), max: floor(date - seen.answeredAt!) };
    }
    default:
      return { min: DEFAULT_COOLDOWN_MS, max: DEFAULT_COOLDOWN_MS };
  }
}

test('secrets: nothing the load run let out contains a key value', () => {
  expect(capture.count).toBeGreaterThan(TOTAL);
  figures.secretScan = { items: capture.count, bytes: capture.bytes, hits: 0 };
  const hits = capture.findKeys();
  figures.secretScan = { items: capture.count, bytes: capture.bytes, hits: hits.length };
  expect(hits).toEqual([]);
});
