/** Runs `qbd shell` non-interactively with a script on stdin. */

import { spawn } from 'node:child_process';
import { QBD_BIN, REPO_ROOT } from './tools';

export interface ShellRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines. */
  lines: unknown[];
}

export function runShell(args: string[], stdin: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 10_000): Promise<ShellRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [QBD_BIN, 'shell', ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`qbd shell did not finish within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => {
          try {
            return JSON.parse(line) as unknown;
          } catch {
            return line;
          }
        });
      resolve({ code, stdout, stderr, lines });
    });
    child.stdin.end(stdin);
  });
}
