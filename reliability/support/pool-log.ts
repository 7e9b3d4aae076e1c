import { AsyncLocalStorage } from 'node:async_hooks';
import type { KeyPool, KeyStateName } from '../../lib/index.js';
import type { RecordingClock } from './common.js';

/**
 * A log of what the gateway's pool knew and did, in the order it happened
 * (JavaScript runs one thing at a time, so `seq` is a total order):
 * every key a walker handed out (with the request it was for and the pool's
 * own view of that key at that instant), every walk that ran out of keys,
 * and every mark (cooldown, disable, enable).
 */
export type PoolEvent =
  | { seq: number; t: number; kind: 'choose'; req: string | undefined; keyId: string; snapshotState: KeyStateName | undefined }
  | { seq: number; t: number; kind: 'exhausted'; req: string | undefined }
  | { seq: number; t: number; kind: 'cooldown'; req: string | undefined; keyId: string; ms: number }
  | { seq: number; t: number; kind: 'disable'; req: string | undefined; keyId: string }
  | { seq: number; t: number; kind: 'enable'; req: string | undefined; keyId: string };

/** The request a piece of gateway code is running for (set around the middleware call). */
export const requestContext = new AsyncLocalStorage<string>();

export function logPool(pool: KeyPool, clock: RecordingClock): PoolEvent[] {
  const events: PoolEvent[] = [];
  let seq = 0;
  const req = (): string | undefined => requestContext.getStore();

  const walker = pool.walker.bind(pool);
  pool.walker = (...args) => {
    const w = walker(...args);
    const next = w.next.bind(w);
    w.next = () => {
      const key = next();
      // The walker read the clock once; clock.last is the instant it decided at.
      const t = clock.last;
      if (key) {
        const state = pool.snapshot().find((k) => k.id === key.id)?.state;
        clock.last = t; // snapshot() read the clock again; keep the walker's instant
        events.push({ seq: seq++, t, kind: 'choose', req: req(), keyId: key.id, snapshotState: state });
      } else {
        events.push({ seq: seq++, t, kind: 'exhausted', req: req() });
      }
      return key;
    };
    return w;
  };

  // The wrappers pass every argument on (the pool's events carry the details). The walk marks through
  // markAnswer (the key that got the answer); code of the user's marks through the public methods.
  // Every request of these runs asks for one model, so a cooldown for it blocks like a key-wide one.
  const markAnswer = pool.markAnswer.bind(pool);
  pool.markAnswer = (key, mark, ...rest) => {
    markAnswer(key, mark, ...rest);
    if ('cooldownMs' in mark) events.push({ seq: seq++, t: clock.last, kind: 'cooldown', req: req(), keyId: key.id, ms: mark.cooldownMs });
    else events.push({ seq: seq++, t: clock.last, kind: 'disable', req: req(), keyId: key.id });
  };
  const markRateLimited = pool.markRateLimited.bind(pool);
  pool.markRateLimited = (id, ms, ...rest) => {
    markRateLimited(id, ms, ...rest);
    events.push({ seq: seq++, t: clock.last, kind: 'cooldown', req: req(), keyId: id, ms });
  };
  const markDisabled = pool.markDisabled.bind(pool);
  pool.markDisabled = (id, ...rest) => {
    markDisabled(id, ...rest);
    events.push({ seq: seq++, t: clock.last, kind: 'disable', req: req(), keyId: id });
  };
  const enable = pool.enable.bind(pool);
  pool.enable = (id) => {
    clock.now();
    enable(id);
    events.push({ seq: seq++, t: clock.last, kind: 'enable', req: req(), keyId: id });
  };
  return events;
}

export interface ModelViolation {
  event: PoolEvent;
  why: string;
}

/**
 * Replays the log against an independent model of the pool's rules (a
 * cooldown lasts until ceil(t + ms), a longer one wins, a disabled key ignores
 * cooldowns and stays out until enabled) and reports every key handed out
 * while the model says the pool already knew it was cooling or disabled, and
 * every exhausted walk whose answer (429 + Retry-After, or 502) the model
 * predicts differently from what the client got (`answers`, by request).
 * A 429's cooldown may be lengthened by up to `jitter` of itself (the pool's
 * cooldownJitter): no key may be handed out before the unjittered end, and a
 * Retry-After may be as long as the jittered one.
 */
export function checkAgainstModel(
  events: readonly PoolEvent[],
  keyIds: readonly string[],
  exhaustedAnswer?: (req: string) => { status: number; retryAfter: number | undefined } | undefined,
  jitter = 0.1,
): { violations: ModelViolation[]; checkedChoices: number; checkedExhaustions: number } {
  const state = new Map<string, { until: number; untilJittered: number; disabled: boolean }>(
    keyIds.map((id) => [id, { until: 0, untilJittered: 0, disabled: false }]),
  );
  const violations: ModelViolation[] = [];
  let checkedChoices = 0;
  let checkedExhaustions = 0;
  for (const event of events) {
    switch (event.kind) {
      case 'choose': {
        const s = state.get(event.keyId)!;
        checkedChoices++;
        if (s.disabled) violations.push({ event, why: 'chosen while disabled' });
        else if (s.until > event.t) violations.push({ event, why: `chosen while cooling (${s.until - event.t} ms left)` });
        if (event.snapshotState !== 'available') violations.push({ event, why: `pool.snapshot() said ${event.snapshotState}` });
        break;
      }
      case 'cooldown': {
        const s = state.get(event.keyId)!;
        if (!s.disabled) {
          s.until = Math.max(s.until, Math.ceil(event.t + event.ms));
          s.untilJittered = Math.max(s.untilJittered, Math.ceil(event.t + event.ms * (1 + jitter)));
        }
        break;
      }
      case 'disable':
        state.set(event.keyId, { until: 0, untilJittered: 0, disabled: true });
        break;
      case 'enable':
        state.set(event.keyId, { until: 0, untilJittered: 0, disabled: false });
        break;
      case 'exhausted': {
        if (!exhaustedAnswer || event.req === undefined) break;
        const answer = exhaustedAnswer(event.req);
        if (!answer) break; // the walk ended on a relayed answer or timeout, checked elsewhere
        checkedExhaustions++;
        const enabled = [...state.values()].filter((s) => !s.disabled);
        if (enabled.length === 0) {
          if (answer.status !== 502) violations.push({ event, why: `every key disabled, client got ${answer.status}` });
        } else {
          const smallest = Math.min(...enabled.map((s) => Math.max(0, s.until - event.t)));
          const smallestJittered = Math.min(...enabled.map((s) => Math.max(0, s.untilJittered - event.t)));
          const expected = Math.max(1, Math.ceil(smallest / 1000));
          const longest = Math.max(1, Math.ceil(smallestJittered / 1000));
          // pool.exhaustion() reads the clock once more, a moment later: a second boundary may pass.
          const retryAfter = answer.retryAfter ?? -1;
          const ok = answer.status === 429 && retryAfter >= Math.max(1, expected - 1) && retryAfter <= longest;
          if (!ok)
            violations.push({
              event,
              why: `expected 429 with Retry-After ${expected}${longest > expected ? `..${longest}` : ''}, client got ${answer.status} / ${answer.retryAfter}`,
            });
        }
        break;
      }
    }
  }
  return { violations, checkedChoices, checkedExhaustions };
}
