/**
 * What relay-buffered and relay-retry share: Express 5 + a minimal undici
 * `request()` relay that can send a request twice, so the body is read whole
 * first. Each key in turn: an answer of 429 is read to its end and dropped
 * and the next key is tried; any other answer (or the last key's) is piped
 * back as it arrives, SSE included, and the upstream request is aborted when
 * the client leaves. No parsing, no cooldowns, no timeout: the least any
 * retrying relay pays for one more round trip. Same headers as express-relay.
 */
import express from 'express';
import { Pool } from 'undici';
import { listen, upstream } from './listen.js';
import { ROUTES, abortOnClientGone, relayFailed, requestHeaders, responseHeaders } from './minimal-relay.js';

export function serveRetryRelay(keys: readonly string[]): void {
  const pool = new Pool(upstream);
  const app = express();
  app.use((req, res, next) => {
    if (req.method !== 'POST' || !ROUTES.has(req.path)) return next();
    const controller = abortOnClientGone(res);
    const failed = (): void => relayFailed(res);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('error', failed);
    req.once('end', () => {
      const body = Buffer.concat(chunks);
      const attempt = (i: number): void => {
        pool
          .request({
            method: 'POST',
            path: req.url,
            headers: requestHeaders(req.path, req.headers, keys[i]),
            body,
            signal: controller.signal,
          })
          .then(async ({ statusCode, headers, body: answer }) => {
            if (statusCode === 429 && i + 1 < keys.length) {
              await answer.dump();
              return attempt(i + 1);
            }
            res.writeHead(statusCode, responseHeaders(headers));
            answer.once('error', () => res.destroy());
            answer.pipe(res);
          })
          .catch(failed);
      };
      attempt(0);
    });
  });
  listen(app);
}
