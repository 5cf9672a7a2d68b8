// A small Server-Sent Events parser for fetch() bodies (EventSource cannot POST).
// Follows the WHATWG rules that matter here: LF, CR and CRLF line ends, `event:` and multi-line
// `data:` fields, comments (sse-starlette's pings), and dispatch on a blank line.

export class SSEParser {
  /** @param {(event: {event: string, data: string, id: string}) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastId = "";
    this.clear();
  }

  clear() {
    this.eventName = "";
    this.dataLines = [];
  }

  /** Feed decoded text; complete events are dispatched synchronously. */
  feed(text) {
    const buf = this.buffer + text;
    let start = 0;
    let i = 0;
    for (; i < buf.length; i++) {
      const c = buf[i];
      if (c !== "\n" && c !== "\r") continue;
      // A CR at the very end may be the first half of a CRLF split across chunks: wait.
      if (c === "\r" && i + 1 === buf.length) break;
      this.line(buf.slice(start, i));
      if (c === "\r" && buf[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buffer = buf.slice(start);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventName = value;
    else if (field === "data") this.dataLines.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
  }

  dispatch() {
    if (this.dataLines.length > 0) {
      this.onEvent({
        event: this.eventName || "message",
        data: this.dataLines.join("\n"),
        id: this.lastId,
      });
    }
    this.clear();
  }
}

/**
 * Read an SSE response body to its end, calling onEvent({event, data}) with `data` parsed as
 * JSON when it is JSON. Resolves when the stream closes; rejects with AbortError when aborted.
 */
export async function readEventStream(response, onEvent) {
  const parser = new SSEParser(({ event, data }) => {
    let parsed = data;
    try {
      parsed = JSON.parse(data);
    } catch {
      // Not JSON: hand the text over as is.
    }
    onEvent({ event, data: parsed });
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
    // An event without its closing blank line is incomplete by the spec and is dropped.
  } finally {
    reader.releaseLock();
  }
}
