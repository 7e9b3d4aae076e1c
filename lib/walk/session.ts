/**
 * One walk's part in avoiding the 429, beside the attempt loop (walkPool):
 * its budget (`maxAttempts`, `maxWalkMs`), the probe it may be sending, and
 * what each answer teaches the pool besides its verdict: the key's group (the
 * organization the answer names) and how much of the key's limits is left.
 * walkPool calls it at a few points: for the next key (`next`), before an
 * attempt (`admit`), with each answer's head (`heard`), with each verdict
 * (`judged`), when an attempt gets no answer (`failed`). It also reports each attempt
 * (`startAttempt`, `report`) as an 'attempt' event, for observers.
 */
import { performance } from 'node:perf_hooks';
import type { AttemptOutcome } from '../pool/events.js';
import type { FailoverAction, FailureCause } from '../providers/causes.js';
import type { KeyPool, PoolKey } from '../pool/key-pool.js';
import type { Sent } from '../pool/lessons.js';
import type { Probe } from '../pool/probes.js';
import type { KeyWalker } from '../pool/walker.js';
import type { ResponseHeaders } from '../upstream/rate-limit-headers.js';
import { accountOf, lowTokens, remainingRequests, requestsResetMs } from '../upstream/remaining-headers.js';

/** How much one client request may cost upstream. Undefined: no bound (every available key, each within timeoutMs). */
export interface WalkBudget {
  readonly maxAttempts: number | undefined;
  readonly maxWalkMs: number | undefined;
}

export const NO_BUDGET: WalkBudget = { maxAttempts: undefined, maxWalkMs: undefined };

/** What one attempt may still take: the rest of the walk's time, when it has a bound. */
export interface AttemptLimits {
  timeoutMs?: number;
}

export class WalkSession {
  /** The attempts sent so far; the one being sent is number `attempts` (1 for the walk's first). */
  private attempts = 0;
  /** Someone listened to 'attempt' events as the walk began: only then are attempts timed and reported. */
  private readonly observed: boolean;
  private attemptStarted = 0;
  private readonly startedAt: number;
  private probe: Probe | undefined;
  /** The latest send, numbered (see remaining.ts); seq 0 until the first. */
  private readonly sent: Sent = { entity: '', seq: 0, scope: null, scopeSeq: 0, unscopedAt: 0 };
  /** Set when the walk stopped with keys left because its budget was spent. */
  spent: 'maxAttempts' | 'maxWalkMs' | undefined;

  constructor(
    private readonly pool: KeyPool,
    readonly walker: KeyWalker,
    private readonly budget: WalkBudget,
    private readonly requestId: string | undefined,
  ) {
    this.startedAt = budget.maxWalkMs === undefined ? 0 : performance.now();
    this.observed = pool.listenerCount('attempt') > 0;
  }

  /** The next key to try, or undefined: none left, or the budget is spent. */
  next(): PoolKey | undefined {
    const { maxAttempts, maxWalkMs } = this.budget;
    if (maxAttempts !== undefined && this.attempts >= maxAttempts) this.spent = 'maxAttempts';
    else if (maxWalkMs !== undefined && performance.now() - this.startedAt >= maxWalkMs) this.spent = 'maxWalkMs';
    return this.spent === undefined ? this.walker.next() : undefined;
  }

  /**
   * Before an attempt with `key`: false when the key is to be passed over after all (it is a probe,
   * and another replica holds the probe's lease). Counts the attempt, and the send against the key's state.
   */
  async admit(key: PoolKey): Promise<boolean> {
    const probe = this.walker.probe;
    if (probe !== undefined && !(await this.pool.confirmProbe(probe, this.requestId))) return false;
    this.probe = probe;
    this.attempts++;
    this.pool.lessons.countSend(key, this.walker.scopeIfRead(), this.sent);
    return true;
  }

  /** The admitted attempt is sent now (for its 'attempt' event's duration). */
  startAttempt(): void {
    if (this.observed) this.attemptStarted = performance.now();
  }

  /** The current attempt's 'attempt' event, when someone listens; only then is the model read. */
  report(key: PoolKey, outcome: AttemptOutcome, status?: number, cause?: FailureCause, inStream?: boolean): void {
    if (!this.observed) return;
    const model = this.walker.scope();
    const { requestId } = this;
    this.pool.emit('attempt', {
      id: key.id,
      hint: key.hint,
      attempt: this.attempts,
      outcome,
      durationMs: performance.now() - this.attemptStarted,
      ...(status === undefined ? {} : { status }),
      ...(cause === undefined ? {} : { cause }),
      ...(model === undefined ? {} : { model }),
      ...(inStream ? { inStream: true } : {}),
      ...(requestId === undefined ? {} : { requestId }),
    });
  }

  /** What the next attempt may take, within the walk's `maxWalkMs`. */
  limits(): AttemptLimits | undefined {
    const { maxWalkMs } = this.budget;
    if (maxWalkMs === undefined) return undefined;
    return { timeoutMs: Math.max(1, Math.ceil(maxWalkMs - (performance.now() - this.startedAt))) };
  }

  /** An answer's head came: the organization it names is the key's group (learned before the verdict marks anything). */
  heard(key: PoolKey, headers: ResponseHeaders): void {
    const account = accountOf(headers);
    if (account !== undefined) this.pool.lessons.learnGroup(key, account);
  }

  /**
   * The verdict on `key`'s answer ('pending': an unrecognised 401 that another key's answer will settle).
   * Settles the probe; an answer that marked nothing says how much of the key's limits is left.
   */
  judged(key: PoolKey, headers: ResponseHeaders, action: FailoverAction | 'pending'): void {
    const marked = action === 'cooldown' || action === 'disable';
    if (!marked && action !== 'pending') this.lookAhead(key, headers);
    const probe = this.probe;
    if (probe === undefined) return;
    this.probe = undefined;
    this.pool.settleProbe(
      probe,
      action === 'cooldown' ? 'cooled' : marked || action === 'pending' ? 'released' : 'healthy',
      this.requestId,
    );
  }

  /** The attempt got no answer (network, timeout, the client left): its probe, if any, is given back. */
  failed(): void {
    const probe = this.probe;
    this.probe = undefined;
    if (probe !== undefined) this.pool.settleProbe(probe, 'released', this.requestId);
  }

  /**
   * Route ahead of the 429: when the requests left, less the sends that followed this one, are none, the
   * key (its group) is passed over until the limit resets; likewise below `minRemainingTokens` tokens.
   * Reads two headers and allocates nothing while nothing is low.
   */
  private lookAhead(key: PoolKey, headers: ResponseHeaders): void {
    const { pool } = this;
    const remaining = remainingRequests(headers);
    // Cheap first: with more left than sends made since (to the state, every model), nothing to read further.
    if (remaining !== undefined && this.sent.seq > 0 && remaining <= pool.lessons.sentSince(this.sent, undefined)) {
      const scope = this.walker.scope();
      if (remaining <= pool.lessons.sentSince(this.sent, scope)) {
        const resetMs = requestsResetMs(headers, pool.now());
        if (resetMs !== undefined)
          pool.lessons.markDepleted(key, resetMs, scope, { limit: 'requests', remaining, requestId: this.requestId });
      }
    }
    if (pool.minRemainingTokens === 0) return;
    const low = lowTokens(headers, pool.minRemainingTokens, pool.now());
    if (low !== undefined) {
      pool.lessons.markDepleted(key, low.resetMs, this.walker.scope(), {
        limit: low.limit,
        remaining: low.remaining,
        requestId: this.requestId,
      });
    }
  }
}
