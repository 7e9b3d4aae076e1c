/**
 * The stored objects of the account behind the pool's keys: files, uploads,
 * batches, vector stores, fine-tuning jobs, assistants and threads, stored
 * responses and chat completions, conversations, containers, evals, videos
 * (OpenAI), files, message batches and skills (Anthropic). The account is
 * shared by every tenant of the gateway, and the provider knows nothing of
 * tenants: any tenant could list them all, or read, change or delete another's
 * by its id. By default keyPassthrough forwards only the calls that create one
 * (a POST to the collection); an `allow` list is the operator's own decision,
 * and turns this default off.
 */

/** The collections, as paths relative to the API root; a POST to one creates an object. */
const COLLECTIONS: readonly string[] = [
  '/v1/files',
  '/v1/uploads',
  '/v1/batches',
  '/v1/vector_stores',
  '/v1/fine_tuning/jobs',
  '/v1/fine_tuning',
  '/v1/assistants',
  '/v1/threads',
  '/v1/responses',
  '/v1/chat/completions',
  '/v1/conversations',
  '/v1/containers',
  '/v1/evals',
  '/v1/videos',
  '/v1/messages/batches',
  '/v1/skills',
];

/** POST paths under a collection that name no object: they compute something and store nothing. */
const STATELESS: ReadonlySet<string> = new Set(['/v1/responses/input_tokens', '/v1/responses/compact', '/v1/threads/runs']);

/**
 * Whether a request to `path` (relative to the API root, as the upstream routes it: repeated
 * slashes as one, any case) reads, changes or deletes stored objects of the shared account.
 */
export function touchesStoredObjects(path: string, method: string): boolean {
  let lower = path
    .replace(/\/{2,}/g, '/')
    .replace(/\/+$/, '')
    .toLowerCase();
  // Behind a prefix (Azure's /openai/v1/files, a proxy's /api/v1/files), and Azure's unversioned /openai/files.
  const version = lower.indexOf('/v1/');
  if (version > 0) lower = lower.slice(version);
  else if (lower.startsWith('/openai/')) lower = '/v1' + lower.slice('/openai'.length);
  for (const collection of COLLECTIONS) {
    if (lower === collection) return method !== 'POST'; // a list (GET), or anything but a create
    if (lower.startsWith(collection + '/')) return !(method === 'POST' && STATELESS.has(lower));
  }
  return false;
}

export const STORED_OBJECTS_MESSAGE =
  "The gateway does not forward requests that list, read, change or delete the stored objects of its shared account (files, batches, stored responses and completions, vector stores, ...): they would reach every tenant's. Creating one is allowed; the operator can allow more with keyPassthrough's allow option.";
