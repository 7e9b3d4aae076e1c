import type { ErrorKind } from '../errors.js';

/** What the middleware needs to know about one upstream API. */
export interface Provider {
  readonly name: string;
  /** POST paths (relative to the mount point) that get failover. */
  readonly routes: ReadonlySet<string>;
  /** Request headers that carry a client credential and never go upstream with a pool key. */
  readonly clientAuthHeaders: readonly string[];
  /** The header name and value that carry `key` upstream. */
  authHeader(key: string): [name: string, value: string];
  /** The JSON body of an error the middleware writes itself, in the provider's own shape. */
  errorBody(kind: ErrorKind, message: string): unknown;
}
