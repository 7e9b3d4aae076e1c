import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import type { ResponseHeaders } from './rate-limit-headers.js';

/**
 * Undoes the Content-Encoding of an answer, as `fetch` does, for the callers
 * of createFailoverFetch: they asked for no encoding (Accept-Encoding is not
 * forwarded), and an SDK cannot parse a compressed body it did not expect.
 * Streaming: each chunk is decoded as it arrives (SSE events keep flowing),
 * never buffered whole. Codings are undone last first (`gzip, br`: br, then
 * gzip); an unknown coding leaves the body and its headers as they are, as
 * `fetch` does.
 */

type Decoder = () => Transform;

// Flushed at each chunk and tolerant of a truncated end, like undici's fetch.
const ZLIB = { flush: zlib.constants.Z_SYNC_FLUSH, finishFlush: zlib.constants.Z_SYNC_FLUSH };
const BROTLI = { flush: zlib.constants.BROTLI_OPERATION_FLUSH, finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH };

const DECODERS: Readonly<Record<string, Decoder>> = {
  gzip: () => zlib.createGunzip(ZLIB),
  'x-gzip': () => zlib.createGunzip(ZLIB),
  deflate: () => new DeflateDecoder(),
  br: () => zlib.createBrotliDecompress(BROTLI),
  ...zstdDecoder(),
};

/** zstd, where this Node has it (22.15 and later). */
function zstdDecoder(): Record<string, Decoder> {
  const create = (zlib as { createZstdDecompress?: (options?: object) => Transform }).createZstdDecompress;
  return create === undefined ? {} : { zstd: () => create() };
}

export function decodeBody(headers: ResponseHeaders, body: Readable): { headers: ResponseHeaders; body: Readable } {
  const decoders = decodersFor(headers['content-encoding']);
  if (decoders === undefined) return { headers, body };
  // The body is no longer the one these two described.
  const rest = Object.fromEntries(Object.entries(headers).filter(([name]) => name !== 'content-encoding' && name !== 'content-length'));
  // pipeline: an error in any stage destroys every stage (the upstream body included, which frees its connection);
  // the consumer destroying the last stage (a cancelled body) does the same.
  const decoded = pipeline([body, ...decoders.map((make) => make())], ignore) as unknown as Readable;
  return { headers: rest, body: decoded };
}

/** The decoders to apply in order, or undefined when there is nothing (or nothing known) to undo. */
export function decodersFor(value: string | string[] | undefined): Decoder[] | undefined {
  if (value === undefined) return undefined;
  const codings = (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');
  if (codings.length === 0) return undefined;
  const decoders: Decoder[] = [];
  for (const coding of codings.reverse()) {
    const decoder = DECODERS[coding];
    if (decoder === undefined) return undefined;
    decoders.push(decoder);
  }
  return decoders;
}

function ignore(): void {
  // The error reaches the consumer through the last stage; nothing else to do.
}

/**
 * `deflate` as servers send it: zlib-wrapped (RFC 1950) as the spec says, or
 * raw deflate as some do; the first byte tells which (a zlib header's low
 * nibble is 8, CM = deflate).
 */
class DeflateDecoder extends Transform {
  private inner: zlib.Inflate | zlib.InflateRaw | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (chunk.length === 0) return done();
    if (this.inner === undefined) {
      this.inner = (chunk[0]! & 0x0f) === 0x08 ? zlib.createInflate(ZLIB) : zlib.createInflateRaw(ZLIB);
      this.inner.on('data', (data: Buffer) => this.push(data));
      this.inner.on('error', (error) => this.destroy(error));
    }
    this.inner.write(chunk, () => done());
  }

  override _flush(done: TransformCallback): void {
    if (this.inner === undefined) return done();
    this.inner.once('end', () => done());
    this.inner.end();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.inner?.destroy();
    done(error);
  }
}
