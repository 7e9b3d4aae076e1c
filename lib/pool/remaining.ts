/**
 * Route ahead of the 429, the pool's side. Every answer says how many
 * requests its key (its organization, for that model) has left; the pool
 * passes a key over, without an upstream call, once that is used up, until the
 * limit resets. An answer's count was taken when its request was let in: the
 * requests sent to the same state after it (still in flight, or answered out
 * of order) take from it too. So each send is numbered per state, and an
 * answer's remaining count is lowered by the sends that followed its own
 * request: "2 left" with 2 more already on their way is none left. The sends
 * are counted per model too once the walk knows the request's model (it reads
 * it as soon as some key cools for one model): an answer's count for one model
 * is then lowered by that model's sends only. Sends whose model was not read
 * are counted for every model (too many rather than too few: a key is set
 * aside a little early, never late).
 */
import { entryKey } from './probes.js';

const MAX_STATES = 20_000;

interface Counter {
  /** Every send to the state. */
  sent: number;
  /** The sends whose model was not known. */
  unscoped: number;
  /** The sends per model scope, for the sends whose model was known. */
  scopes: Map<string, { sent: number }>;
}

/** A send, numbered per state (and per model, when known): what a later answer's remaining count is lowered by. */
export interface Sent {
  entity: string;
  seq: number;
  /** The model scope of the send; null when it was not read. */
  scope: string | undefined | null;
  scopeSeq: number;
  unscopedAt: number;
}

const MAX_SCOPES = 256;

/** Counters per state (a key's, or its group's) and model, made once and then only incremented: nothing allocated per send. */
export class SendCounters {
  private readonly counters = new Map<string, Counter>();

  /** Counts a send to `entity`, for `scope` when it is known (null: not read), into `sent` (the walk's own record, reused). */
  count(entity: string, scope: string | undefined | null, sent: Sent): void {
    let counter = this.counters.get(entity);
    if (counter === undefined) {
      if (this.counters.size >= MAX_STATES) this.counters.clear();
      this.counters.set(entity, (counter = { sent: 0, unscoped: 0, scopes: new Map() }));
    }
    sent.entity = entity;
    sent.seq = ++counter.sent;
    sent.scope = scope;
    sent.scopeSeq = 0;
    if (scope === null || scope === undefined) {
      if (scope === null) counter.unscoped++;
      sent.unscopedAt = counter.unscoped;
      return;
    }
    let scoped = counter.scopes.get(scope);
    if (scoped === undefined) {
      if (counter.scopes.size >= MAX_SCOPES) counter.scopes.clear();
      counter.scopes.set(scope, (scoped = { sent: 0 }));
    }
    sent.scopeSeq = ++scoped.sent;
    sent.unscopedAt = counter.unscoped;
  }

  /**
   * How many sends that take from the same limit as `sent` (for `scope`) followed it: those of its model
   * when every send since had a known model, else every send to the state.
   */
  since(sent: Sent, scope: string | undefined): number {
    const counter = this.counters.get(sent.entity);
    if (counter === undefined) return 0;
    if (scope !== undefined && sent.scope === scope && counter.unscoped === sent.unscopedAt) {
      const later = (counter.scopes.get(scope)?.sent ?? sent.scopeSeq) - sent.scopeSeq;
      return later > 0 ? later : 0;
    }
    return counter.sent > sent.seq ? counter.sent - sent.seq : 0;
  }
}

/** The cooldowns the pool set itself from remaining counts (state and scope -> until), for their reason in snapshots. */
export class AheadMarks {
  private readonly marks = new Map<string, number>();

  set(entity: string, scope: string | undefined, until: number, now: number): void {
    if (this.marks.size >= MAX_STATES) {
      for (const [entry, end] of this.marks) if (end <= now) this.marks.delete(entry);
      if (this.marks.size >= MAX_STATES) this.marks.clear();
    }
    this.marks.set(entryKey(entity, scope), until);
  }

  until(entity: string, scope: string | undefined): number | undefined {
    return this.marks.size === 0 ? undefined : this.marks.get(entryKey(entity, scope));
  }
}
