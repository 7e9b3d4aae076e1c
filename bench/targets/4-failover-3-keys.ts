/** Target 4: Express + keyFailover, a 3-key pool, all keys healthy. */
import { KEYS } from '../shared.js';
import { serveFailover } from './failover-app.js';

serveFailover({ keys: KEYS });
