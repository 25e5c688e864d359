/** A minimal QMP client for benchmarks: one request at a time, replies by line. */
import * as net from 'node:net';

export class BenchClient {
  private buf = '';
  private waiter: ((line: string) => void) | undefined;
  private lines: string[] = [];

  private constructor(private readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.buf += d.toString('utf8');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line.includes('"event"')) continue;
        const w = this.waiter;
        this.waiter = undefined;
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }

  static async connect(path: string): Promise<BenchClient> {
    const sock = net.createConnection(path);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    const c = new BenchClient(sock);
    await c.line();
    return c;
  }

  line(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async cmd(execute: string, args?: unknown): Promise<any> {
    this.sock.write(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }) + '\n');
    const reply = JSON.parse(await this.line());
    if (reply.error) throw new Error(`${execute}: ${reply.error.desc}`);
    return reply.return;
  }

  close(): void {
    this.sock.destroy();
  }
}
