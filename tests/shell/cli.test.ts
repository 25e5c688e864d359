import { describe, it, expect, beforeAll } from 'vitest';
import { runShell } from './support/shell-process';
import { requireBuiltShell } from './support/tools';

describe('qbd shell command line', () => {
  beforeAll(() => {
    requireBuiltShell();
  });

  it('lists every option with its meaning under --help', async () => {
    const run = await runShell(['--help'], '');
    expect(run.code).toBe(0);
    for (const option of [
      '-p, --pretty',
      '-v, --verbose',
      '-l, --logfile <file>',
      '-N, --skip-negotiation',
      '-f, --file <file>',
      '-e, --exit-on-error',
      '--no-schema',
      '-h, --help',
    ]) {
      expect(run.stdout).toMatch(new RegExp(`\\n\\s+${option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+\\S`));
    }
    expect(run.stdout).toContain('QMP_SOCKET');
  });

  it('exits 1 with a message when no address is given', async () => {
    const run = await runShell([], 'query-jobs\n', { QMP_SOCKET: '' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('no server address');
  });

  it('exits 1 with a message when the server cannot be reached', async () => {
    const run = await runShell(['/nonexistent/qmp.sock'], 'query-jobs\n');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('cannot connect to /nonexistent/qmp.sock');
  });
});
