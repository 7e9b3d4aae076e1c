/**
 * What the minimal undici relays (express-relay, node-dispatch, and the retrying
 * relay-buffered / relay-retry) share: the request headers a correct relay sends
 * upstream and the response headers it sends back; for the Express ones, the
 * abort when the client leaves and the 502 when there is no answer. Written as naively as correctness allows: hop-by-hop headers
 * (the fixed list and whatever `Connection` names) dropped both ways, Host
 * dropped, the client's credentials dropped and the fixed key set in the
 * provider's header (x-api-key for Anthropic's /v1/messages, a bearer token
 * otherwise).
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
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

/** A controller aborted when the client goes away before its response is complete: the upstream request goes too. */
export function abortOnClientGone(res: ServerResponse): AbortController {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller;
}

/** No answer to relay: a 502, or, once the head is out, a cut the client sees. */
export function relayFailed(res: ServerResponse): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(502).end();
}
