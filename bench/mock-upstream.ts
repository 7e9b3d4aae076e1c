/**
 * Zero-delay, keep-alive mock of an OpenAI-style upstream.
 * POST /v1/chat/completions:
 *   - no Authorization, or the client's own key: 401 (a proxy did not swap keys);
 *   - REJECTED_KEY: 429 with `retry-after-ms: 0`;
 *   - `"stream":true`: SSE; the first event at once, the rest SSE_TAIL_MS later,
 *     or, with `"bench_hold":true`, when GET /__release is called;
 *   - otherwise a ~330-byte JSON completion with content-length.
 * GET /__stats: how many answers of each status it gave.
 * Prints `PORT <n>` when listening.
 */
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CHAT, CLIENT_KEY, REJECTED_KEY, RELEASE_PATH, STATS_PATH } from './shared.js';

const SSE_TAIL_MS = 5;
const FIRST_EVENT = 'data: {"id":"chatcmpl-mock","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n';
const TAIL = 'data: {"id":"chatcmpl-mock","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n';
const COMPLETION = JSON.stringify({
  id: 'chatcmpl-mock0000000000000000000000',
  object: 'chat.completion',
  created: 1700000000,
  model: 'mock-model-1',
  choices: [
    { index: 0, message: { role: 'assistant', content: 'Hello! This is a mock completion from the upstream.' }, finish_reason: 'stop' },
  ],
  usage: { prompt_tokens: 42, completion_tokens: 12, total_tokens: 54 },
});
const RATE_LIMITED = JSON.stringify({ error: { message: 'Rate limit reached', type: 'rate_limit_error', code: 'rate_limit_exceeded' } });
const UNAUTHORIZED = JSON.stringify({
  error: { message: 'Incorrect API key provided', type: 'invalid_request_error', code: 'invalid_api_key' },
});
const STREAM = Buffer.from('"stream":true');
const HOLD = Buffer.from('"bench_hold":true');

const held = new Set<ServerResponse>();
/** Answers by status, for GET /__stats: the driver checks with it that target 5 really fails over. */
const answered: Record<number, number> = {};

function json(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  answered[status] = (answered[status] ?? 0) + 1;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

function answer(body: Buffer, authorization: string | undefined, res: ServerResponse): void {
  if (!authorization || authorization === `Bearer ${CLIENT_KEY}`) return json(res, 401, UNAUTHORIZED);
  if (authorization === `Bearer ${REJECTED_KEY}`) return json(res, 429, RATE_LIMITED, { 'retry-after-ms': '0' });
  if (!body.includes(STREAM)) return json(res, 200, COMPLETION);
  answered[200] = (answered[200] ?? 0) + 1;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(FIRST_EVENT);
  if (body.includes(HOLD)) {
    held.add(res);
    res.on('close', () => held.delete(res));
  } else {
    setTimeout(() => res.end(TAIL), SSE_TAIL_MS);
  }
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === RELEASE_PATH) {
    const count = held.size;
    for (const stream of held) stream.end(TAIL);
    held.clear();
    return json(res, 200, JSON.stringify({ released: count }));
  }
  if (req.method === 'GET' && req.url === STATS_PATH) return void res.end(JSON.stringify(answered));
  if (req.method !== 'POST' || req.url !== CHAT) return json(res, 404, '{}');
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => answer(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), req.headers.authorization, res));
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
