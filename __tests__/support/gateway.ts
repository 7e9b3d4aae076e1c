import express, { type Express } from 'express';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { MockUpstream } from './mock-upstream.js';
import {
  keyFailover,
  KeyPool,
  type FailoverFetch,
  type KeyFailoverMiddleware,
  type KeyFailoverOptions,
  type KeyPoolOptions,
} from '../../lib/index.js';

// Shaped like real keys, but not real, and shorter than anything a secret scanner flags.
export const KEYS = ['sk-test-k0-Aa0000000000000000a0', 'sk-test-k1-Bb1111111111111111b1', 'sk-test-k2-Cc2222222222222222c2'] as const;
export const [K0, K1, K2] = KEYS;

/** A fake clock the tests move by hand. */
export class FakeClock {
  constructor(public time = Date.parse('2026-01-01T00:00:00Z')) {}
  now = (): number => this.time;
  advance(ms: number): void {
    this.time += ms;
  }
}

export interface Gateway {
  app: Express;
  pool: KeyPool;
  clock: FakeClock;
  middleware: KeyFailoverMiddleware;
}

/** An Express app with the pool on app.locals and the middleware mounted, as a user would write it. */
export function gateway(
  target: string,
  options: Omit<KeyFailoverOptions, 'target'> = {},
  poolOptions: Partial<KeyPoolOptions> = {},
  setup?: (app: Express) => void,
): Gateway {
  const clock = new FakeClock();
  const app = express();
  // No cooldown jitter: these tests check the deadlines the headers give, to the millisecond (jitter has tests of its own).
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now, cooldownJitter: 0, ...poolOptions });
  app.locals['keyPool'] = pool;
  setup?.(app);
  const middleware = keyFailover({ target, logger: false, ...options });
  app.use(middleware);
  opened.push(middleware);
  return { app, pool, clock, middleware };
}

const opened: KeyFailoverMiddleware[] = [];

/** Closes the upstream connection pools of every gateway a test file made. */
export async function closeGateways(): Promise<void> {
  await Promise.all(opened.splice(0).map((m) => m.close()));
}

/** Starts the app on a real socket, for tests that read a response as it arrives. */
export async function listen(app: Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const CHAT = '/v1/chat/completions';
export const chatBody = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

/** Each key's state as a request for `model` sees it: a key cooling for that model only shows as 'cooling'. */
export function statesFor(pool: KeyPool, model: string = chatBody.model): string[] {
  return pool.snapshot().map((k) => (k.state === 'available' && k.models?.some((m) => m.model === model) ? 'cooling' : k.state));
}

/** Where a pool keeps a key's state: its id and a truncated SHA-256 of its value. */
export function stateId(id: string, key: string): string {
  return `${id}@${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

/**
 * The usual test file set-up: one mock upstream for the file, reset after each
 * test; at the end the gateways the file made and the upstream are closed.
 */
export function useMockUpstream(): MockUpstream {
  const upstream = new MockUpstream();
  beforeAll(() => upstream.listen());
  afterEach(() => upstream.reset());
  afterAll(async () => {
    await closeGateways();
    await upstream.close();
  });
  return upstream;
}

/**
 * The set-up of a createFailoverFetch test file: one mock upstream for the file, reset after each test;
 * at the end the fetches a test tracked are closed, then the upstream.
 */
export function useFetchUpstream(): { upstream: MockUpstream; track: (fetch: FailoverFetch) => FailoverFetch } {
  const upstream = new MockUpstream();
  const fetches: FailoverFetch[] = [];
  beforeAll(() => upstream.listen());
  afterEach(() => upstream.reset());
  afterAll(async () => {
    await Promise.all(fetches.map((f) => f.close()));
    await upstream.close();
  });
  return {
    upstream,
    track: (fetch) => {
      fetches.push(fetch);
      return fetch;
    },
  };
}
