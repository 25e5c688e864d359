import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { helpFor } from '../../src/shell/help';
import { QmpSchema, SchemaEntity } from '../../src/shell/schema';
import { BUILTINS } from '../../src/shell/builtins';

const fixture = path.join(__dirname, '..', 'fixtures', 'qsd-7.2-qmp-schema.json');
const schema = new QmpSchema(JSON.parse(fs.readFileSync(fixture, 'utf8')) as SchemaEntity[]);

function help(...words: string[]): string {
  return helpFor(schema, BUILTINS, words, 100);
}

describe('help', () => {
  it('lists the server commands and the shell commands', () => {
    const text = help();
    expect(text).toMatch(/Commands of the server:\n(.*\n)*.*blockdev-add/);
    expect(text).toMatch(/Commands of the shell:\n(.*\n)*\s+jobs\s+live view of the jobs/);
  });

  it('shows each argument with its type, and which are optional', () => {
    expect(help('block-dirty-bitmap-add')).toBe(
      [
        'block-dirty-bitmap-add arguments:',
        '  node         str',
        '  name         str',
        '  granularity  int   optional',
        '  persistent   bool  optional',
        '  disabled     bool  optional',
      ].join('\n'),
    );
  });

  it('says what the union tag selects, and shows the variant once it is given', () => {
    const common = help('blockdev-add');
    expect(common).toContain('(driver selects more arguments: add driver=VALUE to see them)');
    expect(common).not.toContain('filename');
    const file = help('blockdev-add', 'driver=file');
    expect(file).toMatch(/\n {2}filename +str *\n/);
    expect(file).toMatch(/\n {2}aio +enum +optional +\(threads, native, io_uring\)/);
  });

  it('spells out nested objects with dotted names', () => {
    expect(help('blockdev-create', 'options.driver=file')).toMatch(/\n {2}options\.filename +str *\n/);
  });

  it('describes events and the shell commands too', () => {
    expect(help('JOB_STATUS_CHANGE')).toMatch(/^JOB_STATUS_CHANGE \(event\) data:\n {2}id +str/);
    expect(help('wait-event')).toContain('wait-event EVENT [key=value…] [timeout=SECONDS]');
    expect(help('query-jobs')).toBe('query-jobs: no arguments');
    expect(help('no-such-thing')).toBe("Unknown command or event 'no-such-thing'.");
  });
});
