/**
 * What a RedisStateStore replica remembers about its own changes and the ones
 * it heard of, so that an older answer from Redis never undoes a newer change:
 * each entry's latest local write (with its stamp) and latest event, and the
 * writes Redis has not confirmed yet (replayed on reconnect).
 *
 * An entry is a state id for a key-wide state, or a state id and a model scope.
 */
import { scopedMember } from './redis-scripts.js';

/** A write kept for replay: which state, and whether an enable is among what Redis has not confirmed. */
export interface Pending {
  id: string;
  scope: string | undefined;
  reset: boolean;
}

/** A point in the log, to ask later which entries changed after it. */
export interface Checkpoint {
  written: number;
  heard: number;
}

export class ChangeLog {
  /** Writes Redis has not confirmed, by entry. */
  readonly pending = new Map<string, Pending>();
  private readonly lastWrite = new Map<string, { seq: number; stamp: number }>();
  private readonly lastHeard = new Map<string, number>();
  private writes = 0;
  private heard = 0;
  /** The newest stamp made or seen here: a change made after hearing of another is stamped after it. */
  private lastStamp = 0;

  /** A local write: its sequence number, and its stamp (a hybrid logical clock over Redis time as estimated here). */
  wrote(entry: string, redisTimeEstimate: number): { seq: number; stamp: number } {
    const write = { seq: ++this.writes, stamp: Math.max(Math.round(redisTimeEstimate), this.lastStamp + 1) };
    this.lastStamp = write.stamp;
    this.lastWrite.set(entry, write);
    return write;
  }

  /** The latest local write of an entry (seq 0: none). */
  latest(entry: string): { seq: number; stamp: number } {
    return this.lastWrite.get(entry) ?? { seq: 0, stamp: 0 };
  }

  /** An event from another replica. */
  heardOf(entry: string): void {
    this.lastHeard.set(entry, ++this.heard);
  }

  /** A stamp seen in an event or a reply: later local writes are stamped after it. */
  saw(stamp: number | undefined): void {
    if (stamp !== undefined && Number.isFinite(stamp) && stamp > this.lastStamp) this.lastStamp = stamp;
  }

  keep(entry: string, id: string, scope: string | undefined, enable: boolean): void {
    this.pending.set(entry, { id, scope, reset: enable || (this.pending.get(entry)?.reset ?? false) });
  }

  checkpoint(): Checkpoint {
    return { written: this.writes, heard: this.heard };
  }

  /** Neither written here, nor heard of, nor waiting for Redis since the checkpoint: an answer read then still holds. */
  untouchedSince(entry: string, { written, heard }: Checkpoint): boolean {
    return this.latest(entry).seq <= written && (this.lastHeard.get(entry) ?? 0) <= heard && !this.pending.has(entry);
  }
}

/** The entry a change is tracked under: the id for a key-wide state; the id and the scope for a scoped one. */
export function entryOf(id: string, scope: string | undefined): string {
  return scope === undefined ? id : `\u0000${scopedMember(id, scope)}`;
}
