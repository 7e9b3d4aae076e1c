/**
 * What the opening of a provider's stream says. A 200 stream can still fail
 * before its first content (Anthropic's `event: error` after `message_start`,
 * OpenAI's `event: error` after `response.created`, a first chat chunk
 * `data: {"error": ...}`): such a frame is the equivalent of a failing HTTP
 * answer, and is judged as one. A provider says, per frame of the opening,
 * whether to keep holding, whether content has begun, or what failure it is.
 */
import type { SseFrame } from '../upstream/sse.js';
import type { StreamHold } from '../upstream/stream-hold.js';

/** The streams the intercepted routes answer with. */
export type StreamKind = 'chat' | 'responses' | 'messages';

/** An error frame as the HTTP answer it stands for: a status and the provider's error body. */
export interface StreamFailure {
  status: number;
  body: unknown;
}

export type FrameVerdict = 'hold' | 'content' | StreamFailure;

export interface StreamReading {
  /** The kind of stream a route answers with, or undefined for a route that does not stream. */
  kindOf(route: string): StreamKind | undefined;
  /** What a frame at the opening of a stream of `kind` says. */
  frame(kind: StreamKind, frame: SseFrame): FrameVerdict;
  /**
   * The provider-shaped error event that ends a stream of `kind` cut after its commit (reset, silence):
   * what the official SDKs raise on, so that a cut stream never looks complete.
   */
  errorEvent(kind: StreamKind, message: string): string;
}

/** The JSON of a frame's data, or undefined. Never throws. */
export function frameJson(frame: SseFrame): unknown {
  if (frame.data === undefined || frame.data === '' || frame.data === '[DONE]') return undefined;
  try {
    return JSON.parse(frame.data) as unknown;
  } catch {
    return undefined;
  }
}

export function routeKind(route: string): StreamKind | undefined {
  if (route.endsWith('/chat/completions')) return 'chat';
  if (route.endsWith('/responses')) return 'responses';
  if (route.endsWith('/messages')) return 'messages';
  return undefined;
}

/** A route's stream hold, and the provider-shaped event that ends a stream cut after its commit. */
export interface RouteStream {
  hold: StreamHold;
  breakEvent: string;
}

/** The most bytes of a stream's opening held back: past it the stream commits, content or not. */
export const STREAM_HOLD_BYTES = 64 * 1024;

/** The hold of each kind of stream a provider's routes answer with, made once per kind. */
export class RouteStreams {
  private readonly made = new Map<StreamKind, RouteStream>();
  constructor(
    private readonly streams: StreamReading | undefined,
    private readonly holdMs: number,
  ) {}

  /** For a route that streams; undefined for one that does not. */
  for(route: string): RouteStream | undefined {
    const { streams } = this;
    const kind = streams?.kindOf(route);
    if (kind === undefined || streams === undefined) return undefined;
    let stream = this.made.get(kind);
    if (stream === undefined) {
      stream = {
        hold: { read: (frame) => streams.frame(kind, frame), holdMs: this.holdMs, maxBytes: STREAM_HOLD_BYTES },
        breakEvent: streams.errorEvent(kind, 'The upstream stream broke off before it was complete.'),
      };
      this.made.set(kind, stream);
    }
    return stream;
  }
}
