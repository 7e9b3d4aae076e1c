/**
 * hpm: Express 5 + http-proxy-middleware 4 with one fixed key: what a
 * user would write without this package. The one deviation from the minimal
 * setup is an agent without httpxy's default cap of 256 sockets, so that the
 * 1 000-stream memory test can run (it changes nothing at 50 connections).
 */
import http from 'node:http';
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { CHAT, KEYS, MESSAGES, RESPONSES } from '../shared.js';
import { listen, upstream } from './listen.js';

const app = express();
app.use(
  createProxyMiddleware({
    target: upstream,
    changeOrigin: true,
    pathFilter: [CHAT, RESPONSES, MESSAGES],
    // Both providers' key headers, overwriting the client's: what a user would write for one proxy in front of both.
    headers: { authorization: `Bearer ${KEYS[0]}`, 'x-api-key': KEYS[0] },
    agent: new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 }),
  }),
);
listen(app);
