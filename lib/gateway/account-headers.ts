import { decodeHeld } from '../upstream/failure-body.js';
import type { ResponseHeaders } from '../upstream/rate-limit-headers.js';
import type { HeldResponse } from '../upstream/relay.js';

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

// What error messages say of the account: "in organization org-7kQe...", "Project `proj_Vx7T...`",
// "your organization (3f6c1b8e-...)", "(org: 3f6c1b8e-..., model: ...)", and a key's masked value
// "Incorrect API key provided: sk-test-****...a0".
const ACCOUNT_IDS: readonly [RegExp, string][] = [
  [/\borg-[A-Za-z0-9]{6,}/g, 'org-(redacted)'],
  [/\bproj_[A-Za-z0-9]{6,}/g, 'proj_(redacted)'],
  [
    /\b(org(?:anization)?\b[^0-9a-fA-F"]{0,16})[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b/g,
    '$1(redacted)',
  ],
  [/[A-Za-z0-9_-]*\*{4,}[A-Za-z0-9_*-]*/g, '(redacted key)'],
];

/**
 * A held answer (a failing one the gateway read) as a tenant may see it: the account ids its
 * message names (the answer's own account header values, OpenAI organization and project ids,
 * Anthropic organization ids) and masked key values are replaced. The body is sent without its
 * content coding when something was replaced; untouched, it goes byte for byte.
 */
export function withoutAccountIds(held: HeldResponse): HeldResponse {
  if (held.body.length === 0) return held;
  const encoding = held.headers['content-encoding'];
  const decoded = encoding === undefined ? held.body : decodeHeld(held.body, encoding);
  if (decoded === undefined) return held; // a coding it cannot undo: the gateway asks only for those it can
  const text = decoded.toString('utf8');
  let redacted = text;
  for (const [pattern, replacement] of ACCOUNT_IDS) redacted = redacted.replace(pattern, replacement);
  // Then whatever else the account headers name, word for word.
  for (const name of ACCOUNT_HEADERS) {
    const value = held.headers[name];
    for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
      if (v.length >= 6) redacted = redacted.split(v).join('(redacted)');
    }
  }
  if (redacted === text) return held;
  const headers: Record<string, string | string[] | undefined> = { ...held.headers };
  delete headers['content-encoding'];
  const body = Buffer.from(redacted, 'utf8');
  headers['content-length'] = String(body.length);
  return { status: held.status, headers, body };
}
