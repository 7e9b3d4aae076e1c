/**
 * The methods the provider APIs use. keyPassthrough forwards these only:
 * `TRACE` to an upstream that echoes it would hand the request, pool key
 * included, back to the client, and WebDAV or cache methods (`PROPFIND`,
 * `PURGE`) have no business reaching a provider with a pool key.
 */
export const PASSTHROUGH_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** The `Allow` header of the 405 the gateway writes for any other method. */
export const ALLOW_HEADER = [...PASSTHROUGH_METHODS].join(', ');
