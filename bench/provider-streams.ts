/**
 * The streams the mock upstream sends, shaped as the real APIs send them. The
 * payloads are typed against the official SDKs (openai's ResponseStreamEvent,
 * @anthropic-ai/sdk's RawMessageStreamEvent), so a field the SDKs require
 * cannot be left out. Each stream is split where the bench measures it:
 * `preamble` is every event up to and including the first text delta (one
 * write per event, as the providers do), `tail` the rest.
 */
import type { RawMessageStreamEvent } from '@anthropic-ai/sdk/resources/messages/messages.js';
import type { Response as OpenAIResponse, ResponseOutputText, ResponseStreamEvent } from 'openai/resources/responses/responses.js';

export type StreamKind = 'chat' | 'responses' | 'messages';

export interface ProviderStream {
  /** Events up to and including the first text delta, one string per write. */
  preamble: string[];
  /** The remaining events, sent in one write. */
  tail: string;
  /** Present exactly once in the stream, in the first text delta: where the first content starts. */
  firstContent: string;
  /** The whole stream, for checking that a relay passed it on unchanged. */
  full: string;
}

function stream(preamble: string[], tail: string, firstContent: string): ProviderStream {
  const full = preamble.join('') + tail;
  if (full.split(firstContent).length !== 2 || !preamble.at(-1)!.includes(firstContent))
    throw new Error('the first-content marker must be in the last preamble event, once');
  return { preamble, tail, firstContent, full };
}

// --- Chat Completions (the old bench stream: its first event already carries content) ---

const CHAT_FIRST = 'data: {"id":"chatcmpl-mock","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n';
const CHAT_TAIL =
  'data: {"id":"chatcmpl-mock","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n';

// --- OpenAI Responses ---

const RESPONSE_ID = 'resp_68a1f0c2b7e08190a3c1d2e4f5a6b7c80d9e1f2a3b4c5d6e';
const ITEM_ID = 'msg_68a1f0c3c1e48190b2d3e4f5a6b7c8d90e1f2a3b4c5d6e7f';
const WORDS = ['Hello', '!', ' This', ' is', ' a', ' mock', ' answer', ' from', ' the', ' upstream', '.'];
const TEXT = WORDS.join('');

// `output_text` is the SDK's own convenience property, computed client-side: the API does not send it.
type WireResponse = Omit<OpenAIResponse, 'output_text'>;

function response(status: 'in_progress' | 'completed'): WireResponse {
  const done = status === 'completed';
  return {
    id: RESPONSE_ID,
    object: 'response',
    created_at: 1755377858,
    status,
    background: false,
    completed_at: done ? 1755377859 : null,
    error: null,
    incomplete_details: null,
    instructions: null,
    max_output_tokens: null,
    max_tool_calls: null,
    model: 'gpt-4o-mini-2024-07-18',
    output: done
      ? [
          {
            id: ITEM_ID,
            type: 'message',
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', annotations: [], logprobs: [], text: TEXT }],
          },
        ]
      : [],
    parallel_tool_calls: true,
    previous_response_id: null,
    prompt_cache_key: null,
    reasoning: { effort: null, summary: null },
    safety_identifier: null,
    service_tier: 'auto',
    temperature: 0.2,
    text: { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: 'auto',
    tools: [],
    top_logprobs: 0,
    top_p: 1,
    truncation: 'disabled',
    // The API sends "usage": null until the end; the SDK types it as optional, so it is left out until then.
    ...(done
      ? {
          usage: {
            input_tokens: 212,
            input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
            output_tokens: WORDS.length,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: 212 + WORDS.length,
          },
        }
      : {}),
    metadata: {},
    access_programs: null,
  };
}

type WireEvent<E> = E extends { response: OpenAIResponse } ? Omit<E, 'response'> & { response: WireResponse } : E;

function responsesEvents(): WireEvent<ResponseStreamEvent>[] {
  let sequence_number = 0;
  const seq = (): number => sequence_number++;
  const ids = { item_id: ITEM_ID, output_index: 0, content_index: 0 } as const;
  const part = (text: string): ResponseOutputText => ({ type: 'output_text', annotations: [], logprobs: [], text });
  return [
    { type: 'response.created', sequence_number: seq(), response: response('in_progress') },
    { type: 'response.in_progress', sequence_number: seq(), response: response('in_progress') },
    {
      type: 'response.output_item.added',
      sequence_number: seq(),
      output_index: 0,
      item: { id: ITEM_ID, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
    },
    { type: 'response.content_part.added', sequence_number: seq(), ...ids, part: part('') },
    ...WORDS.map((delta) => ({ type: 'response.output_text.delta' as const, sequence_number: seq(), ...ids, delta, logprobs: [] })),
    { type: 'response.output_text.done', sequence_number: seq(), ...ids, text: TEXT, logprobs: [] },
    { type: 'response.content_part.done', sequence_number: seq(), ...ids, part: part(TEXT) },
    {
      type: 'response.output_item.done',
      sequence_number: seq(),
      output_index: 0,
      item: { id: ITEM_ID, type: 'message', status: 'completed', role: 'assistant', content: [part(TEXT)] },
    },
    { type: 'response.completed', sequence_number: seq(), response: response('completed') },
  ];
}

// --- Anthropic Messages ---

const MESSAGE_ID = 'msg_01XFDUDYJgAACzvnptvVoYEL';

function messagesEvents(): (RawMessageStreamEvent | { type: 'ping' })[] {
  return [
    {
      type: 'message_start',
      message: {
        id: MESSAGE_ID,
        type: 'message',
        role: 'assistant',
        model: 'claude-sonnet-4-5-20250929',
        content: [],
        container: null,
        diagnostics: null,
        stop_details: null,
        stop_reason: null,
        stop_sequence: null,
        usage: {
          input_tokens: 212,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
          output_tokens: 1,
          output_tokens_details: null,
          server_tool_use: null,
          service_tier: 'standard',
          inference_geo: null,
          speed: null,
        },
      },
    },
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '', citations: null } },
    // Not in the SDK's union (the SDK drops it); the API sends it after the first block starts.
    { type: 'ping' },
    ...WORDS.map((text) => ({ type: 'content_block_delta' as const, index: 0, delta: { type: 'text_delta' as const, text } })),
    { type: 'content_block_stop', index: 0 },
    {
      type: 'message_delta',
      delta: { container: null, stop_details: null, stop_reason: 'end_turn', stop_sequence: null },
      usage: {
        input_tokens: 212,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: WORDS.length,
        output_tokens_details: null,
        server_tool_use: null,
      },
    },
    { type: 'message_stop' },
  ];
}

/** `event:` and `data:` lines, as both providers frame their events. */
function frame(event: { type: string }): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** Splits after the first event of type `firstType`. */
function split(events: { type: string }[], firstType: string): ProviderStream {
  const at = events.findIndex((e) => e.type === firstType);
  const framed = events.map(frame);
  return stream(framed.slice(0, at + 1), framed.slice(at + 1).join(''), framed[at]!);
}

export const STREAMS: Record<StreamKind, ProviderStream> = {
  chat: stream([CHAT_FIRST], CHAT_TAIL, CHAT_FIRST),
  responses: split(responsesEvents(), 'response.output_text.delta'),
  messages: split(messagesEvents(), 'content_block_delta'),
};
