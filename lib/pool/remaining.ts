/**
 * Route ahead of the 429, the pool's side. Every answer says how many
 * requests its key (its organization, for that model) has left; the pool
 * passes a key over, without an upstream call, once that is used up, until the
 * limit resets. An answer's count was taken when its request was let in: the
 * requests sent to the same state after it (still in flight, or answered out
 * of order) take from it too. So each send is numbered per state, and an
 * answer's remaining count is lowered by the sends that followed its own
 * request: "2 left" with 2 more already on their way is none left. The count
 * is per state, every model together, which lowers it more than needed when
 * several models share a key: the key is set aside a little early, never late.
 */
import { entryKey } from './probes.js';

const MAX_STATES = 20_000;

/** One counter per state (a key's, or its group's), made once and then only incremented: nothing allocated per send. */
export class SendCounters {
  private readonly counters = new Map<string, { sent: number }>();

  /** Counts a send to `entity`; its number. */
  count(entity: string): number {
    let counter = this.counters.get(entity);
    if (counter === undefined) {
      if (this.counters.size >= MAX_STATES) this.counters.clear();
      this.counters.set(entity, (counter = { sent: 0 }));
    }
    return ++counter.sent;
  }

  /** How many sends to `entity` followed the one numbered `seq`. */
  since(entity: string, seq: number): number {
    const sent = this.counters.get(entity)?.sent ?? seq;
    return sent > seq ? sent - seq : 0;
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
