/**
 * Model scopes: the rate-limit buckets a 429 is about. OpenAI and Anthropic
 * meter each model (or model family) on its own, so a 429 for one model
 * cools a key for that model's scope only. A model name is a client's
 * string: its length is bounded here, and the number of scoped states by the
 * store, so that no client can grow either without limit.
 */

/** Maps a request's model to the bucket its rate limits live in; `undefined` for "the whole key". */
export type ModelScopeFunction = (model: string) => string | undefined;

/** Longest scope kept; a longer model name is cut to this many characters. */
export const MAX_SCOPE_LENGTH = 128;

export class ModelScopes {
  constructor(private readonly map: ModelScopeFunction | undefined) {}

  /** The scope of `model`, or undefined (the whole key) for a request without a model, or when modelScope says so. */
  of(model: string | undefined): string | undefined {
    if (model === undefined || model === '') return undefined;
    const scope = this.map === undefined ? model : this.map(model);
    if (typeof scope !== 'string' || scope === '') return undefined;
    return scope.length > MAX_SCOPE_LENGTH ? scope.slice(0, MAX_SCOPE_LENGTH) : scope;
  }
}
