import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { AddressInfo } from 'node:net';
import { WebSocketServer, WebSocket } from 'ws';
import { runShell } from './support/shell-process';
import { requireBuiltShell } from './support/tools';

interface FakeServer {
  url: string;
  frames: Array<{ text: string; binary: boolean }>;
  close(): Promise<void>;
}

const GREETING = { QMP: { version: { qemu: { major: 9, minor: 1, micro: 0 }, package: 'fake' }, capabilities: [] } };

/** A QMP server over WebSocket; `binary` makes it speak (and batch) binary frames like QEMU. */
function startFakeServer(binary: boolean): Promise<FakeServer> {
  return new Promise((resolve) => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    const frames: FakeServer['frames'] = [];
    server.on('connection', (socket: WebSocket) => {
      const send = (...messages: unknown[]): void => {
        if (binary) socket.send(Buffer.from(messages.map((message) => `${JSON.stringify(message)}\r\n`).join('')), { binary: true });
        else for (const message of messages) socket.send(JSON.stringify(message), { binary: false });
      };
      send(GREETING);
      socket.on('message', (data: Buffer, isBinary: boolean) => {
        const text = data.toString();
        frames.push({ text, binary: isBinary });
        const request = JSON.parse(text) as { execute: string; id?: unknown };
        switch (request.execute) {
          case 'qmp_capabilities':
            send({ return: {}, id: request.id });
            break;
          case 'query-qmp-schema':
            send({ error: { class: 'CommandNotFound', desc: 'no schema here' }, id: request.id });
            break;
          default:
            // An event and the reply in one go: in one binary frame, or in two text frames.
            send(
              { event: 'SOMETHING_HAPPENED', data: { command: request.execute }, timestamp: { seconds: 1, microseconds: 2 } },
              { return: { echoed: request.execute }, id: request.id },
            );
        }
      });
    });
    server.on('listening', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `ws://127.0.0.1:${port}/`,
        frames,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}

describe('qbd shell over WebSocket', () => {
  let server: FakeServer | undefined;

  beforeAll(() => {
    requireBuiltShell();
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('sends one message per text frame and reads replies and events from text frames', async () => {
    server = await startFakeServer(false);
    const run = await runShell([server.url], 'query-status\n');
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('Connected to QEMU 9.1.0 (fake)');
    expect(run.lines).toEqual([
      { event: 'SOMETHING_HAPPENED', data: { command: 'query-status' }, timestamp: { seconds: 1, microseconds: 2 } },
      { return: { echoed: 'query-status' } },
    ]);
    expect(server.frames.map((frame) => frame.binary)).toEqual([false, false, false]);
    expect(server.frames.map((frame) => (JSON.parse(frame.text) as { execute: string }).execute)).toEqual([
      'qmp_capabilities',
      'query-qmp-schema',
      'query-status',
    ]);
  });

  it('answers in binary frames to a server that speaks binary, and splits several messages in one frame', async () => {
    server = await startFakeServer(true);
    const run = await runShell([server.url], 'query-status\n');
    expect(run.code).toBe(0);
    expect(run.lines).toEqual([
      { event: 'SOMETHING_HAPPENED', data: { command: 'query-status' }, timestamp: { seconds: 1, microseconds: 2 } },
      { return: { echoed: 'query-status' } },
    ]);
    expect(server.frames.every((frame) => frame.binary)).toBe(true);
  });
});
