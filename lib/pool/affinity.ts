/**
 * Which key created an upstream object. Objects live in the project that
 * created them: a Responses follow-up (`previous_response_id`), a file, a
 * batch, a vector store or a conversation made with key A answers 404 on a key
 * of another project. The walk remembers the key that created each object (by
 * its state id, never its value) and sends a request that names the object to
 * that key.
 *
 * Bounded in count (the oldest goes first) and in time (each entry ends at its
 * `until`): the ids come from upstream answers to requests of every client, so
 * that no client can grow this without limit; at worst it pushes older entries
 * out, and a request naming one of those walks the pool as it would without affinity.
 */

export const DEFAULT_MAX_OBJECTS = 10_000;
/** Object ids as the providers make them (`resp_...`, `file-...`, `batch_...`, `msgbatch_...`): bounded, plain. */
export const OBJECT_ID = /^[A-Za-z0-9][\w-]{2,127}$/;

export class ObjectOwners {
  /** object id -> [owner state id, until]; insertion order is age order, for the bound. */
  private readonly owners = new Map<string, { id: string; until: number }>();

  constructor(
    private readonly max: number,
    private readonly now: () => number,
  ) {}

  get size(): number {
    return this.owners.size;
  }

  /** The state id of the key that created `object`, while the entry lasts. */
  get(object: string): string | undefined {
    const entry = this.owners.get(object);
    if (entry === undefined) return undefined;
    if (entry.until > this.now()) return entry.id;
    this.owners.delete(object);
    return undefined;
  }

  /** Remembers (or renews) the owner of `object` until `until` (epoch ms); past the bound the oldest goes. */
  set(object: string, id: string, until: number): void {
    if (!OBJECT_ID.test(object) || !(until > this.now())) return;
    this.owners.delete(object); // re-inserted: the newest goes last
    this.owners.set(object, { id, until });
    while (this.owners.size > this.max) this.owners.delete(this.owners.keys().next().value!);
  }

  /** Every entry that has not ended, oldest first. */
  entries(): { object: string; id: string; until: number }[] {
    const now = this.now();
    const out: { object: string; id: string; until: number }[] = [];
    for (const [object, { id, until }] of this.owners) if (until > now) out.push({ object, id, until });
    return out;
  }
}
