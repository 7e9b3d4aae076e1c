/** Constants shared by the driver, the mock upstream and the targets. */

export const CHAT = '/v1/chat/completions';

/** Pool keys the mock accepts. Shaped like real keys, not real. */
export const KEYS = ['sk-bench-k1-Aa00000000000000a0', 'sk-bench-k2-Bb11111111111111b1', 'sk-bench-k3-Cc22222222222222c2'] as const;
/** The mock answers 429 (retry-after-ms: 0, so the key is available again at once) to this key: target 5's key 0. */
export const REJECTED_KEY = 'sk-bench-k0-always-429-000000z9';
/** What the load generator sends; the mock answers 401 to it, so a proxy that forgot to swap keys shows up as non-2xx. */
export const CLIENT_KEY = 'sk-client-key-the-gateway-must-replace';

/** Mock control routes (GET, on the mock's port). */
export const RELEASE_PATH = '/__release';
export const STATS_PATH = '/__stats';

/** A chat request of about 1 KB, as a real client would send. */
export function chatBody(options: { stream?: boolean; hold?: boolean } = {}): string {
  const messages = [{ role: 'system', content: 'You are a helpful assistant. '.repeat(8).trim() }];
  for (let i = 0; i < 8; i++) {
    messages.push({
      role: i % 2 ? 'assistant' : 'user',
      content: `Message ${i}: lorem ipsum dolor sit amet, consectetur adipiscing elit.`,
    });
  }
  const body: Record<string, unknown> = { model: 'gpt-4o-mini', temperature: 0.2, messages };
  if (options.stream) body['stream'] = true;
  // Read by the mock only: hold the stream open after the first event until RELEASE_PATH is called.
  if (options.hold) body['bench_hold'] = true;
  return JSON.stringify(body);
}
