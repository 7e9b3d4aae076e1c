import type { KeyPool } from '../lib/index.js';
import { DEMO_BYOK_KEY, REQUEST_ID_HEADER, type FakeUpstream } from './fake-upstream.js';
import { BYOK_HEADER, DEMO_USER_TOKEN } from './gateway.js';
import { bold, dim, excerpt, keysTried, labelled, snapshotLines, status, type KeyNamer } from './print.js';

/** The requests the demo makes by itself, each printed with the keys it went through and the pool after it. */

export interface DemoContext {
  gatewayUrl: string;
  pool: KeyPool;
  model: string;
  /** Present in fake mode: the only place where the keys tried can be seen. */
  upstream?: FakeUpstream;
  name: KeyNamer;
  write: (text: string) => void;
}

interface Scenario {
  title: string;
  prompt: string;
  stream?: boolean;
  byokKey?: string;
  note?: string;
}

export async function runScenarios(ctx: DemoContext): Promise<void> {
  const first = ctx.pool.snapshot()[0]!.id;
  const scenarios: Scenario[] = [
    { title: 'A normal request', prompt: 'Say hello' },
    { title: 'A streaming request', prompt: 'Stream a sentence', stream: true },
  ];
  if (ctx.upstream) {
    scenarios.push(
      {
        title: `Another request while ${first} is still cooling`,
        prompt: 'Hello again',
        note: 'cooling and disabled keys are passed over without a call',
      },
      {
        title: 'BYOK: the client brings its own key',
        prompt: 'Use my key',
        byokKey: DEMO_BYOK_KEY,
        note: 'one attempt with that key; the pool is not touched',
      },
    );
  }
  for (const [index, scenario] of scenarios.entries()) {
    ctx.write(`\n${bold(`${index + 1}. ${scenario.title}`)}\n`);
    await runScenario(ctx, scenario, `scenario-${index + 1}`);
  }
  if (!ctx.upstream) {
    ctx.write(dim('\n(The cooling and BYOK scenarios need the fake upstream; try BYOK with the curl command below.)\n'));
  }
}

async function runScenario(ctx: DemoContext, scenario: Scenario, requestId: string): Promise<void> {
  const body = {
    model: ctx.model,
    messages: [{ role: 'user', content: scenario.prompt }],
    ...(scenario.stream ? { stream: true } : {}),
  };
  const headers: Record<string, string> = {
    authorization: `Bearer ${DEMO_USER_TOKEN}`,
    'content-type': 'application/json',
    [REQUEST_ID_HEADER]: requestId,
  };
  if (scenario.byokKey) headers[BYOK_HEADER] = scenario.byokKey;
  const extra = [scenario.stream ? '"stream": true' : '', scenario.byokKey ? `${BYOK_HEADER}: …${scenario.byokKey.slice(-4)}` : '']
    .filter(Boolean)
    .join(', ');
  ctx.write(labelled('request', `POST /v1/chat/completions  "${scenario.prompt}"${extra ? `  ${dim(`(${extra})`)}` : ''}`) + '\n');

  const started = Date.now();
  let response: Response;
  try {
    response = await fetch(`${ctx.gatewayUrl}/v1/chat/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
  } catch (error) {
    ctx.write(labelled('client got', `request failed: ${(error as Error).message}`) + '\n');
    return;
  }

  // The upstream recorded every attempt before the gateway sent these headers on.
  ctx.write(labelled('keys tried', triedLine(ctx, requestId, scenario)) + '\n');
  const contentType = response.headers.get('content-type') ?? '';
  if (contentType.startsWith('text/event-stream') && response.body) {
    ctx.write(labelled('client got', `${status(response.status)} stream: `));
    const { events, text } = await readStream(response.body, (piece) => ctx.write(piece));
    ctx.write(`\n${' '.repeat(16)}${dim(`(${events} events over ${Date.now() - started} ms; ${text.length} characters)`)}\n`);
  } else {
    const text = await response.text();
    ctx.write(labelled('client got', `${status(response.status)}  ${describeBody(text)}`) + '\n');
  }
  ctx.write(labelled('pool', snapshotLines(ctx.pool.snapshot())) + '\n');
}

function triedLine(ctx: DemoContext, requestId: string, scenario: Scenario): string {
  if (!ctx.upstream) return dim('not visible with a real upstream; the pool below shows what happened');
  const calls = ctx.upstream.calls.filter((call) => call.requestId === requestId);
  const line = keysTried(calls, ctx.name, ctx.pool.snapshot());
  return scenario.note ? `${line}  ${dim(`(${scenario.note})`)}` : line;
}

/** The assistant's text, or the error message, of a JSON answer. */
function describeBody(text: string): string {
  try {
    const json = JSON.parse(text) as { choices?: { message?: { content?: string } }[]; error?: { message?: string } };
    const content = json.choices?.[0]?.message?.content ?? json.error?.message;
    if (typeof content === 'string') return excerpt(content);
  } catch {
    // not JSON: show it raw
  }
  return excerpt(text);
}

/** Reads OpenAI server-sent events, handing each piece of text on as it arrives. */
export async function readStream(
  body: ReadableStream<Uint8Array>,
  onText: (piece: string) => void,
): Promise<{ events: number; text: string }> {
  const decoder = new TextDecoder();
  let buffered = '';
  let events = 0;
  let text = '';
  for await (const chunk of body) {
    buffered += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) !== -1) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trim())
        .join('\n');
      if (!data) continue;
      events++;
      if (data === '[DONE]') continue;
      try {
        const piece = (JSON.parse(data) as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content;
        if (piece) {
          text += piece;
          onText(piece);
        }
      } catch {
        // an event that is not JSON: nothing to show
      }
    }
  }
  return { events, text };
}
