import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

/**
 * A real redis-server (the Debian package; `npm test` installs it as root) on a free
 * loopback port, without persistence, stopped by its PID. `kill()` then
 * `start()` is a crash and a restart on the same port, with an empty database;
 * `pause()` / `resume()` a server that hangs and comes back.
 */
export class RedisServer {
  private child: ChildProcess | undefined;
  private paused = false;
  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const bin = process.env['REDIS_SERVER'] ?? 'redis-server';
    const child = spawn(bin, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    this.child = child;
    const exited = new Promise<never>((_, reject) => {
      child.once('error', (error) =>
        reject(new Error(`could not start ${bin}: ${error.message} (is the redis-server package installed?)`)),
      );
      child.once('exit', (code) => reject(new Error(`${bin} exited with ${code} before answering PING`)));
    });
    exited.catch(() => {});
    const deadline = Date.now() + 5000;
    try {
      while (!(await Promise.race([ping(this.port), exited]))) {
        if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer PING within 5 s`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    } catch (error) {
      // A server that never answered is still a child of this process: stop it, or jest would wait for it.
      await this.kill();
      throw error;
    }
  }

  /** Kills the server (SIGKILL: no goodbye to the clients) and waits until it is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid!, signal);
    if (this.paused) process.kill(child.pid!, 'SIGCONT'); // a stopped process acts on SIGTERM only once continued
    this.paused = false;
    await gone;
  }

  /** SIGSTOP: connections stay open and nothing answers, like a server that hangs. */
  pause(): void {
    process.kill(this.child!.pid!, 'SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    process.kill(this.child!.pid!, 'SIGCONT');
    this.paused = false;
  }

  async stop(): Promise<void> {
    await this.kill('SIGTERM');
  }
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(500);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
