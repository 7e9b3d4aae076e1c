/**
 * pipe: a bare node:http keep-alive pipe proxy with one fixed key; the
 * practical limit for a proxy written in Node. No body buffering, no failover.
 */
import http from 'node:http';
import { KEYS, keyHeader } from '../shared.js';
import { listen, upstream } from './listen.js';

const target = new URL(upstream);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });
const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization'];

listen((req, res) => {
  const headers: http.OutgoingHttpHeaders = { ...req.headers, host: target.host };
  for (const name of [...HOP_BY_HOP, 'authorization', 'x-api-key']) delete headers[name];
  const [keyName, keyValue] = keyHeader(req.url ?? '', KEYS[0]);
  headers[keyName] = keyValue;
  const outgoing = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
    (answer) => {
      const back: http.OutgoingHttpHeaders = { ...answer.headers };
      for (const name of HOP_BY_HOP) delete back[name];
      res.writeHead(answer.statusCode ?? 502, back);
      answer.pipe(res);
    },
  );
  outgoing.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on('close', () => {
    if (!res.writableFinished) outgoing.destroy();
  });
  req.pipe(outgoing);
});
