/**
 * What the two minimal undici relays (express-relay, node-dispatch) share:
 * the request headers a correct relay sends upstream and the response headers
 * it sends back. Written as naively as correctness allows: hop-by-hop headers
 * (the fixed list and whatever `Connection` names) dropped both ways, Host
 * dropped, the client's credentials dropped and the fixed key set in the
 * provider's header (x-api-key for Anthropic's /v1/messages, a bearer token
 * otherwise).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { CHAT, KEYS, MESSAGES, RESPONSES, keyHeader } from '../shared.js';

export const ROUTES = new Set([CHAT, RESPONSES, MESSAGES]);
const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];
const CREDENTIALS = ['authorization', 'x-api-key'];

export type Headers = Record<string, string | string[]>;

function without(headers: IncomingHttpHeaders, drop: string[]): Headers {
  const connection = headers['connection'];
  if (typeof connection === 'string') for (const name of connection.split(',')) drop.push(name.trim().toLowerCase());
  const out: Headers = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !drop.includes(name)) out[name] = value;
  }
  return out;
}

export function requestHeaders(path: string, headers: IncomingHttpHeaders, key: string = KEYS[0]): Headers {
  const out = without(headers, [...HOP_BY_HOP, ...CREDENTIALS, 'host']);
  const [name, value] = keyHeader(path, key);
  out[name] = value;
  return out;
}

export function responseHeaders(headers: IncomingHttpHeaders): Headers {
  return without(headers, [...HOP_BY_HOP]);
}
