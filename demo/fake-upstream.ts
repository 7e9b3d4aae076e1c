import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake OpenAI API on 127.0.0.1, so that the demo runs with no network and
 * no real keys. Each pool key behaves in one fixed way; any key starting with
 * `sk-byok-` is accepted as a user's own key. Only `POST /v1/chat/completions`
 * is served (JSON, or server-sent events with `"stream": true`).
 *
 * The fake records which key each request carried (the one thing a real
 * upstream would never tell you) so that the demo can print "keys tried".
 */

export type KeyBehaviour = 'rate-limited' | 'revoked' | 'healthy';

// Shaped like real keys, not real, and far shorter than what secret scanners flag.
export const FAKE_KEYS: readonly { key: string; behaviour: KeyBehaviour }[] = [
  { key: 'sk-demo-k0-ratelimited-Qx7a', behaviour: 'rate-limited' },
  { key: 'sk-demo-k1-revoked-Rv3k', behaviour: 'revoked' },
  { key: 'sk-demo-k2-healthy-Hz9m', behaviour: 'healthy' },
];

/** Keys with this prefix play a user's own key (BYOK): always healthy. */
export const BYOK_KEY_PREFIX = 'sk-byok-';
/** The own key the demo's BYOK scenario sends. */
export const DEMO_BYOK_KEY = 'sk-byok-alice-own-key-Al1c';

/** Long enough for the rate-limited key to stay cooling through the scripted run. */
export const RETRY_AFTER_SECONDS = 30;
export const STREAMED_REPLY = 'Streaming works: these words arrive one by one, as the fake upstream sends them.';
const CHUNK_INTERVAL_MS = 40;

/** The header the demo gateway uses to tie upstream calls to the client request they served. */
export const REQUEST_ID_HEADER = 'x-demo-request-id';

export interface UpstreamCall {
  requestId: string | undefined;
  /** The key value the call carried. Secret: map it to an id before printing anything. */
  key: string | undefined;
  status: number;
  stream: boolean;
}

export interface FakeUpstream {
  url: string;
  /** Every call answered so far, in order. */
  calls: UpstreamCall[];
  close(): Promise<void>;
}

export async function startFakeUpstream(keys = FAKE_KEYS): Promise<FakeUpstream> {
  const behaviours = new Map(keys.map(({ key, behaviour }) => [key, behaviour]));
  const calls: UpstreamCall[] = [];
  const server = http.createServer((req, res) => {
    readBody(req).then(
      (body) => answer(req, res, body, behaviours, calls),
      () => res.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function answer(
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
  behaviours: ReadonlyMap<string, KeyBehaviour>,
  calls: UpstreamCall[],
): void {
  const key = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
  const requestId = header(req, REQUEST_ID_HEADER);
  const record = (status: number, stream = false): void => void calls.push({ requestId, key, status, stream });

  if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
    record(404);
    return sendError(res, 404, 'invalid_request_error', 'unknown_url', `The fake upstream only serves POST /v1/chat/completions.`);
  }
  const behaviour = key === undefined ? undefined : (behaviours.get(key) ?? (key.startsWith(BYOK_KEY_PREFIX) ? 'healthy' : undefined));
  if (behaviour === undefined) {
    record(401);
    // Real OpenAI echoes part of a wrong key here; the fake says nothing about it.
    return sendError(res, 401, 'invalid_request_error', 'invalid_api_key', 'Incorrect API key provided.');
  }
  if (behaviour === 'revoked') {
    record(401);
    return sendError(res, 401, 'invalid_request_error', 'invalid_api_key', 'This API key has been revoked.');
  }
  if (behaviour === 'rate-limited') {
    record(429);
    return sendError(res, 429, 'requests', 'rate_limit_exceeded', `Rate limit reached. Please try again in ${RETRY_AFTER_SECONDS}s.`, {
      'retry-after': String(RETRY_AFTER_SECONDS),
    });
  }

  let request: { model?: unknown; stream?: unknown; messages?: unknown };
  try {
    request = JSON.parse(body.toString('utf8'));
  } catch {
    record(400);
    return sendError(res, 400, 'invalid_request_error', 'invalid_json', 'The request body is not valid JSON.');
  }
  const model = typeof request.model === 'string' ? request.model : 'gpt-4o-mini';
  if (request.stream === true) {
    record(200, true);
    return streamReply(res, model);
  }
  record(200);
  const content = `Hello from the fake upstream! You said: "${lastUserMessage(request.messages)}".`;
  sendJson(res, 200, {
    id: 'chatcmpl-demo',
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 },
  });
}

/** OpenAI's chunk format, one word per event, then `[DONE]`. */
function streamReply(res: ServerResponse, model: string): void {
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: object, finishReason: string | null = null): string =>
    `data: ${JSON.stringify({
      id: 'chatcmpl-demo-stream',
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finishReason }],
    })}\n\n`;
  const events = [
    chunk({ role: 'assistant', content: '' }),
    ...STREAMED_REPLY.split(/(?= )/).map((word) => chunk({ content: word })),
    chunk({}, 'stop'),
    'data: [DONE]\n\n',
  ];
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  res.flushHeaders();
  let next = 0;
  const timer = setInterval(() => {
    res.write(events[next++]);
    if (next === events.length) {
      clearInterval(timer);
      res.end();
    }
  }, CHUNK_INTERVAL_MS);
  res.once('close', () => clearInterval(timer));
}

function lastUserMessage(messages: unknown): string {
  if (!Array.isArray(messages)) return '';
  const last = [...messages].reverse().find((m) => m?.role === 'user');
  const content = typeof last?.content === 'string' ? last.content : '';
  return content.length > 60 ? `${content.slice(0, 57)}...` : content;
}

function sendError(res: ServerResponse, status: number, type: string, code: string, message: string, headers = {}): void {
  sendJson(res, status, { error: { message, type, param: null, code } }, headers);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
