/**
 * Stateful objects stay on their key. Objects live in the project that
 * created them: a follow-up that names one (a Responses request with
 * `previous_response_id`, `GET /v1/files/{id}`, a batch made from an uploaded
 * file, ...) answers 404 on a key of another project. So the walk remembers
 * which key created each object (read from the `id` of the create call's
 * answer), and sends a request that names it to that key alone; if that key is
 * cooling, the client gets the pool's 429 with its Retry-After rather than a
 * misleading 404 from another project. An id the pool does not know walks the
 * pool as usual.
 *
 * Which routes and fields are followed is the table below (relative to where
 * the middleware is mounted; README "Stateful objects stay on their key").
 */
import type { Readable, Transform } from 'node:stream';
import type { KeyPool, PoolKey } from '../pool/key-pool.js';
import { OBJECT_ID } from '../pool/affinity.js';
import type { RouteScope } from '../pool/scopes.js';
import type { KeyWalker, ModelSource } from '../pool/walker.js';
import { readField } from '../request/model.js';
import { decodersFor } from '../upstream/decode.js';
import type { ResponseHeaders } from '../upstream/rate-limit-headers.js';

interface Collection {
  /** The collection's path; `POST` to it creates an object, `<path>/<id>...` names one. */
  readonly path: string;
  readonly kind: string;
  /** What the created object's id starts with, in the create call's answer. */
  readonly prefixes: readonly string[];
  /** Top-level body fields of a `POST` under this path that name other objects. */
  readonly fields?: readonly string[];
}

export const COLLECTIONS: readonly Collection[] = [
  { path: '/v1/responses', kind: 'response', prefixes: ['resp_'], fields: ['previous_response_id', 'conversation'] },
  { path: '/v1/conversations', kind: 'conversation', prefixes: ['conv_'] },
  { path: '/v1/files', kind: 'file', prefixes: ['file-', 'file_'] },
  { path: '/v1/uploads', kind: 'upload', prefixes: ['upload_'] },
  { path: '/v1/batches', kind: 'batch', prefixes: ['batch_'], fields: ['input_file_id'] },
  { path: '/v1/vector_stores', kind: 'vector_store', prefixes: ['vs_'], fields: ['file_id'] },
  { path: '/v1/fine_tuning/jobs', kind: 'fine_tuning_job', prefixes: ['ftjob-'], fields: ['training_file', 'validation_file'] },
  { path: '/v1/containers', kind: 'container', prefixes: ['cntr_'] },
  { path: '/v1/messages/batches', kind: 'message_batch', prefixes: ['msgbatch_'] },
];
const FIELD_NAMES = new Map(COLLECTIONS.flatMap((c) => (c.fields ?? []).map((f) => [f, Buffer.from(f)] as const)));
const STORE = Buffer.from('store');
/** Ids read from one request: a client cannot make the walk look up more. */
const MAX_NAMED = 4;
/** How much of a create call's answer is read for its id: it comes first (JSON) or in the first event (a stream). */
const READ_LIMIT = 16 * 1024;

/** What a request has to do with upstream objects: the ones it names, and what its answer creates. */
export interface ObjectRoute {
  /** The ids of the objects the request names (its path, then its body), read when the walk starts. */
  named(): readonly string[];
  /** What a 2xx answer to it creates, when it is a create call. */
  readonly creates: Collection | undefined;
}

/**
 * The objects of a request, or undefined for a route that has none (chat completions, messages):
 * `path` is the API path (`/v1/...`, from where the middleware is mounted), `body` the buffered body.
 */
export function objectRoute(method: string, path: string, body: Buffer | null): ObjectRoute | undefined {
  const at = path.indexOf('/v1/');
  if (at < 0) return undefined;
  const api = at === 0 ? path : path.slice(at);
  for (const collection of COLLECTIONS) {
    if (!api.startsWith(collection.path)) continue;
    const rest = api.slice(collection.path.length);
    if (rest === '' || rest === '/') {
      if (method !== 'POST') return undefined;
      const creates = collection.path === '/v1/responses' && readField(body, STORE) === 'false' ? undefined : collection;
      return { named: () => bodyIds(collection, body), creates };
    }
    if (rest[0] !== '/') continue;
    const id = rest.slice(1).split('/', 1)[0]!;
    return {
      named: () => [...(OBJECT_ID.test(id) ? [id] : []), ...(method === 'POST' ? bodyIds(collection, body) : [])],
      creates: undefined,
    };
  }
  return undefined;
}

/** Largest JSON body keyPassthrough buffers to read the objects it names (a batch's `input_file_id`, ...). */
export const NAMING_BODY_LIMIT = 1024 * 1024;

/**
 * Whether a request's JSON body may name objects (a `POST` to a route with body fields, such as
 * `/v1/batches`): keyPassthrough then reads a small one into memory instead of streaming it.
 */
export function bodyNamesObjects(method: string, path: string, contentType: string | undefined, declaredLength: number): boolean {
  if (method !== 'POST' || !(declaredLength > 0 && declaredLength <= NAMING_BODY_LIMIT) || !/\bjson\b/i.test(contentType ?? ''))
    return false;
  const at = path.indexOf('/v1/');
  const api = at <= 0 ? path : path.slice(at);
  return COLLECTIONS.some((c) => c.fields !== undefined && (api === c.path || api.startsWith(`${c.path}/`)));
}

