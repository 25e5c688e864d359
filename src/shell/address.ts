/**
 * Where the shell connects: a UNIX socket path, `HOST:PORT`, or a WebSocket
 * URL (`ws://…`, `wss://…`). The same spelling qmp-shell accepts, plus URLs.
 */

export type ServerAddress =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'websocket'; url: string };

export function parseServerAddress(text: string): ServerAddress {
  if (text === '') throw new Error('empty server address');
  if (/^wss?:\/\//i.test(text)) return { kind: 'websocket', url: text };
  // "[::1]:4444" for IPv6, "host:4444" otherwise; a path never ends in ":digits" in practice.
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const plain = /^([^/:]*):(\d+)$/.exec(text);
  const match = bracketed ?? plain;
  if (match) {
    const port = Number(match[2]);
    if (port < 1 || port > 65535) throw new Error(`port out of range in '${text}'`);
    return { kind: 'tcp', host: match[1] === '' ? 'localhost' : match[1]!, port };
  }
  return { kind: 'unix', path: text };
}

export function describeAddress(address: ServerAddress): string {
  switch (address.kind) {
    case 'unix':
      return address.path;
    case 'tcp':
      return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
    case 'websocket':
      return address.url;
  }
}
