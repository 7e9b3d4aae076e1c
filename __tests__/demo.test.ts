import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { DEMO_BYOK_KEY, FAKE_KEYS, STREAMED_REPLY, startFakeUpstream, type FakeUpstream } from '../demo/fake-upstream.js';

/**
 * Runs the demo the way a user would (`npm run demo`), reads what it prints,
 * and stops it with Ctrl-C (SIGINT to its whole process group).
 */

const ROOT = path.resolve(__dirname, '..');
const READY = /Ctrl-C to stop/;
const STARTUP_DEADLINE_MS = 30_000;

interface RunningDemo {
  child: ChildProcess;
  output: () => string;
  waitFor: (pattern: RegExp, ms: number) => Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running: RunningDemo[] = [];

function startDemo(extraEnv: Record<string, string> = {}): RunningDemo {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', NO_COLOR: '1', ...extraEnv };
  // A developer's real keys must not turn the test into calls to the real API.
  if (!('OPENAI_API_KEYS' in extraEnv)) delete env['OPENAI_API_KEYS'];
  if (!('OPENAI_BASE_URL' in extraEnv)) delete env['OPENAI_BASE_URL'];
  // detached: its own process group, like a terminal's foreground job, so that Ctrl-C can be played.
  const child = spawn('npm', ['run', 'demo'], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    for (const listener of listeners) listener();
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const waitFor = (pattern: RegExp, ms: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pattern.test(text)) return;
        cleanup();
        resolve(text);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${pattern} in the demo's output within ${ms} ms. Output so far:\n${text}`));
      }, ms);
      const onExit = (): void => {
        cleanup();
        reject(new Error(`the demo exited before printing ${pattern}. Output:\n${text}`));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', onExit);
      };
      listeners.add(check);
      child.once('exit', onExit);
      check();
    });
  const demo = { child, output: () => text, waitFor, exited };
  running.push(demo);
  return demo;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // the group is already gone
  }
}

/**
 * Ctrl-C, then the exit it must lead to within a few seconds. npm's own exit
 * says little: the `sh -c` npm runs the script in (dash on Debian) dies of the
 * SIGINT at once, and npm then re-raises it on itself, as for any script. What
 * matters is that the demo shut down by itself ("stopped." is printed right
 * before its exit(0)) and that nothing of the group is left running.
 */
async function pressCtrlC(demo: RunningDemo): Promise<void> {
  signalGroup(demo.child, 'SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`npm did not exit within 5 s of SIGINT. Output:\n${demo.output()}`)), 5000);
  });
  let exit: { code: number | null; signal: NodeJS.Signals | null };
  try {
    exit = await Promise.race([demo.exited, deadline]);
  } finally {
    clearTimeout(timer);
  }
  expect([
    { code: 0, signal: null },
    { code: null, signal: 'SIGINT' },
  ]).toContainEqual(exit);
  expect(await groupGone(demo.child)).toBe(true);
  const output = demo.output();
  expect(output).toMatch(/\nSIGINT: stopping the gateway.*\.\.\.\nstopped\.\n/);
  expect(output).not.toMatch(/still busy|error while stopping|demo failed|npm error/i);
}

/** True while any process of the demo's group is alive. */
function groupAlive(child: ChildProcess): boolean {
  try {
    process.kill(-child.pid!, 0);
    return true;
  } catch {
    return false;
  }
}

