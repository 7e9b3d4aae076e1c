import type { IncomingMessage } from 'node:http';

/**
 * The request body, read once into a buffer so that it can be sent again to
 * the next key. When a body parser already consumed the stream, the body is
 * rebuilt from `req.body`.
 */

export type RequestBody =
  | { ok: true; body: Buffer; /** set when the body was re-serialized as JSON */ contentType?: string }
  | { ok: false; reason: 'too_large' | 'consumed' | 'aborted' };

type ParsedRequest = IncomingMessage & { body?: unknown; _body?: boolean };

export async function readRequestBody(req: ParsedRequest, limit: number): Promise<RequestBody> {
  if (req._body === true || req.readableEnded) return fromParsedBody(req.body, limit);
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return stopReading(req, 'too_large');

  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: RequestBody): void => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) finish(stopReading(req, 'too_large'));
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish({ ok: true, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) });
    const onError = (): void => finish({ ok: false, reason: 'aborted' });
    const onClose = (): void => {
      if (!req.complete) finish({ ok: false, reason: 'aborted' });
    };
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

// Past the limit, the rest of the body is read and thrown away (Node does the
// same for unread bodies), so that the client, still sending, gets its 413.
function stopReading(req: IncomingMessage, reason: 'too_large'): RequestBody {
  req.resume();
  return { ok: false, reason };
}

function fromParsedBody(parsed: unknown, limit: number): RequestBody {
  let body: Buffer;
  let contentType: string | undefined;
  if (Buffer.isBuffer(parsed)) body = parsed;
  else if (typeof parsed === 'string') body = Buffer.from(parsed);
  else if (typeof parsed === 'object' && parsed !== null) {
    body = Buffer.from(JSON.stringify(parsed));
    contentType = 'application/json';
  } else return { ok: false, reason: 'consumed' };
  if (body.length > limit) return { ok: false, reason: 'too_large' };
  return contentType ? { ok: true, body, contentType } : { ok: true, body };
}
