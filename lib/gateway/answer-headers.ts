import type { ErrorKind } from '../errors.js';
import { ALLOW_HEADER } from './passthrough-methods.js';

/** Headers that go with an answer the gateway writes itself, beside its JSON error body. */
export function ownAnswerHeaders(kind: ErrorKind): Record<string, string> {
  return kind === 'method_not_allowed' ? { allow: ALLOW_HEADER } : {};
}
