/**
 * Zero-delay, keep-alive mock of the OpenAI and Anthropic upstreams.
 *   POST /v1/chat/completions  JSON: a ~330-byte completion; `"stream":true`: the old two-event chat stream
 *   POST /v1/responses         `"stream":true`: an OpenAI Responses event stream (see provider-streams.ts)
 *   POST /v1/messages          `"stream":true`: an Anthropic Messages event stream; the key in x-api-key
 * On every route:
 *   - no key, or the client's own key in any header: 401 (a proxy did not swap keys), counted in `clientKeySeen`;
 *   - REJECTED_KEY: 429 with `retry-after-ms: 0`;
 *   - a stream's preamble (every event up to the first text delta) goes out at once, one write per event,
 *     each in its own turn of the event loop, as separate chunks; the rest SSE_TAIL_MS later, or, with
 *     `"bench_hold":true`, when GET /__release is called.
 * 200 answers carry the provider's usual headers (rate-limit state, organization, request id).
 * GET /__stats: answers by status, requests by key, streams held open, client keys seen.
 * Prints `PORT <n>` when listening.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { STREAMS, type StreamKind } from './provider-streams.js';
import {
  ANTHROPIC_HEADERS,
  CHAT,
  CLIENT_KEY,
  COMPLETION,
  KEYS,
  MESSAGES,
  OPENAI_HEADERS,
  REJECTED_KEY,
  RELEASE_PATH,
  RESPONSES,
  STATS_PATH,
} from './shared.js';

const SSE_TAIL_MS = 5;
const ROUTES: Record<string, StreamKind> = { [CHAT]: 'chat', [RESPONSES]: 'responses', [MESSAGES]: 'messages' };
const OPENAI_RATE_LIMITED = JSON.stringify({
  error: { message: 'Rate limit reached for gpt-4o-mini', type: 'requests', param: null, code: 'rate_limit_exceeded' },
});
const OPENAI_UNAUTHORIZED = JSON.stringify({
  error: { message: 'Incorrect API key provided', type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
});
const ANTHROPIC_RATE_LIMITED = JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: 'Rate limited' } });
const ANTHROPIC_UNAUTHORIZED = JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
const STREAM = Buffer.from('"stream":true');
const HOLD = Buffer.from('"bench_hold":true');

/** Streams held open, each with the rest of its events. */
const held = new Map<ServerResponse, string>();
const stats = { answered: {} as Record<number, number>, byKey: {} as Record<string, number>, clientKeySeen: 0 };

function json(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  stats.answered[status] = (stats.answered[status] ?? 0) + 1;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

/** The key the request carries in its provider's header; the client's key anywhere is counted and refused. */
function keyOf(req: IncomingMessage, kind: StreamKind): string | undefined {
  for (const name in req.headers) {
    const value = req.headers[name];
    if ((Array.isArray(value) ? value.join() : (value ?? '')).includes(CLIENT_KEY)) {
      stats.clientKeySeen++;
      return undefined;
    }
  }
  if (kind === 'messages') return typeof req.headers['x-api-key'] === 'string' ? req.headers['x-api-key'] : undefined;
  return /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
}

function writePreamble(res: ServerResponse, events: readonly string[], i: number, then: () => void): void {
  if (res.destroyed) return;
  res.write(events[i]!);
  if (i + 1 < events.length) setImmediate(writePreamble, res, events, i + 1, then);
  else then();
}

function answer(kind: StreamKind, body: Buffer, req: IncomingMessage, res: ServerResponse): void {
  const anthropic = kind === 'messages';
  const key = keyOf(req, kind);
  if (key === undefined) return json(res, 401, anthropic ? ANTHROPIC_UNAUTHORIZED : OPENAI_UNAUTHORIZED);
  if (key === REJECTED_KEY) return json(res, 429, anthropic ? ANTHROPIC_RATE_LIMITED : OPENAI_RATE_LIMITED, { 'retry-after-ms': '0' });
  const index = KEYS.indexOf(key as (typeof KEYS)[number]);
  const name = index === -1 ? 'other' : `KEYS[${index}]`;
  stats.byKey[name] = (stats.byKey[name] ?? 0) + 1;
  if (!body.includes(STREAM)) {
    if (kind !== 'chat') return json(res, 400, '{"error":{"message":"the bench mock streams only on this route"}}');
    return json(res, 200, COMPLETION, OPENAI_HEADERS);
  }
  stats.answered[200] = (stats.answered[200] ?? 0) + 1;
  const stream = STREAMS[kind];
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    ...(anthropic ? ANTHROPIC_HEADERS : OPENAI_HEADERS),
  });
  writePreamble(res, stream.preamble, 0, () => {
    if (body.includes(HOLD)) {
      held.set(res, stream.tail);
      res.on('close', () => held.delete(res));
    } else {
      setTimeout(() => res.end(stream.tail), SSE_TAIL_MS);
    }
  });
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === RELEASE_PATH) {
    const count = held.size;
    for (const [stream, tail] of held) stream.end(tail);
    held.clear();
    return json(res, 200, JSON.stringify({ released: count }));
  }
  if (req.method === 'GET' && req.url === STATS_PATH) return void res.end(JSON.stringify({ ...stats, held: held.size }));
  const kind = req.method === 'POST' ? ROUTES[req.url ?? ''] : undefined;
  if (!kind) return json(res, 404, '{}');
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => answer(kind, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), req, res));
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
