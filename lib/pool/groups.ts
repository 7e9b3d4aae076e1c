/**
 * Keys that share a bucket. OpenAI meters an organization (or project),
 * Anthropic an organization (or workspace), not a key: two keys of one
 * organization share one rate limit and one balance, and failing over between
 * them only adds 429s. A key's group is the one configured (`{ key, group }`),
 * else the one learned from the first upstream answer that names the key's
 * organization (`openai-organization`, `anthropic-organization-id`). A learned
 * group never changes afterwards: a later answer that names another is ignored,
 * so that nothing after the first answer can move a key between groups.
 *
 * A group has a state of its own in the store, addressed by `<name>@group`
 * (a key's state id ends in `@` and 12 hex digits, so the two never meet):
 * its rate-limit cooldowns (per model) and its out-of-money state hold for every key of it.
 */
import type { Logger } from '../validations.js';
import { GROUP_NAME, type PoolKey } from './keys.js';
import type { KeyStateStore } from './store.js';

export interface Group {
  readonly name: string;
  /** Where the store keeps the group's own state. */
  readonly stateId: string;
}

export function groupStateId(name: string): string {
  return `${name}@group`;
}

/** Whether a header value can be a group name: visible ASCII, at most 128 characters. */
export function isGroupName(value: unknown): value is string {
  return typeof value === 'string' && GROUP_NAME.test(value);
}

const MAX_NAMES = 10_000;

export class KeyGroups {
  /** One object per group name, so that finding a key's group allocates nothing. */
  private readonly byName = new Map<string, Group>();
  /** Learned groups, when the store does not keep them. */
  private readonly local = new Map<string, string>();
  private warned = false;

  constructor(
    private readonly store: KeyStateStore,
    private readonly logger: Logger | undefined,
  ) {}

  /** The key's group: configured, else learned (from this process or, through a shared store, another). */
  of(key: PoolKey): Group | undefined {
    const name = key.group ?? (this.store.groupOf ? this.store.groupOf(key.stateId) : this.local.get(key.stateId));
    return name === undefined ? undefined : this.named(name);
  }

  named(name: string): Group {
    let group = this.byName.get(name);
    if (group === undefined) {
      if (this.byName.size >= MAX_NAMES) this.byName.clear();
      group = { name, stateId: groupStateId(name) };
      this.byName.set(name, group);
    }
    return group;
  }

  /**
   * An answer named the key's organization. True when that taught the pool something: the key had
   * no group, configured or learned, and now has this one.
   */
  learn(key: PoolKey, name: string): boolean {
    if (key.group !== undefined) return false;
    if (this.store.groupOf) {
      if (this.store.groupOf(key.stateId) !== undefined || !isGroupName(name)) return false;
      return this.store.learnGroup?.(key.stateId, name) ?? false;
    }
    if (this.local.has(key.stateId) || !isGroupName(name)) return false;
    if (this.local.size >= MAX_NAMES) this.local.clear();
    this.local.set(key.stateId, name);
    return true;
  }

  /** The keys of `keys` in `group`. */
  members(keys: readonly PoolKey[], group: Group): PoolKey[] {
    return keys.filter((key) => this.of(key) === group);
  }

  /**
   * Warns once per pool when every key (two or more) is in one group: failover then adds no capacity.
   * Stops at the first key that differs or is not known yet, so that a pool of several groups pays little.
   */
  checkOneGroup(keys: readonly PoolKey[]): void {
    if (this.warned || keys.length < 2) return;
    const first = this.of(keys[0]!);
    if (first === undefined) return;
    for (let i = 1; i < keys.length; i++) if (this.of(keys[i]!) !== first) return;
    this.warned = true;
    this.logger?.warn(
      `[express-key-failover] KeyPool: all ${keys.length} keys are in one group (${JSON.stringify(first.name)}): they share one ` +
        'rate limit and one balance upstream, so failover between these keys adds no capacity. Add keys of other ' +
        'organizations to gain capacity.',
    );
  }
}
