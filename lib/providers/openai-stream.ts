/**
 * The opening of OpenAI's streams. Chat completions: `data:` chunks, the
 * first one usually the assistant's role alone; content begins with a delta
 * that carries text, a tool call, a refusal or a finish reason. Responses:
 * named events; `response.created`, `response.queued` and `response.in_progress`
 * come before any output, which begins with the first `response.output_*` or
 * `response.content_part.*` event. An error before content: chat's
 * `data: {"error": {...}}`, Responses' `event: error` (`{ type, code,
 * message, param }`) or `response.failed` (its `response.error`).
 */
import { isObject, stringField } from './causes.js';
import { INVALID_KEY_CODES, QUOTA_CODES, REQUEST_401_CODES } from './openai-causes.js';
import { frameJson, routeKind, type FrameVerdict, type StreamKind, type StreamReading } from './streams.js';
import type { SseFrame } from '../upstream/sse.js';

const RESPONSES_PREAMBLE = new Set(['response.created', 'response.queued', 'response.in_progress']);

export const openaiStreams: StreamReading = {
  kindOf: (route) => {
    const kind = routeKind(route);
    return kind === 'messages' ? undefined : kind;
  },

  frame(kind: StreamKind, frame: SseFrame): FrameVerdict {
    if (frame.data === undefined) return 'hold'; // a comment, a keep-alive
    if (frame.data === '[DONE]') return 'content';
    // A named Responses event says what it is: only an error's data is worth parsing (response.created is kilobytes).
    if (kind === 'responses' && frame.event !== undefined && frame.event !== 'error' && frame.event !== 'response.failed') {
      return RESPONSES_PREAMBLE.has(frame.event) ? 'hold' : 'content';
    }
    const json = frameJson(frame);
    if (!isObject(json)) return 'content'; // not what this reader knows: let it through
    return kind === 'responses' ? responsesFrame(frame.event ?? stringField(json, 'type'), json) : chatFrame(json);
  },

  errorEvent(kind: StreamKind, message: string): string {
    if (kind === 'responses') {
      return `event: error\ndata: ${JSON.stringify({ type: 'error', code: 'stream_interrupted', message, param: null })}\n\n`;
    }
    return `data: ${JSON.stringify({ error: { message, type: 'upstream_error', param: null, code: 'stream_interrupted' } })}\n\n`;
  },
};

function chatFrame(json: Record<string, unknown>): FrameVerdict {
  const error = json['error'];
  if (isObject(error)) return { status: statusOf(error), body: { error } };
  const choices = json['choices'];
  if (!Array.isArray(choices)) return 'content'; // not a chunk this reader knows: let it through
  for (const choice of choices as unknown[]) {
    if (!isObject(choice)) continue;
    if (choice['finish_reason'] !== null && choice['finish_reason'] !== undefined) return 'content';
    const delta = choice['delta'];
    if (!isObject(delta)) continue;
    const content = delta['content'];
    if ((typeof content === 'string' && content !== '') || (Array.isArray(content) && content.length > 0)) return 'content';
    if (delta['tool_calls'] !== undefined || delta['function_call'] !== undefined) return 'content';
    if (typeof delta['refusal'] === 'string' && delta['refusal'] !== '') return 'content';
    if (typeof delta['reasoning_content'] === 'string' && delta['reasoning_content'] !== '') return 'content';
  }
  return 'hold'; // the role alone, an empty first delta, Azure's prompt_filter_results
}

function responsesFrame(type: string | undefined, json: Record<string, unknown>): FrameVerdict {
  if (type === undefined || RESPONSES_PREAMBLE.has(type)) return 'hold';
  if (type === 'error') {
    const error = {
      message: stringField(json, 'message') ?? '',
      type: stringField(json, 'code') ?? 'error',
      param: json['param'] ?? null,
      code: json['code'] ?? null,
    };
    return { status: statusOf(error), body: { error } };
  }
  if (type === 'response.failed') {
    const response = json['response'];
    const failed = isObject(response) ? response['error'] : undefined;
    if (isObject(failed)) {
      const error = {
        message: stringField(failed, 'message') ?? '',
        type: stringField(failed, 'code') ?? 'error',
        param: null,
        code: failed['code'] ?? null,
      };
      return { status: statusOf(error), body: { error } };
    }
  }
  return 'content';
}

/** The HTTP status an OpenAI error object stands for: what its code and type say. */
function statusOf(error: Record<string, unknown>): number {
  const code = stringField(error, 'code') ?? '';
  const type = stringField(error, 'type') ?? '';
  if (INVALID_KEY_CODES.has(code)) return 401;
  if (REQUEST_401_CODES.has(code)) return 401;
  if (QUOTA_CODES.has(code) || type === 'insufficient_quota') return 429;
  if (code === 'rate_limit_exceeded' || type === 'rate_limit_error' || type === 'requests' || type === 'tokens') return 429;
  if (code === 'model_not_found') return 404;
  if (code === 'server_is_overloaded' || code === 'overloaded' || type === 'overloaded_error') return 503;
  if (type === 'invalid_request_error') return 400;
  return 500;
}
