import autocannon from 'autocannon';
import { Pool } from 'undici';
import { CHAT, chatBody } from '../shared.js';

export interface LoadResult {
  /** 2xx answers per second over the run. */
  rps: number;
  /** Exact latencies (ms) of 2xx answers; autocannon's own histogram is whole ms. */
  p50: number;
  p99: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

/** What autocannon sends: by default the 1 KB JSON chat request. */
export interface LoadRequest {
  path: string;
  body: string;
  headers: Record<string, string>;
}

export function jsonRequest(authorization: string): LoadRequest {
  return { path: CHAT, body: chatBody(), headers: { 'content-type': 'application/json', authorization } };
}

export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/**
 * POSTs `request` (the 1 KB chat body) to `port` over `connections` keep-alive connections for `seconds`,
 * in whole seconds: autocannon stops on its one-second tick (0.3 runs 1 s).
 */
export async function runLoad(
  port: number,
  connections: number,
  seconds: number,
  request: LoadRequest,
  overallRate?: number,
): Promise<LoadResult> {
  if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`runLoad: ${seconds} s; autocannon runs whole seconds`);
  const latencies: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${port}${request.path}`,
        method: 'POST',
        headers: request.headers,
        body: request.body,
        connections,
        duration: seconds,
        ...(overallRate === undefined ? {} : { overallRate }),
        timeout: 10,
      },
      (error: unknown, result: autocannon.Result) => (error ? reject(error) : resolve(result)),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
  });
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: result['2xx'] / result.duration,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

/**
 * Load for `ms` over `connections` keep-alive connections, nothing measured: what a target gets right
 * before a measured run, shorter than autocannon's whole seconds. Any non-2xx answer fails it.
 */
export async function warm(port: number, connections: number, ms: number, request: LoadRequest): Promise<void> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections });
  const end = performance.now() + ms;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const { statusCode, body } = await pool.request({ method: 'POST', path: request.path, headers: request.headers, body: request.body });
      await body.dump();
      if (statusCode < 200 || statusCode >= 300) throw new Error(`warm-up: ${statusCode} from port ${port}`);
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, worker));
  } finally {
    await pool.close();
  }
}
