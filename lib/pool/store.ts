/**
 * Where key state lives. Shaped like express-rate-limit's Store: a small
 * interface, a memory default, other stores (Redis) as separate modules.
 *
 * Reads are synchronous on purpose: selection runs on every request and must
 * not wait on I/O, so a shared store keeps a local view and reads from it.
 * The store applies the rules (a longer cooldown wins; a disabled key ignores
 * cooldowns) so that a shared store can apply them atomically.
 */

export interface KeyState {
  /** Epoch milliseconds until which the key is cooling down; 0 when it is not. */
  cooldownUntil: number;
  /** Out of the pool. */
  disabled: boolean;
  /** With `disabled`: epoch ms when the key may be tried again (`authCooldownMs`); absent when only `enable` brings it back. */
  disabledUntil?: number;
}

export interface KeyStateStore {
  /** The state of a key, or undefined for a key the store holds nothing about (available). */
  get(id: string): KeyState | undefined;
  /** Cool the key until `until` (epoch ms) unless it already cools longer or is disabled. */
  markRateLimited(id: string, until: number): void;
  /** Take the key out of the pool, until `enable(id)` or, when given, until `until` (epoch ms). */
  markDisabled(id: string, until?: number): void;
  /** Put the key back: not disabled, not cooling. */
  enable(id: string): void;
  /**
   * Optional: a number that changes whenever any key's state changes. With it,
   * an 'ordered' pool remembers the run of unavailable keys at its head and
   * skips it in one step until something changes.
   */
  readonly generation?: number;
}

/** The default store: state in this process only. */
export class MemoryKeyStateStore implements KeyStateStore {
  private readonly states = new Map<string, KeyState>();
  generation = 0;

  get(id: string): KeyState | undefined {
    return this.states.get(id);
  }

  markRateLimited(id: string, until: number): void {
    this.generation++;
    const state = this.states.get(id);
    if (!state) {
      this.states.set(id, { cooldownUntil: until, disabled: false });
    } else if (!state.disabled && until > state.cooldownUntil) {
      state.cooldownUntil = until;
    }
  }

  markDisabled(id: string, until?: number): void {
    this.generation++;
    this.states.set(
      id,
      until === undefined ? { cooldownUntil: 0, disabled: true } : { cooldownUntil: 0, disabled: true, disabledUntil: until },
    );
  }

  enable(id: string): void {
    this.generation++;
    this.states.delete(id);
  }
}
