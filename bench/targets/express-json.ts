/**
 * Floor A: Express 5 answering by itself, no upstream: it reads the 1 KB JSON
 * request and answers the mock's own completion (same bytes, same headers).
 * What Express alone costs per request; mounted like keyFailover.
 */
import express from 'express';
import { CHAT, COMPLETION, OPENAI_HEADERS } from '../shared.js';
import { listen } from './listen.js';

const length = String(Buffer.byteLength(COMPLETION));
const app = express();
app.use((req, res, next) => {
  if (req.method !== 'POST' || req.path !== CHAT) return next();
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': length, ...OPENAI_HEADERS });
    res.end(COMPLETION);
  });
});
listen(app);
