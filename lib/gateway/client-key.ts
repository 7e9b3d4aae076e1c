import { unescape as lenientUnescape } from 'node:querystring';
import type { OutgoingHeaders } from '../upstream/relay.js';

/**
 * A client's own key (byok) goes upstream in the provider's key header only.
 * Wherever else it came in, whichever a byok function read it from, it is
 * taken out: a header whose whole value is the key (or `Bearer <key>`, any
 * case of the scheme), a query parameter whose value is the key. Whole values
 * only: a 1-character key must not take every header containing that
 * character with it.
 */
export function withoutClientKey<T extends { path: string; headers: OutgoingHeaders }>(request: T, key: string): T {
  return { ...request, headers: headersWithout(request.headers, key), path: pathWithout(request.path, key) };
}

const BEARER = /^bearer +/i;

function carriesKey(value: string, key: string): boolean {
  const text = value.trim();
  return text === key || (BEARER.test(text) && text.replace(BEARER, '') === key);
}

function headersWithout(headers: OutgoingHeaders, key: string): OutgoingHeaders {
  const out: OutgoingHeaders = {};
  for (const name in headers) {
    const value = headers[name]!;
    if (Array.isArray(value)) {
      const kept = value.filter((v) => !carriesKey(v, key));
      if (kept.length > 0) out[name] = kept;
    } else if (!carriesKey(value, key)) {
      out[name] = value;
    }
  }
  return out;
}

/** The path with every query parameter whose value is the key left out; the other parameters keep their bytes. */
function pathWithout(path: string, key: string): string {
  const q = path.indexOf('?');
  if (q === -1) return path;
  const pairs = path.slice(q + 1).split('&');
  const kept = pairs.filter((pair) => {
    const eq = pair.indexOf('=');
    return eq === -1 || !queryValueIs(pair.slice(eq + 1), key);
  });
  if (kept.length === pairs.length) return path;
  return kept.length === 0 ? path.slice(0, q) : `${path.slice(0, q)}?${kept.join('&')}`;
}

// As Express's query parsers read a value (qs: strict, else as is; querystring: lenient), and as sent.
function queryValueIs(raw: string, key: string): boolean {
  const spaced = raw.replace(/\+/g, ' ');
  let strict = spaced;
  try {
    strict = decodeURIComponent(spaced);
  } catch {
    // a malformed escape: qs keeps the text as it is
  }
  return raw === key || strict === key || lenientUnescape(spaced) === key;
}