async function groupGone(child: ChildProcess, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms;
  while (groupAlive(child)) {
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

afterAll(async () => {
  for (const { child } of running) {
    if (alive(child) || groupAlive(child)) signalGroup(child, 'SIGKILL');
  }
});

function expectNoKeyValues(output: string, values: readonly string[]): void {
  for (const value of values) {
    expect(output).not.toContain(value);
    expect(output).not.toContain(value.slice('sk-'.length));
  }
}

/** The lines of the numbered scenario whose title matches. */
function scenario(output: string, title: RegExp): string {
  const blocks = output.split(/\n(?=\d+\. )/);
  const block = blocks.find((b) => title.test(b.split('\n')[0]!));
  if (!block) throw new Error(`no scenario titled ${title} in:\n${output}`);
  return block.split('\n\n')[0]!;
}

test(
  'npm run demo shows failover, a stream and BYOK against the fake upstream, prints no key, and stops on Ctrl-C',
  async () => {
    const demo = startDemo();
    const output = await demo.waitFor(READY, STARTUP_DEADLINE_MS);

    // The failover: key-0 rate-limited and cooling, key-1 revoked and disabled, key-2 answers.
    const normal = scenario(output, /A normal request/);
    expect(normal).toMatch(/keys tried\s+key-0 \(429, cooling \d+s for gpt-4o-mini\) -> key-1 \(401, disabled\) -> key-2 \(200\)/);
    expect(normal).toMatch(/client got\s+200\s+Hello from the fake upstream/);
    expect(normal).toMatch(/key-0\s+…\w{4}\s+cooling for gpt-4o-mini, \d+s left/);
    expect(normal).toMatch(/key-1\s+…\w{4}\s+disabled/);
    expect(normal).toMatch(/key-2\s+…\w{4}\s+available/);

    // The stream arrived, whole, through the gateway.
    const stream = scenario(output, /A streaming request/);
    expect(stream).toMatch(/keys tried\s+key-2 \(200\)/);
    expect(stream).toContain(`200 stream: ${STREAMED_REPLY}`);

    // While key-0 cools it is not called at all.
    const cooling = scenario(output, /while key-0 is still cooling/);
    expect(cooling).toMatch(/keys tried\s+key-2 \(200\)/);

    // BYOK: one attempt with the client's key, named by its hint; the pool as it was.
    const byok = scenario(output, /BYOK/);
    expect(byok).toMatch(/keys tried\s+client's own key …Al1c \(200\)/);
    expect(byok).toMatch(/client got\s+200/);
    expect(byok).toMatch(/key-0\s+…\w{4}\s+cooling/);

    expect(output).toMatch(/curl -s http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/);
    expectNoKeyValues(output, [...FAKE_KEYS.map((k) => k.key), DEMO_BYOK_KEY]);

    await pressCtrlC(demo);
  },
  STARTUP_DEADLINE_MS + 15_000,
);

describe('with OPENAI_API_KEYS set', () => {
  // "The real upstream", played here by a fake one reached through OPENAI_BASE_URL as users write it (with /v1).
  let upstream: FakeUpstream;
  beforeAll(async () => {
    upstream = await startFakeUpstream();
  });
  afterAll(async () => {
    await upstream.close();
  });

  test(
    'the gateway targets OPENAI_BASE_URL with those keys, prints the pool instead of keys tried, and no key',
    async () => {
      const keys = FAKE_KEYS.map((k) => k.key);
      const demo = startDemo({ OPENAI_API_KEYS: ` ${keys.join(' , ')} `, OPENAI_BASE_URL: `${upstream.url}/v1/` });
      const output = await demo.waitFor(READY, STARTUP_DEADLINE_MS);

      expect(output).toContain(`upstream  ${upstream.url}  real API; 3 key(s) from OPENAI_API_KEYS`);
      const normal = scenario(output, /A normal request/);
      expect(normal).toMatch(/keys tried\s+not visible with a real upstream/);
      expect(normal).toMatch(/client got\s+200/);
      expect(normal).toMatch(/key-0\s+…Qx7a\s+cooling for gpt-4o-mini, \d+s left/);
      expect(normal).toMatch(/key-1\s+…Rv3k\s+disabled/);
      expect(scenario(output, /A streaming request/)).toContain(`200 stream: ${STREAMED_REPLY}`);
      expect(output).not.toMatch(/BYOK: the client brings/);
      // The upstream saw the keys in order, which is the failover the snapshot reports.
      expect(upstream.calls.map((c) => [c.key, c.status])).toEqual([
        [keys[0], 429],
        [keys[1], 401],
        [keys[2], 200],
        [keys[2], 200],
      ]);
      expectNoKeyValues(output, keys);

      await pressCtrlC(demo);
    },
    STARTUP_DEADLINE_MS + 15_000,
  );
});
