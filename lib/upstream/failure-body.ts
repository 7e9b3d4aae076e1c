/**
 * The body of a failing answer, read (bounded) so that its cause can be
 * told, and kept so that it can still be relayed byte for byte. Only
 * failing answers are read; a success is never buffered.
 */
import zlib from 'node:zlib';
import { holdResponse, type HeldResponse, type UpstreamResponse } from './relay.js';
import type { HeaderValue } from './rate-limit-headers.js';

// Node 22.15 and later; the gateway asks for zstd upstream only where it can undo it.
const zstdDecompressSync = (zlib as { zstdDecompressSync?: (body: Buffer, options: zlib.ZlibOptions) => Buffer }).zstdDecompressSync;

/** A failing answer is held up to this size; a larger one is relayed as it streams, and told apart by its status only. */
export const HELD_ANSWER_LIMIT = 1024 * 1024;
/** Error bodies are small: past this (decoded), the body is not parsed. */
const PARSED_LIMIT = 256 * 1024;

export type ReadFailure =
  | { held: HeldResponse; json: unknown }
  | { streaming: UpstreamResponse; json: undefined }
  /** The upstream died while its body was read: nothing left to relay. */
  | { lost: true; json: undefined };

export async function readFailure(upstream: UpstreamResponse): Promise<ReadFailure> {
  const read = await holdResponse(upstream, HELD_ANSWER_LIMIT);
  if (read === undefined) return { lost: true, json: undefined };
  if ('streaming' in read) return { streaming: read.streaming, json: undefined };
  return { held: read.held, json: parseJson(read.held.body, read.held.headers['content-encoding']) };
}

/** The JSON of a (possibly compressed) body, or undefined when it is not JSON. Never throws. */
export function parseJson(body: Buffer, encoding: HeaderValue): unknown {
  if (body.length === 0) return undefined;
  const text = decode(body, typeof encoding === 'string' ? encoding.trim().toLowerCase() : 'identity');
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** A held body without its content coding (undefined: a coding it cannot undo, or over `limit` decoded). */
export function decodeHeld(body: Buffer, encoding: HeaderValue, limit = HELD_ANSWER_LIMIT): Buffer | undefined {
  return decode(body, typeof encoding === 'string' ? encoding.trim().toLowerCase() : 'identity', limit);
}

function decode(body: Buffer, encoding: string, limit = PARSED_LIMIT): Buffer | undefined {
  const options = { maxOutputLength: limit };
  try {
    switch (encoding) {
      case '':
      case 'identity':
        return body.length > limit ? undefined : body;
      case 'gzip':
      case 'x-gzip':
        return zlib.gunzipSync(body, options);
      case 'deflate':
        return zlib.inflateSync(body, options);
      case 'br':
        return zlib.brotliDecompressSync(body, options);
      case 'zstd':
        return zstdDecompressSync === undefined ? undefined : zstdDecompressSync(body, options);
      default:
        return undefined; // several codings in a row: not worth it for telling a cause
    }
  } catch {
    return undefined; // corrupt, or larger than PARSED_LIMIT once decoded
  }
}
