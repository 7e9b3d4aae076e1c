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
