import type { IncomingHttpHeaders } from 'node:http';
import type { ErrorKind } from '../errors.js';

/** What the middleware needs to know about one upstream API. */
export interface Provider {
  readonly name: string;
  /** POST paths (relative to the mount point) that get failover with a buffered body. */
  readonly routes: ReadonlySet<string>;
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
}

export function bearerToken(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const match = /^Bearer +(\S+)$/i.exec(value.trim());
  return match?.[1];
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
