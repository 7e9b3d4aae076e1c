/**
 * Streams shaped as the providers send them, for the mock upstream: the
 * bench's streams (typed against the official SDKs' event types), split into
 * frames, plus the error frames the providers send inside a 200 stream, and
 * ways to write them (one frame per TCP write, many per write, or cut in
 * awkward places: inside a frame, between CR and LF).
 */
import type { ServerResponse } from 'node:http';
import { STREAMS, type StreamKind } from '../../bench/provider-streams.js';
import type { Behaviour } from './mock-upstream.js';

export type { StreamKind };

/** Every frame of a healthy stream of `kind`, in order. */
export function framesOf(kind: 'responses' | 'messages'): string[] {
  const { preamble, tail } = STREAMS[kind];
  return [...preamble, ...tail.split(/(?<=\n\n)/).filter((f) => f !== '')];
}

/** A chat completion stream as OpenAI sends it: a role-only first chunk, then content, a finish, [DONE]. */
export function chatFrames(words: readonly string[] = ['Hel', 'lo', '!']): string[] {
  const chunk = (delta: object, finish: string | null = null) =>
    `data: ${JSON.stringify({
      id: 'chatcmpl-BxQ9n2kq4Ztq1V3Xc0a8mKpL',
      object: 'chat.completion.chunk',
      created: 1755377858,
      model: 'gpt-4o-mini-2024-07-18',
      service_tier: 'default',
      system_fingerprint: 'fp_560af6e559',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      obfuscation: 'x1',
    })}\n\n`;
  return [
    chunk({ role: 'assistant', content: '', refusal: null }),
    ...words.map((content) => chunk({ content })),
    chunk({}, 'stop'),
    'data: [DONE]\n\n',
  ];
}

/** The opening a healthy stream of `kind` sends before any content (what the hold keeps back). */
export function openingOf(kind: StreamKind): string[] {
  if (kind === 'chat') return chatFrames().slice(0, 1);
  const frames = framesOf(kind);
  const first = frames.findIndex((f) =>
    kind === 'responses' ? /^event: response\.output_/.test(f) : /^event: content_block_delta/.test(f),
  );
  return frames.slice(0, first);
}

export const errorFrames = {
  /** Anthropic, after message_start: "an error can occur after returning a 200 response". */
  anthropicOverloaded: `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' }, request_id: 'req_011CSHoEeqs5C35K2UUqR7Fy' })}\n\n`,
  anthropicRateLimited: `event: error\ndata: ${JSON.stringify({
    type: 'error',
    error: {
      type: 'rate_limit_error',
      message: 'This request would exceed the rate limit for your organization of 8,000 output tokens per minute.',
    },
    request_id: 'req_011CSHoEeqs5C35K2UUqR7Fz',
  })}\n\n`,
  /** OpenAI Responses, after response.created. */
  responsesQuota: `event: error\ndata: ${JSON.stringify({
    type: 'error',
    code: 'insufficient_quota',
    message: 'You exceeded your current quota, please check your plan and billing details.',
    param: null,
    sequence_number: 1,
  })}\n\n`,
  /** OpenAI chat: a first frame that is an error. */
  chatRateLimited: `data: ${JSON.stringify({
    error: {
      message:
        'Rate limit reached for gpt-4o-mini in organization org-7kQe2iT0mBxWc3a9 on tokens per min (TPM): Limit 200000, Used 199800, Requested 1200.',
      type: 'tokens',
      param: null,
      code: 'rate_limit_exceeded',
    },
  })}\n\n`,
  chatServerError: `data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null } })}\n\n`,
};

export type WriteStyle = 'frame-per-write' | 'all-at-once' | 'awkward' | 'crlf';

/** What a stream of `frames` is on the wire in `style` (CRLF line ends for 'crlf'). */
export function wireOf(frames: readonly string[], style: WriteStyle): string {
  const text = frames.join('');
  return style === 'crlf' ? text.replaceAll('\n', '\r\n') : text;
}

/**
 * Writes `frames` as `style` says: one TCP write per frame (each on its own turn), all in one write,
 * cut in odd places, or with CRLF line ends cut between every CR and its LF.
 */
export async function writeFrames(res: ServerResponse, frames: readonly string[], style: WriteStyle): Promise<void> {
  const text = wireOf(frames, style);
  if (style === 'all-at-once') {
    res.write(text);
    return;
  }
  const pieces = style === 'frame-per-write' ? frames : style === 'crlf' ? text.split(/(?<=\r)/) : awkwardPieces(text);
  for (const piece of pieces) {
    res.write(piece);
    await new Promise((resolve) => setTimeout(resolve, 2)); // its own write, its own chunk at the gateway
  }
}

/** Cuts inside `data:` lines, right after `data`, and between the two newlines of a frame end. */
function awkwardPieces(text: string): string[] {
  const pieces: string[] = [];
  let at = 0;
  for (let i = 7; i < text.length; i += 13 + (i % 11)) {
    pieces.push(text.slice(at, i));
    at = i;
  }
  pieces.push(text.slice(at));
  return pieces.filter((p) => p !== '');
}

/** A 200 event stream of `frames`, with the headers the providers send. */
export function streamOf(
  frames: readonly string[],
  style: WriteStyle = 'frame-per-write',
  headers: Record<string, string> = {},
): Behaviour {
  return async (_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-request-id': 'req_stream',
      ...headers,
    });
    await writeFrames(res, frames, style);
    res.end();
  };
}
