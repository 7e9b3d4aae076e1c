import type { IncomingHttpHeaders } from 'node:http';
import type { ErrorKind } from '../errors.js';
import type { KeyAccount, PoolKey } from '../pool/keys.js';
import type { FailureClassifier } from './causes.js';
import type { StreamReading } from './streams.js';
import type { RoutePattern } from './routes.js';

/** What the middleware needs to know about one upstream API. */
export interface Provider {
  readonly name: string;
  /** POST paths (relative to the mount point) that get failover with a buffered body. */
  readonly routes: ReadonlySet<string>;
  /** Routes with path parameters (`/openai/deployments/:deployment/chat/completions`), tried when no exact route matched. */
  readonly routePatterns?: readonly RoutePattern[];
  /**
   * Routes with rate limits of their own, apart from the model's other routes (Anthropic's
   * `/v1/messages/count_tokens`), by a name for that bucket: their 429 cools the key for the model on that route only.
   */
  readonly routeBuckets?: ReadonlyMap<string, string>;
  /** Request headers that carry a client credential; never sent upstream (the key header replaces them). */
  readonly clientAuthHeaders: readonly string[];
  /** The header name and value that carry `key` upstream. */
  authHeader(key: string): readonly [name: string, value: string];
  /** The key a client sent in the provider's own credential header: what `byok: true` uses. */
  clientKey(headers: IncomingHttpHeaders): string | undefined;
  /** Query parameters set on every upstream URL (Azure's `api-version`). */
  readonly query: Readonly<Record<string, string>>;
  /** The JSON body of an error the middleware writes itself, in the provider's own shape. */
  errorBody(kind: ErrorKind, message: string): unknown;
  /** What its failing answers mean. */
  readonly failures: FailureClassifier;
  /** What the opening of its streams means (for the hold of errors inside 200 streams); none: no hold. */
  readonly streams?: StreamReading;
  /**
   * Request headers that name the account a credential acts for (`OpenAI-Organization`,
   * `OpenAI-Project`): they belong to the client's credential, so with a pool key they are not forwarded.
   */
  readonly accountHeaders: readonly string[];
  /** The account headers a pool key carries itself (its `organization` / `project`). */
  keyAccountHeaders(account: KeyAccount): [name: string, value: string][];
}

/** Adds the credential headers of `key` to `headers`: its key header, and with a pool key its own account headers. */
export function addKeyHeaders(provider: Provider, key: PoolKey | string, headers: Record<string, string | string[]>): void {
  const [name, value] = provider.authHeader(typeof key === 'string' ? key : key.value);
  headers[name] = value;
  if (typeof key !== 'string' && key.account !== undefined) {
    for (const [header, account] of provider.keyAccountHeaders(key.account)) headers[header] = account;
  }
}

export function bearerToken(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const match = /^Bearer +(\S+)$/i.exec(value.trim());
  return match?.[1];
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
