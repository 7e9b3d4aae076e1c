/**
 * Model scopes: the rate-limit buckets a 429 is about. OpenAI and Anthropic
 * meter each model (or model family) on its own, so a 429 for one model
 * cools a key for that model's scope only. A model name is a client's
 * string: its length is bounded here, and the number of scoped states by the
 * store, so that no client can grow either without limit.
 */

/** Maps a request's model to the bucket its rate limits live in; `undefined` for "the whole key". */
export type ModelScopeFunction = (model: string) => string | undefined;

/**
 * Where a request goes, for its scope: `fallback` is the scope of a request whose model cannot be
 * read (the route: `/v1/embeddings`), so that its 429 cools that route and not the whole key;
 * `bucket` qualifies the model scope of a route with rate limits of its own (Anthropic's
 * `count_tokens`), so that its 429 leaves the model's other routes alone.
 */
export interface RouteScope {
  readonly fallback: string;
  readonly bucket?: string | undefined;
}

/** Longest scope kept; a longer model name is cut to this many characters. */
export const MAX_SCOPE_LENGTH = 128;

export class ModelScopes {
  constructor(private readonly map: ModelScopeFunction | undefined) {}

  /**
   * The scope of `model` (on `route`, when given): undefined (the whole key) when modelScope says so;
   * for a request without a model, its route's fallback (undefined without a route).
   */
  of(model: string | undefined, route?: RouteScope): string | undefined {
    if (model === undefined || model === '') return route?.fallback;
    const mapped = this.map === undefined ? model : this.map(model);
    if (typeof mapped !== 'string' || mapped === '') return undefined;
    const scope = route?.bucket === undefined ? mapped : `${route.bucket} ${mapped}`;
    return scope.length > MAX_SCOPE_LENGTH ? scope.slice(0, MAX_SCOPE_LENGTH) : scope;
  }
}

const VERSION_SEGMENT = /^v\d[a-z0-9]*$/i;

/**
 * The route scope of a path whose model is unknown (a streamed body): its leading version segments
 * and the one resource segment after them (`/v1/embeddings`, `/v1/files`), never an object id, so
 * that the number of route scopes stays that of the API's resources.
 */
export function routeScope(path: string): RouteScope {
  const parts = path.split('/');
  let end = 1;
  while (end < parts.length - 1 && VERSION_SEGMENT.test(parts[end]!)) end++;
  const fallback = parts.slice(0, end + 1).join('/') || '/';
  return { fallback: fallback.length > MAX_SCOPE_LENGTH ? fallback.slice(0, MAX_SCOPE_LENGTH) : fallback };
}
