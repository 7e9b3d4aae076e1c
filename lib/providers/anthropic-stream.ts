/**
 * The opening of Anthropic's Messages stream: `message_start`, `ping`, and the
 * `content_block_start` of an empty text or thinking block come before any
 * content, which begins with the first `content_block_delta` (or a tool-use
 * block, or the end). An error before content: `event: error` with the
 * envelope `{ type: 'error', error: { type, message, details? } }`, whose
 * `error.type` says the status it stands for.
 */
import { errorObject, isObject, stringField } from './causes.js';
import { frameJson, routeKind, type FrameVerdict, type StreamKind, type StreamReading } from './streams.js';
import type { SseFrame } from '../upstream/sse.js';

const STATUS_OF: Readonly<Record<string, number>> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
};

export const anthropicStreams: StreamReading = {
  kindOf: (route) => (routeKind(route) === 'messages' ? 'messages' : undefined),

  frame(_kind: StreamKind, frame: SseFrame): FrameVerdict {
    if (frame.data === undefined) return 'hold';
    // The event name says what it is: message_start's data (the whole message) is not worth parsing.
    if (frame.event === 'message_start' || frame.event === 'ping') return 'hold';
    const json = frameJson(frame);
    const type = frame.event ?? (isObject(json) ? stringField(json, 'type') : undefined);
    if (type === 'message_start' || type === 'ping') return 'hold';
    if (type === 'content_block_start') return emptyBlock(json) ? 'hold' : 'content';
    if (type === 'error') {
      const error = errorObject(json);
      return { status: STATUS_OF[stringField(error, 'type') ?? ''] ?? 500, body: isObject(json) ? json : { type: 'error', error: {} } };
    }
    return 'content';
  },

  errorEvent(_kind: StreamKind, message: string): string {
    return `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'api_error', message } })}\n\n`;
  },
};

function emptyBlock(json: unknown): boolean {
  const block = isObject(json) ? json['content_block'] : undefined;
  if (!isObject(block)) return false;
  if (block['type'] === 'text') return block['text'] === '' || block['text'] === undefined;
  if (block['type'] === 'thinking') return block['thinking'] === '' || block['thinking'] === undefined;
  return false;
}
