import zlib from 'node:zlib';
/**
 * Request headers that ask a framework or proxy on the far side to take
 * another method or path than the request line's (`X-HTTP-Method-Override:
 * DELETE` on a GET, `X-Original-URL: /admin`). The gateway chose the upstream
 * request line; none of these may change it, so none is forwarded.
 */
export const OVERRIDE_HEADERS: readonly string[] = [
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
];

/**
 * Request headers that carry a credential, whatever the provider: a tenant's own gateway token
 * (`x-api-key`, Azure's `api-key`, a proxy's `Proxy-Authorization`) is never the upstream's business.
 * The provider's key header replaces them.
 */
export const CREDENTIAL_HEADERS: readonly string[] = ['authorization', 'proxy-authorization', 'x-api-key', 'api-key'];

/** The content codings the gateway can undo to read a failing answer: only these are asked for upstream. */
export const DECODABLE_CODINGS: ReadonlySet<string> = new Set([
  'gzip',
  'x-gzip',
  'deflate',
  'br',
  ...(typeof (zlib as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function' ? ['zstd'] : []),
  'identity',
]);

/**
 * The client's Accept-Encoding less the codings the gateway could not decode (and `*`): the
 * upstream's failing answer must stay readable, or its cause would go untold (a "Request too
 * large" read as a plain rate limit). `identity` when nothing is left.
 */
export function decodableAcceptEncoding(value: string | string[]): string {
  const kept: string[] = [];
  for (const entry of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const coding = entry.split(';', 1)[0]!.trim().toLowerCase();
    if (DECODABLE_CODINGS.has(coding) && !/;\s*q\s*=\s*0(\.0*)?\s*$/i.test(entry)) kept.push(entry.trim());
  }
  return kept.length === 0 ? 'identity' : kept.join(', ');
}
