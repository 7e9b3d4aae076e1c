import http, { type IncomingHttpHeaders } from 'node:http';

export interface StreamedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Each chunk as the client received it. */
  chunks: string[];
  /** How the body ended: 'end' when complete, 'aborted' when the connection broke mid-body. */
  ended: 'end' | 'aborted';
}

/**
 * POSTs JSON over a real socket and reports chunks as they arrive; `onChunk`
 * lets a test react to the first chunk while the upstream still holds the rest.
 */
export function postStreaming(url: string, body: unknown, onChunk?: (chunk: string, index: number) => void): Promise<StreamedResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: string[] = [];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        chunks.push(chunk);
        onChunk?.(chunk, chunks.length - 1);
      });
      const done = (ended: StreamedResponse['ended']) => () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, ended });
      res.on('end', done('end'));
      res.on('aborted', done('aborted'));
      res.on('error', done('aborted'));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** A promise the test resolves by hand, with a deadline so that a broken stream fails instead of hanging. */
export function gate(what: string, ms = 5000): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for: ${what}`)), ms);
    open = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { promise, open };
}

/** A POST over a real socket whose answer is read as raw bytes, nothing decoded. */
export function rawPost(
  url: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