function bodyIds(collection: Collection, body: Buffer | null): string[] {
  const ids: string[] = [];
  for (const field of collection.fields ?? []) {
    const id = readField(body, FIELD_NAMES.get(field)!);
    if (id !== undefined && OBJECT_ID.test(id)) ids.push(id);
    if (ids.length >= MAX_NAMED) break;
  }
  return ids;
}

/** The pool's 429 for a request whose object's key is cooling. */
export interface ObjectKeyCooling {
  kind: 'error';
  error: 'rate_limited';
  retryAfterMs: number;
}

/**
 * The walker for a request: over the key that created an object it names, while that key is available
 * (or one probe may try it); the pool's 429 while that key cools; otherwise the whole pool.
 */
export function startWalk(
  pool: KeyPool,
  model: ModelSource,
  scope: RouteScope | undefined,
  objects: ObjectRoute | undefined,
  requestId: string | undefined,
): KeyWalker | ObjectKeyCooling {
  if (objects === undefined || pool.affinityTtlMs === 0) return pool.walker(model, scope);
  const named = objects.named();
  for (let i = 0; i < named.length && i < MAX_NAMED; i++) {
    const owner = pool.lessons.ownerOf(named[i]!);
    if (owner === undefined) continue;
    const walker = pool.walkerFor(owner, model, scope);
    const requestScope = walker.scope();
    const kind = kindOf(named[i]!);
    const until = pool.unavailableUntil(owner, pool.now(), requestScope);
    if (until <= pool.now()) {
      affinityEvent(pool, owner, 'routed', kind, requestId);
      return walker;
    }
    const exhaustion = pool.exhaustionFor(requestScope, [owner]);
    if (exhaustion.reason === 'rate_limited') {
      affinityEvent(pool, owner, 'cooling', kind, requestId);
      pool.emit('exhausted', { ...exhaustion, ...(requestId === undefined ? {} : { requestId }) });
      return { kind: 'error', error: 'rate_limited', retryAfterMs: Math.ceil(exhaustion.retryAfterMs) };
    }
    // Disabled: another key of its project may still reach the object, and nothing else could.
    affinityEvent(pool, owner, 'unavailable', kind, requestId);
    break;
  }
  return pool.walker(model, scope);
}

/**
 * A create call's answer, relayed with `key`: its object's id is read from the first bytes as they
 * pass to the client (nothing is held or changed in the stream; a compressed answer is decoded on the
 * side, its first bytes only), and remembered for `key`.
 */
export function learnCreated(
  pool: KeyPool,
  key: PoolKey,
  created: Collection,
  answer: { headers: ResponseHeaders; body: Readable; head?: readonly Buffer[] | undefined },
  requestId: string | undefined,
): void {
  const { body } = answer;
  const encoding = answer.headers['content-encoding'];
  const decoders = encoding === undefined ? undefined : decodersFor(encoding);
  if (pool.affinityTtlMs === 0 || (encoding !== undefined && decoders?.length !== 1)) return; // none or several codings: not read
  const pattern = new RegExp(`"id"\\s*:\\s*"((?:${created.prefixes.join('|')})[\\w-]{1,120})"`);
  let seen = '';
  let fed = 0;
  let done = false;
  let decoder: Transform | undefined;
  const finish = (): void => {
    done = true;
    detach();
    decoder?.destroy();
  };
  const scan = (chunk: Buffer): void => {
    if (done) return;
    seen += chunk.toString('latin1', 0, Math.min(chunk.length, READ_LIMIT - seen.length));
    const match = pattern.exec(seen);
    if (match) {
      finish();
      pool.lessons.rememberObject(match[1]!, created.kind, key, requestId);
    } else if (seen.length >= READ_LIMIT) finish();
  };
  if (decoders !== undefined) {
    decoder = decoders[0]!();
    decoder.on('data', scan).on('error', finish).on('end', finish);
  }
  const onData = (chunk: Buffer): void => {
    if (decoder === undefined) return scan(chunk);
    fed += chunk.length;
    decoder.write(chunk);
    if (fed >= READ_LIMIT) end();
  };
  // Only once the body flows (the relay's pipe, fetch's reader): a 'data' listener added earlier would start it.
  const onResume = (): void => {
    body.off('resume', onResume);
    body.on('data', onData);
  };
  const detach = (): void => void body.off('resume', onResume).off('data', onData).off('close', end);
  // The body is over (or read far enough): a decoder still works through what it was given, then ends.
  const end = (): void => {
    detach();
    if (decoder === undefined) finish();
    else decoder.end();
  };
  // The opening a stream hold read first (a Responses stream's response.created names the id) goes before the rest.
  for (const chunk of answer.head ?? []) if (!done) onData(chunk);
  if (!done) body.on('resume', onResume).once('close', end);
}

function kindOf(id: string): string {
  for (const collection of COLLECTIONS) if (collection.prefixes.some((prefix) => id.startsWith(prefix))) return collection.kind;
  return 'object';
}

function affinityEvent(
  pool: KeyPool,
  key: PoolKey,
  outcome: 'routed' | 'cooling' | 'unavailable',
  object: string,
  requestId: string | undefined,
): void {
  pool.emit('affinity', { id: key.id, hint: key.hint, outcome, object, ...(requestId === undefined ? {} : { requestId }) });
}
