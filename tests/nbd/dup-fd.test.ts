/**
 * dupFd, which hands a negotiated NBD connection from one I/O context to
 * another: the copy is a second descriptor for the same open socket.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { dupFd, dupFdAvailable, nativeAvailable } from '../../src/native/native';

describe('dupFd', () => {
  it('is available whenever the native addon is loaded', () => {
    expect(dupFdAvailable).toBe(nativeAvailable);
  });

  it.skipIf(!dupFdAvailable)('gives a descriptor that keeps a socket open after the original is closed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-dupfd-'));
    const sock = path.join(dir, 's');
    const received: Buffer[] = [];
    const server = net.createServer((s) => s.on('data', (d: Buffer) => received.push(d)));
    await new Promise<void>((r) => server.listen(sock, r));
    const client = net.createConnection(sock);
    await new Promise<void>((r) => client.once('connect', () => r()));
    const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
    const copy = dupFd(fd);
    expect(copy).not.toBe(fd);
    client.destroy();
    const again = new net.Socket({ fd: copy, readable: true, writable: true });
    await new Promise<void>((r) => again.write('through the copy', () => r()));
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.concat(received).toString()).toBe('through the copy');
    again.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a bad descriptor argument', () => {
    expect(() => dupFd(-1)).toThrow();
  });
});
