/** kf-3: Express + keyFailover, a 3-key pool, all keys healthy (also the control row, in a second process). */
import { KEYS } from '../shared.js';
import { serveFailover } from './failover-app.js';

serveFailover({ keys: KEYS });
