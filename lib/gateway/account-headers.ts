import type { ResponseHeaders } from '../upstream/rate-limit-headers.js';

/**
 * Response headers that name the account behind the pool's keys: OpenAI's
 * organization and project, Anthropic's organization. A tenant of the gateway
 * has no business learning them, so they are not relayed to the client unless
 * `relayAccountHeaders` says so. They are dropped only when the answer is
 * written to the client: inside the package the upstream answer keeps them.
 */
export const ACCOUNT_HEADERS: ReadonlySet<string> = new Set(['openai-organization', 'openai-project', 'anthropic-organization-id']);

/** A copy of `headers` without the account headers; `headers` itself is left as it is. */
export function withoutAccountHeaders(headers: ResponseHeaders): ResponseHeaders {
  const out: Record<string, string | string[] | undefined> = {};
  for (const name in headers) if (!ACCOUNT_HEADERS.has(name)) out[name] = headers[name];
  return out;
}
