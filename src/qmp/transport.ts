/**
 * What a monitor needs from a connection. Stream transports (UNIX, TCP,
 * stdio) deliver bytes that may hold several messages or part of one;
 * message transports (WebSocket) deliver one message per frame. Framing is
 * the transport's concern, dispatch the monitor's.
 */
export interface Transport {
  /** Where the connection comes from, for logs. */
  readonly peer: string;
  /** Sends one serialised message; the transport adds its own line ending or frame. */
  send(text: string): void;
  /** Stops and restarts delivery (flow control while commands queue up). */
  pause(): void;
  resume(): void;
  close(): void;
  onData(cb: (chunk: Uint8Array) => void): void;
  onClose(cb: () => void): void;
}
