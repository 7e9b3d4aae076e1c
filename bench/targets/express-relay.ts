/**
 * Floor B: Express 5 + the most minimal correct undici `request()` relay, one
 * fixed key: the request body streamed upstream as it comes, the answer piped
 * back as it arrives (SSE included), the upstream request aborted when the
 * client leaves. No body buffering, no failover, no timeout. Mounted like
 * keyFailover (`app.use`, route checked on `req.path`).
 */
import express from 'express';
import { Pool } from 'undici';
import { listen, upstream } from './listen.js';
import { ROUTES, abortOnClientGone, relayFailed, requestHeaders, responseHeaders } from './minimal-relay.js';

const pool = new Pool(upstream);
const app = express();
app.use((req, res, next) => {
  if (req.method !== 'POST' || !ROUTES.has(req.path)) return next();
  const controller = abortOnClientGone(res);
  pool
    .request({ method: 'POST', path: req.url, headers: requestHeaders(req.path, req.headers), body: req, signal: controller.signal })
    .then(
      ({ statusCode, headers, body }) => {
        res.writeHead(statusCode, responseHeaders(headers));
        body.once('error', () => res.destroy());
        body.pipe(res);
      },
      () => relayFailed(res),
    );
});
listen(app);
