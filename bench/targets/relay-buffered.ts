/** relay-buffered: the retrying minimal relay (retry-relay.ts) with one good key: what relay-retry does, less the retry. */
import { KEYS } from '../shared.js';
import { serveRetryRelay } from './retry-relay.js';

serveRetryRelay([KEYS[0]]);
