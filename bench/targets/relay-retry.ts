/**
 * relay-retry: the retrying minimal relay (retry-relay.ts) whose first key the
 * mock always answers 429, so every request takes one more round trip, as
 * kf-429's do. p50(relay-retry) - p50(relay-buffered) is that round trip as a
 * gateway pays it: an undici request from the gateway's process, its 429 read and dropped.
 */
import { KEYS, REJECTED_KEY } from '../shared.js';
import { serveRetryRelay } from './retry-relay.js';

serveRetryRelay([REJECTED_KEY, KEYS[0]]);
