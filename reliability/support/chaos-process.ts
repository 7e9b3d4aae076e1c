/**
 * The chaos upstream in its own process (started by ChaosProcess, below in
 * chaos-remote.ts). A real upstream does not share the gateway's event loop;
 * in one process, a loaded loop accepts one new connection per iteration and
 * the upstream "answers" seconds late. Messages: start, storm, stop, dump in;
 * ready, recover, dump out.
 */
import { Chaos, type ChaosOptions, type Mode } from './chaos.js';
import { Upstream } from './upstream.js';

type Incoming = { type: 'start' } | { type: 'storm'; mode: Mode; ms: number } | { type: 'stop' } | { type: 'dump' };

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as Omit<ChaosOptions, 'onRecover'>;
  const upstream = await Upstream.start();
  const chaos = new Chaos({ ...options, onRecover: (keyIndex) => process.send!({ type: 'recover', keyIndex }) });
  upstream.behaviour = chaos.behaviour;
  process.on('message', (message: Incoming) => {
    switch (message.type) {
      case 'start':
        return chaos.start();
      case 'storm':
        return chaos.storm(message.mode, message.ms);
      case 'stop':
        chaos.stop();
        void upstream.close().then(() => process.exit(0));
        return;
      case 'dump':
        process.send!({
          type: 'dump',
          seen: upstream.seen.map((s) => ({ ...s, sent: [Buffer.concat(s.sent)] })),
          counts: chaos.counts,
          retryStyles: chaos.retryStyles,
          active: upstream.active,
          openSockets: upstream.openSockets,
        });
        return;
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ type: 'ready', url: upstream.url });
}

void main();
