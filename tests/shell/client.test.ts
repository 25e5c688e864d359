import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseServerAddress } from '../../src/shell/address';
import { formatJson } from '../../src/shell/json-text';
import { QmpClient, QmpEvent } from '../../src/shell/qmp-client';
import { historyPath, loadHistory, saveHistory } from '../../src/shell/history';

describe('parseServerAddress', () => {
  it('reads a path, HOST:PORT, [IPv6]:PORT and WebSocket URLs', () => {
    expect(parseServerAddress('/run/qsd.sock')).toEqual({ kind: 'unix', path: '/run/qsd.sock' });
    expect(parseServerAddress('qsd.sock')).toEqual({ kind: 'unix', path: 'qsd.sock' });
    expect(parseServerAddress('localhost:4444')).toEqual({ kind: 'tcp', host: 'localhost', port: 4444 });
    expect(parseServerAddress('[::1]:4444')).toEqual({ kind: 'tcp', host: '::1', port: 4444 });
    expect(parseServerAddress('ws://127.0.0.1:5700/qmp')).toEqual({ kind: 'websocket', url: 'ws://127.0.0.1:5700/qmp' });
  });

  it('rejects a port out of range', () => {
    expect(() => parseServerAddress('host:70000')).toThrow(/port out of range/);
  });
});

describe('formatJson', () => {
  it('writes compact JSON the way qmp-shell prints it', () => {
    expect(formatJson({ return: { a: [1, 'x'], b: {} } })).toBe('{"return": {"a": [1, "x"], "b": {}}}');
  });

  it('pretty-prints with four spaces and sorted keys', () => {
    expect(formatJson({ b: 1, a: [true] }, { pretty: true })).toBe('{\n    "a": [\n        true\n    ],\n    "b": 1\n}');
  });

  it('writes BigInt values as exact numbers', () => {
    expect(formatJson({ n: 18446744073709551615n }, { tight: true })).toBe('{"n":18446744073709551615}');
  });
});

describe('history file', () => {
  it('lives in QBD_SHELL_HISTORY, else in the home directory', () => {
    expect(historyPath({ QBD_SHELL_HISTORY: '/x/h' })).toBe('/x/h');
    expect(historyPath({})).toBe(path.join(os.homedir(), '.qbd_shell_history'));
  });

  it('round-trips entries, newest first in memory and oldest first on disk', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-history-'));
    const file = path.join(dir, 'h');
    try {
      saveHistory(file, ['third', 'second', 'first']);
      expect(fs.readFileSync(file, 'utf8')).toBe('first\nsecond\nthird\n');
      expect(loadHistory(file)).toEqual(['third', 'second', 'first']);
      expect(loadHistory(`${file}.missing`)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A scripted QMP server on a UNIX socket: answers each command with `answer`. */
function fakeServer(answer: (request: Record<string, unknown>, socket: net.Socket) => void): Promise<{ path: string; close(): void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-client-'));
  const socketPath = path.join(dir, 'qmp.sock');
  const server = net.createServer((socket) => {
    socket.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}\r\n');
    let buffer = '';
    socket.on('data', (chunk) => {
      buffer += chunk.toString();
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        answer(JSON.parse(line) as Record<string, unknown>, socket);
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(socketPath, () =>
      resolve({
        path: socketPath,
        close: () => {
          server.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      }),
    );
  });
}

describe('QmpClient', () => {
  let cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const step of cleanup) step();
    cleanup = [];
  });

  it('matches replies to commands by id even when they come back out of order', async () => {
    const held: Array<[Record<string, unknown>, net.Socket]> = [];
    const server = await fakeServer((request, socket) => {
      held.push([request, socket]);
      if (held.length === 2) {
        for (const [pending, from] of held.reverse()) {
          from.write(`${JSON.stringify({ return: { was: pending.execute }, id: pending.id })}\r\n`);
        }
      }
    });
    cleanup.push(server.close);
    const client = await QmpClient.connect({ kind: 'unix', path: server.path });
    cleanup.push(() => client.close());
    const [first, second] = await Promise.all([client.execute('first'), client.execute('second')]);
    expect(first).toEqual({ return: { was: 'first' } });
    expect(second).toEqual({ return: { was: 'second' } });
  });

  it('gives a user-chosen id back on the reply, and delivers events', async () => {
    const server = await fakeServer((request, socket) => {
      socket.write(`{"event": "PING", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n`);
      socket.write(`${JSON.stringify({ return: {}, id: request.id })}\r\n`);
    });
    cleanup.push(server.close);
    const client = await QmpClient.connect({ kind: 'unix', path: server.path });
    cleanup.push(() => client.close());
    const events: QmpEvent[] = [];
    client.on('event', (event) => events.push(event));
    expect(await client.send({ execute: 'x', id: 'user-7' })).toEqual({ return: {}, id: 'user-7' });
    expect(events.map((event) => event.event)).toEqual(['PING']);
  });

  it('fails waiting commands when the server closes the connection', async () => {
    const server = await fakeServer((_request, socket) => socket.destroy());
    cleanup.push(server.close);
    const client = await QmpClient.connect({ kind: 'unix', path: server.path });
    await expect(client.execute('anything')).rejects.toThrow(/closed/);
    expect(client.isClosed).toBe(true);
  });

  it('reports a server that is not there', async () => {
    await expect(QmpClient.connect({ kind: 'unix', path: '/nonexistent/qmp.sock' })).rejects.toThrow(/ENOENT/);
  });
});
