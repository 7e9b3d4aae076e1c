/**
 * Whether a keyPassthrough path may go to the upstream: the path the
 * upstream will route must be the one the gateway checked, under the
 * target's base path. Upstreams (and proxies in front of them) resolve a
 * request target as WHATWG URL parsing does, where `\` is a `/` and `%2e` a
 * dot, and many decode `%2f` and `%5c` to slashes before routing; a guard that
 * looks only for `/../` is walked around with `/v1/..\..\admin`.
 */

// "/./", "/../", also percent-encoded (WHATWG URL parsing reads %2e as a dot), anywhere in the path.
const DOT_SEGMENT = /(^|\/)(\.|%2e){1,2}(\/|$)/i;
// A backslash is a slash to WHATWG URL parsing (http, https); %2f and %5c are one to many servers.
const SLASH_LOOKALIKE = /\\|%2f|%5c/i;

export type PathCheck =
  /** `routed`: the path as the upstream will route it, relative to the base path, percent-decoded. */
  { ok: true; routed: string } | { ok: false };

/** `path` is the request's path relative to the mount point; `target` the upstream's base URL (its path without a trailing slash in `basePath`). */
export function checkPassthroughPath(path: string, target: URL, basePath: string): PathCheck {
  if (SLASH_LOOKALIKE.test(path) || DOT_SEGMENT.test(path)) return { ok: false };
  const sent = basePath + path;
  let resolved: URL;
  try {
    resolved = new URL(sent, target.origin);
  } catch {
    return { ok: false };
  }
  const { pathname } = resolved;
  // A leading "//" is another host to a URL parser; a segment that vanished or appeared is a resolution.
  if (resolved.origin !== target.origin || pathname.split('/').length !== sent.split('/').length) return { ok: false };
  if (!pathname.startsWith(basePath + '/')) return { ok: false };
  try {
    return { ok: true, routed: decodeURIComponent(pathname.slice(basePath.length)) };
  } catch {
    return { ok: false }; // a malformed percent-encoding: no two servers read it alike
  }
}
