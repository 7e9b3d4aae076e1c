import autocannon from 'autocannon';
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

/** POSTs `request` (the 1 KB chat body) to `port` over `connections` keep-alive connections for `seconds`. */
export async function runLoad(port: number, connections: number, seconds: number, request: LoadRequest): Promise<LoadResult> {
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
