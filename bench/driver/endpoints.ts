/** Starting a target and proving it correct before any load: shared by the bench and the profiler. */
import { COMPLETION, CLIENT_KEY, KEYS, MODEL, OPENAI_HEADERS, OTHER_MODEL } from '../shared.js';
import { startChild, type Child } from './processes.js';
import { STREAM_KINDS } from './report.js';
import { abortReachesUpstream, mockStats, openHeldStreams, postJson } from './streams.js';
import type { Target } from './targets.js';

/** A running target: where to send, whose CPU to read, which key the client sends. */
export interface Endpoint {
  target: Target;
  port: number;
  pid: number;
  key: string;
  child?: Child;
}

export const bearer = (e: Endpoint): string => `Bearer ${e.key}`;

/** Starts `target` (none for direct), with extra Node flags and environment variables. */
export async function startEndpoint(
  target: Target,
  mock: Child,
  nodeFlags: string[] = [],
  env: Record<string, string> = {},
): Promise<Endpoint> {
  // Direct: the client must carry a key the mock accepts. Proxies get the client's key and must swap it.
  if (!target.file) return { target, port: mock.port, pid: mock.pid, key: KEYS[0] };
  const child = await startChild(target.id, target.file, [`http://127.0.0.1:${mock.port}`], nodeFlags, env);
  return { target, port: child.port, pid: child.pid, key: CLIENT_KEY, child };
}

/**
 * Before any load, a target must answer the JSON request exactly as the mock
 * does, relay every kind of stream incrementally (the first content arrives
 * while the mock still holds the rest) and unchanged, end the upstream stream
 * when its client leaves, and never let the client's key reach the mock.
 * Throws on a failure; a target that may be n/a on this branch gets the reason instead.
 */
export async function selfCheck(e: Endpoint, mock: Child): Promise<string | undefined> {
  const na = e.child?.notes.find((line) => line.startsWith('NA '));
  if (na) return na.slice(3);
  try {
    const before = await mockStats(mock.port);
    const json = await postJson(e.port, bearer(e));
    if (json.status !== 200 || json.body !== COMPLETION)
      throw new Error(`JSON check got ${json.status}${json.body ? ` ${json.body.slice(0, 200)}` : ' with an empty body'}`);
    // Relayed unchanged: the provider's own headers reach the client too.
    for (const name of ['x-request-id', 'x-ratelimit-remaining-tokens'] as const)
      if (json.headers[name] !== OPENAI_HEADERS[name]) throw new Error(`the JSON answer's ${name} header did not reach the client`);
    if (e.target.upstream) {
      for (const kind of STREAM_KINDS) {
        const held = await openHeldStreams(e.port, mock.port, kind, e.key, 1, { timeoutMs: 5_000 });
        await held.release();
      }
      if (e.target.file && !(await abortReachesUpstream(e.port, mock.port, 'responses', e.key)))
        throw new Error('a client that leaves mid-stream does not end the upstream stream');
      if (e.target.id === 'kf-scoped') await scopedCheck(e, mock);
    }
    const after = await mockStats(mock.port);
    if (after.clientKeySeen !== before.clientKeySeen) throw new Error(`the client's key reached the mock`);
    return undefined;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (e.target.needs) return `${e.target.needs}; self-check: ${message}`;
    throw new Error(`${e.target.id}: self-check: ${message}`);
  }
}

/** kf-scoped claims scoped cooldowns: gpt-4o-mini must still be served by key 0, gpt-4o by key 1. */
async function scopedCheck(e: Endpoint, mock: Child): Promise<void> {
  for (const [model, expected] of [
    [MODEL, 'KEYS[0]'],
    [OTHER_MODEL, 'KEYS[1]'],
  ] as const) {
    const before = (await mockStats(mock.port)).byKey;
    const answer = await postJson(e.port, bearer(e), model);
    const after = (await mockStats(mock.port)).byKey;
    const used = Object.keys(after).filter((k) => after[k] !== before[k]);
    if (answer.status !== 200 || used.length !== 1 || used[0] !== expected)
      throw new Error(`a ${model} request was answered ${answer.status} using ${used.join(', ') || 'no key'}, not ${expected}`);
  }
}
