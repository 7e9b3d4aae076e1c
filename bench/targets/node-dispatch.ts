/**
 * Floor C: a bare node:http server + a minimal undici `dispatch()` relay, one
 * fixed key: no Readable for the answer, each chunk written to the client as
 * it arrives (paused while the client's socket is full), the upstream request
 * aborted when the client leaves. Same headers as express-relay.
 */
import type { ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { listen, upstream } from './listen.js';
import { ROUTES, requestHeaders, responseHeaders } from './minimal-relay.js';

const pool = new Pool(upstream);

function handler(res: ServerResponse): Dispatcher.DispatchHandler {
  return {
    onRequestStart(controller) {
      res.once('close', () => {
        if (!res.writableFinished) controller.abort(new Error('the client went away'));
      });
    },
    onResponseStart(_controller, statusCode, headers) {
      res.writeHead(statusCode, responseHeaders(headers));
    },
    onResponseData(controller, chunk) {
      if (!res.write(chunk)) {
        controller.pause();
        res.once('drain', () => controller.resume());
      }
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError() {
      if (res.headersSent) return void res.destroy();
      res.writeHead(502).end();
    },
  };
}

listen((req, res) => {
  const path = req.url?.split('?', 1)[0] ?? '';
  if (req.method !== 'POST' || !ROUTES.has(path)) return void res.writeHead(404).end();
  pool.dispatch({ method: 'POST', path: req.url!, headers: requestHeaders(path, req.headers), body: req }, handler(res));
});
