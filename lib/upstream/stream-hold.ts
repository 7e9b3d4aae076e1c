/**
 * The hold: a 200 event stream is read frame by frame until it says
 * something, while nothing reaches the client. Its opening (frames that
 * carry no content yet) is held; at the first content frame, or after
 * `holdMs`, or past `maxBytes`, the stream commits: what was held goes out
 * byte for byte, and the rest is relayed as it arrives, never parsed. An
 * error frame before content ends the hold as a failure (the equivalent of a
 * failing HTTP answer, judged like one); what was held is dropped. Knows
 * nothing of keys: the provider's reading says what each frame is.
 */
import type { Readable } from 'node:stream';
import type { FrameVerdict, StreamFailure } from '../providers/streams.js';
import type { UpstreamResponse } from './relay.js';
import { SseReader, type SseFrame } from './sse.js';

export interface StreamHold {
  /** What a frame of the opening says. */
  read(frame: SseFrame): FrameVerdict;
  /** The longest the opening is held; 0 turns the hold off. */
  holdMs: number;
  /** The most bytes held; past it the stream commits. */
  maxBytes: number;
}

export type HoldOutcome =
  /** The stream committed: `response.head` is what was held, its body the rest. */
  | { kind: 'commit'; response: UpstreamResponse }
  /** An error frame before any content: the stream is over (its body destroyed). */
  | { kind: 'failure'; failure: StreamFailure }
  /** The upstream failed (or went silent) before content; nothing was written. */
  | { kind: 'lost'; error: unknown };

/**
 * A 2xx event stream, not content-encoded: one whose opening can be held and read as it is, and
 * which a break event can end.
 */
export function isPlainEventStream(response: UpstreamResponse): boolean {
  if (response.status < 200 || response.status > 299) return false;
  const type = response.headers['content-type'];
  const encoding = response.headers['content-encoding'];
  return (
    typeof type === 'string' && type.toLowerCase().startsWith('text/event-stream') && (encoding === undefined || encoding === 'identity')
  );
}

export function holdStream(response: UpstreamResponse, hold: StreamHold): Promise<HoldOutcome> {
  const { body } = response;
  const reader = new SseReader();
  const held: Buffer[] = [];
  let size = 0;
  return new Promise((resolve) => {
    const finish = (outcome: HoldOutcome): void => {
      clearTimeout(timer);
      body.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (outcome.kind === 'commit') body.pause();
      resolve(outcome);
    };
    const commit = (): void => finish({ kind: 'commit', response: { ...response, head: held } });
    const onData = (chunk: Buffer): void => {
      held.push(chunk);
      size += chunk.length;
      for (const frame of reader.push(chunk)) {
        const verdict = hold.read(frame);
        if (verdict === 'hold') continue;
        if (verdict === 'content') return commit();
        body.on('error', ignore).destroy(); // the stream is over: free its connection
        return finish({ kind: 'failure', failure: verdict });
      }
      if (size > hold.maxBytes) commit();
    };
    const onEnd = (): void => commit(); // a stream that ended while held: relayed as it was
    const onError = (error: unknown): void => finish({ kind: 'lost', error });
    const onClose = (): void => {
      if (!body.readableEnded) finish({ kind: 'lost', error: new Error('upstream stream closed before its first content') });
    };
    const timer = setTimeout(commit, hold.holdMs);
    body.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

/** The held bytes, then the rest of the body: for a consumer that wants one stream (createFailoverFetch). */
export async function* withHead(head: readonly Buffer[], body: Readable): AsyncGenerator<Buffer> {
  yield* head;
  for await (const chunk of body) yield chunk as Buffer;
}

function ignore(): void {
  // an error on a stream nobody reads any more
}
