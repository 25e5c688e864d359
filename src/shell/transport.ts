/**
 * Transports carry whole QMP messages as text; they differ only in framing.
 *
 * UNIX and TCP sockets carry a JSON stream (split by JsonMessageSplitter).
 * A WebSocket carries one message per frame; frames are still fed through the
 * splitter, because QEMU's own WebSocket chardev cuts its output into binary
 * frames at arbitrary points. The shell sends text frames, unless the server
 * spoke binary first (QEMU refuses text frames), in which case it answers in
 * kind.
 */

import * as net from 'node:net';
import WebSocket from 'ws';
import { ServerAddress, describeAddress } from './address';
import { JsonMessageSplitter } from './json-stream';

export interface TransportHandlers {
  message(text: string): void;
  closed(error?: Error): void;
}

export interface MessageTransport {
  send(text: string): void;
  close(): void;
}

const CONNECT_TIMEOUT_MS = 10_000;

export function openTransport(address: ServerAddress, handlers: TransportHandlers): Promise<MessageTransport> {
  return address.kind === 'websocket'
    ? openWebSocket(address.url, handlers)
    : openStreamSocket(address, handlers);
}

function openStreamSocket(
  address: Exclude<ServerAddress, { kind: 'websocket' }>,
  handlers: TransportHandlers,
): Promise<MessageTransport> {
  return new Promise((resolve, reject) => {
    const socket = address.kind === 'unix'
      ? net.connect({ path: address.path })
      : net.connect({ host: address.host, port: address.port });
    const splitter = new JsonMessageSplitter();
    let connected = false;
    let closed = false;
    const finish = (error?: Error): void => {
      if (closed) return;
      closed = true;
      if (connected) handlers.closed(error);
      else reject(error ?? new Error(`connection to ${describeAddress(address)} closed`));
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => {
      if (!connected) socket.destroy(new Error(`timed out connecting to ${describeAddress(address)}`));
    });
    socket.once('connect', () => {
      connected = true;
      socket.setTimeout(0);
      socket.setNoDelay(true);
      resolve({
        send: (text) => {
          socket.write(`${text}\n`);
        },
        close: () => {
          socket.end();
          socket.destroy();
        },
      });
    });
    socket.on('data', (chunk: Buffer) => {
      let messages: string[];
      try {
        messages = splitter.push(chunk);
      } catch (error) {
        socket.destroy(error as Error);
        return;
      }
      for (const message of messages) handlers.message(message);
    });
    socket.on('error', (error) => finish(error));
    socket.on('close', () => finish());
  });
}

function openWebSocket(url: string, handlers: TransportHandlers): Promise<MessageTransport> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS });
    const splitter = new JsonMessageSplitter();
    let opened = false;
    let closed = false;
    let binaryFrames = false;
    const finish = (error?: Error): void => {
      if (closed) return;
      closed = true;
      if (opened) handlers.closed(error);
      else reject(error ?? new Error(`WebSocket ${url} closed`));
    };
    ws.on('open', () => {
      opened = true;
      resolve({
        send: (text) => ws.send(text, { binary: binaryFrames }),
        close: () => ws.close(),
      });
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) binaryFrames = true;
      const chunks = Array.isArray(data) ? data : [Buffer.from(data as Buffer)];
      try {
        for (const chunk of chunks) {
          for (const message of splitter.push(chunk)) handlers.message(message);
        }
      } catch (error) {
        ws.terminate();
        finish(error as Error);
      }
    });
    ws.on('error', (error) => finish(error));
    ws.on('close', (code, reason) => {
      finish(code === 1000 || code === 1005 ? undefined : new Error(`WebSocket closed (${code} ${reason.toString()})`.trim()));
    });
  });
}
