/**
 * kf-node: keyFailover mounted on a bare node:http server, no Express, the
 * pool given as the `pool` option, a 404 for what it passes on. The Anthropic
 * middleware sits behind the OpenAI one, as in the Express targets.
 */
import http from 'node:http';
import type { NextFunction } from 'express';
import { KeyPool, keyFailover } from '../../lib/index.js';
import { KEYS } from '../shared.js';
import { listen, upstream } from './listen.js';

const failover = keyFailover({ target: upstream, pool: new KeyPool({ keys: KEYS }), logger: false });
const anthropic = keyFailover({ provider: 'anthropic', target: upstream, pool: new KeyPool({ keys: KEYS }), logger: false });

// The middleware's types are Express's; a bare server hands it node:http's own request and response.
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, next: NextFunction) => void;
const [openaiHandler, anthropicHandler] = [failover, anthropic] as unknown as [Handler, Handler];

listen((req, res) =>
  openaiHandler(req, res, () =>
    anthropicHandler(req, res, () => {
      res.statusCode = 404;
      res.end();
    }),
  ),
);
