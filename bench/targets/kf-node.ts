/**
 * kf-node: keyFailover mounted on a bare node:http server, no Express, the
 * pool given as the `pool` option, a 404 for what it passes on. The Anthropic
 * middleware sits behind the OpenAI one, as in the Express targets.
 */
import { KeyPool, keyFailover } from '../../lib/index.js';
import { KEYS } from '../shared.js';
import { listen, upstream } from './listen.js';

const failover = keyFailover({ target: upstream, pool: new KeyPool({ keys: KEYS }), logger: false });
const anthropic = keyFailover({ provider: 'anthropic', target: upstream, pool: new KeyPool({ keys: KEYS }), logger: false });

listen((req, res) =>
  failover(req, res, () =>
    anthropic(req, res, () => {
      res.statusCode = 404;
      res.end();
    }),
  ),
);
