import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { ChaosOptions, Mode, RetryStyle } from './chaos.js';
import type { Seen } from './upstream.js';

export interface ChaosDump {
  seen: Seen[];
  counts: Record<string, number>;
  retryStyles: Record<RetryStyle, number>;
  active: number;
  openSockets: number;
}

/** The parent's handle on the chaos upstream process (chaos-process.ts), run with tsx on this Node. */
export class ChaosProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static start(options: Omit<ChaosOptions, 'onRecover'>, onRecover: (keyIndex: number) => void): Promise<ChaosProcess> {
    const child = fork(path.join(__dirname, 'chaos-process.ts'), [JSON.stringify(options)], {
      execArgv: ['--import', 'tsx'],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill();
        reject(new Error('chaos upstream process did not start within 20 s'));
      }, 20_000);
      child.on('message', (message: { type: string; url?: string; keyIndex?: number }) => {
        if (message.type === 'ready') {
          clearTimeout(timer);
          resolve(new ChaosProcess(child, message.url!));
        } else if (message.type === 'recover') onRecover(message.keyIndex!);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`chaos upstream process exited with ${code}`));
      });
    });
  }

  start(): void {
    this.child.send({ type: 'start' });
  }

  storm(mode: Mode, ms: number): void {
    this.child.send({ type: 'storm', mode, ms });
  }

  dump(): Promise<ChaosDump> {
    return new Promise((resolve) => {
      const onMessage = (message: { type: string } & ChaosDump): void => {
        if (message.type !== 'dump') return;
        this.child.off('message', onMessage);
        // Structured clone turns Buffers into Uint8Arrays.
        for (const seen of message.seen) {
          seen.body = Buffer.from(seen.body);
          seen.sent = seen.sent.map((b) => Buffer.from(b));
        }
        resolve(message);
      };
      this.child.on('message', onMessage);
      this.child.send({ type: 'dump' });
    });
  }

  /** Stops the chaos and the server; the process exits by itself (killed by PID after 5 s otherwise). */
  stop(): Promise<void> {
    if (this.child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.child.send({ type: 'stop' });
    });
  }
}
