/**
 * Server-sent events, read as they arrive: chunks in, whole frames out. A
 * frame ends at a blank line (LF, CRLF or CR line ends, also split across
 * chunks); `event:` and `data:` fields are kept (several `data:` lines are
 * joined with LF, as the spec says), comment lines (`:`) are dropped. Only the
 * opening of a stream is read this way (see stream-hold.ts), never its rest.
 */
import { StringDecoder } from 'node:string_decoder';

export interface SseFrame {
  /** The `event:` field, or undefined (a frame with none is a "message"). */
  event: string | undefined;
  /** The `data:` lines joined with LF, or undefined when the frame had none (comments only). */
  data: string | undefined;
}

export class SseReader {
  private readonly decoder = new StringDecoder('utf8');
  /** The current line so far, and the frame's fields so far. */
  private line = '';
  private event: string | undefined;
  private data: string | undefined;
  /** The last character seen was a CR: an LF right after it (maybe in the next chunk) ends no line. */
  private afterCr = false;

  /** The frames that this chunk completes, in order. */
  push(chunk: Buffer): SseFrame[] {
    const text = this.decoder.write(chunk);
    const frames: SseFrame[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x0a && this.afterCr) {
        this.afterCr = false;
        start = i + 1;
        continue;
      }
      this.afterCr = c === 0x0d;
      if (c !== 0x0a && c !== 0x0d) continue;
      this.line += text.slice(start, i);
      start = i + 1;
      if (this.line === '') {
        if (this.event !== undefined || this.data !== undefined) frames.push({ event: this.event, data: this.data });
        else frames.push({ event: undefined, data: undefined }); // comments only: still a frame (a keep-alive)
        this.event = this.data = undefined;
      } else {
        this.field(this.line);
      }
      this.line = '';
    }
    this.line += text.slice(start);
    return frames;
  }

  private field(line: string): void {
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') this.event = value;
    else if (name === 'data') this.data = this.data === undefined ? value : `${this.data}\n${value}`;
  }
}
