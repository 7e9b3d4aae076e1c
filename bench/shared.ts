/** Constants shared by the driver, the mock upstream and the targets. */
import type { StreamKind } from './provider-streams.js';

export const CHAT = '/v1/chat/completions';
export const RESPONSES = '/v1/responses';
export const MESSAGES = '/v1/messages';

/** Pool keys the mock accepts. Shaped like real keys, not real. */
export const KEYS = ['sk-bench-k1-Aa00000000000000a0', 'sk-bench-k2-Bb11111111111111b1', 'sk-bench-k3-Cc22222222222222c2'] as const;
/** The mock answers 429 (retry-after-ms: 0, so the key is available again at once) to this key: kf-429's key 0. */
export const REJECTED_KEY = 'sk-bench-k0-always-429-000000z9';
/** What the load generator sends; the mock answers 401 to it and counts it, so a proxy that forgot to swap keys fails the run. */
export const CLIENT_KEY = 'sk-client-key-the-gateway-must-replace';

/** The model every bench request asks for, and the one kf-scoped's key 0 is cooling for. */
export const MODEL = 'gpt-4o-mini';
export const OTHER_MODEL = 'gpt-4o';

/** Mock control routes (GET, on the mock's port). */
export const RELEASE_PATH = '/__release';
export const STATS_PATH = '/__stats';

/** What the mock answers a JSON chat request with (and what express-json answers by itself). */
export const COMPLETION = JSON.stringify({
  id: 'chatcmpl-mock0000000000000000000000',
  object: 'chat.completion',
  created: 1700000000,
  model: 'mock-model-1',
  choices: [
    { index: 0, message: { role: 'assistant', content: 'Hello! This is a mock completion from the upstream.' }, finish_reason: 'stop' },
  ],
  usage: { prompt_tokens: 42, completion_tokens: 12, total_tokens: 54 },
});

/**
 * What the providers send with every 200 answer, so that a relay copies (and a later version may read)
 * as many headers as in production. Not exhausted: nothing here should cool a key.
 */
export const OPENAI_HEADERS = {
  'openai-organization': 'org-bench0000000000000000',
  'openai-processing-ms': '212',
  'openai-project': 'proj_bench00000000000000',
  'openai-version': '2020-10-01',
  'x-ratelimit-limit-requests': '10000',
  'x-ratelimit-limit-tokens': '30000000',
  'x-ratelimit-remaining-requests': '9999',
  'x-ratelimit-remaining-tokens': '29999785',
  'x-ratelimit-reset-requests': '6ms',
  'x-ratelimit-reset-tokens': '0s',
  'x-request-id': 'req_0b9c3f0e8d7a4f6b9c1d2e3f4a5b6c7d',
};
export const ANTHROPIC_HEADERS = {
  'anthropic-organization-id': '00000000-0000-4000-8000-000000000000',
  'anthropic-ratelimit-requests-limit': '4000',
  'anthropic-ratelimit-requests-remaining': '3999',
  'anthropic-ratelimit-requests-reset': '2026-01-01T00:00:01Z',
  'anthropic-ratelimit-input-tokens-limit': '2000000',
  'anthropic-ratelimit-input-tokens-remaining': '2000000',
  'anthropic-ratelimit-input-tokens-reset': '2026-01-01T00:00:00Z',
  'anthropic-ratelimit-output-tokens-limit': '400000',
  'anthropic-ratelimit-output-tokens-remaining': '400000',
  'anthropic-ratelimit-output-tokens-reset': '2026-01-01T00:00:00Z',
  'anthropic-ratelimit-tokens-limit': '2400000',
  'anthropic-ratelimit-tokens-remaining': '2400000',
  'anthropic-ratelimit-tokens-reset': '2026-01-01T00:00:00Z',
  'request-id': 'req_011CVbench000000000000000',
};
/** Which header carries the key on each route: Anthropic's x-api-key, OpenAI's bearer token. */
export function keyHeader(path: string, key: string): [name: string, value: string] {
  return path.startsWith(MESSAGES) ? ['x-api-key', key] : ['authorization', `Bearer ${key}`];
}

const SYSTEM = 'You are a helpful assistant. '.repeat(8).trim();
function conversation(): { role: 'user' | 'assistant'; content: string }[] {
  return Array.from({ length: 8 }, (_, i) => ({
    role: i % 2 ? ('assistant' as const) : ('user' as const),
    content: `Message ${i}: lorem ipsum dolor sit amet, consectetur adipiscing elit.`,
  }));
}

export interface BodyOptions {
  stream?: boolean;
  /** Read by the mock only: hold the stream open after its first content until RELEASE_PATH is called. */
  hold?: boolean;
  model?: string;
}

/** A chat request of about 1 KB, as a real client would send. */
export function chatBody(options: BodyOptions = {}): string {
  const body: Record<string, unknown> = {
    model: options.model ?? MODEL,
    temperature: 0.2,
    messages: [{ role: 'system', content: SYSTEM }, ...conversation()],
  };
  if (options.stream) body['stream'] = true;
  if (options.hold) body['bench_hold'] = true;
  return JSON.stringify(body);
}

/** The same conversation as a streaming OpenAI Responses request. */
function responsesBody(options: BodyOptions): string {
  const body: Record<string, unknown> = {
    model: options.model ?? MODEL,
    temperature: 0.2,
    instructions: SYSTEM,
    input: conversation(),
    stream: true,
  };
  if (options.hold) body['bench_hold'] = true;
  return JSON.stringify(body);
}

/** The same conversation as a streaming Anthropic Messages request. */
function messagesBody(options: BodyOptions): string {
  const body: Record<string, unknown> = {
    model: 'claude-sonnet-4-5',
    max_tokens: 1024,
    temperature: 0.2,
    system: SYSTEM,
    messages: conversation(),
    stream: true,
  };
  if (options.hold) body['bench_hold'] = true;
  return JSON.stringify(body);
}

/** How a client asks for each kind of stream: route, body, and headers with `key` where the provider wants it. */
export const STREAM_REQUESTS: Record<
  StreamKind,
  { path: string; body: (options: BodyOptions) => string; headers: (key: string) => Record<string, string> }
> = {
  chat: { path: CHAT, body: (o) => chatBody({ ...o, stream: true }), headers: (key) => ({ authorization: `Bearer ${key}` }) },
  responses: { path: RESPONSES, body: responsesBody, headers: (key) => ({ authorization: `Bearer ${key}` }) },
  messages: { path: MESSAGES, body: messagesBody, headers: (key) => ({ 'x-api-key': key, 'anthropic-version': '2023-06-01' }) },
};
