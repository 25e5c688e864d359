import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CompletionSources, completeLine, dynamicKind } from '../../src/shell/completion';
import { QmpSchema, SchemaEntity } from '../../src/shell/schema';

const fixture = path.join(__dirname, '..', 'fixtures', 'qsd-7.2-qmp-schema.json');
const schema = new QmpSchema(JSON.parse(fs.readFileSync(fixture, 'utf8')) as SchemaEntity[]);

function sources(overrides: Partial<CompletionSources> = {}): CompletionSources {
  return {
    schema,
    builtins: ['help', 'jobs', 'watch-jobs', 'wait-event'],
    nameTakingBuiltins: ['help'],
    eventTakingBuiltins: ['wait-event'],
    inTransaction: false,
    nodeNames: async () => ['disk0', 'disk1', 'overlay0'],
    jobIds: async () => ['backup0'],
    ...overrides,
  };
}

async function complete(line: string, overrides: Partial<CompletionSources> = {}): Promise<string[]> {
  const [candidates, word] = await completeLine(line, sources(overrides));
  const typed = line.slice(line.length - word.length);
  expect(word).toBe(typed);
  return candidates;
}

describe('completeLine', () => {
  it('completes a unique command name with a space after it', async () => {
    expect(await complete('query-ver')).toEqual(['query-version ']);
  });

  it('offers commands, shell commands and transaction( for the first word', async () => {
    const all = await complete('');
    expect(all).toContain('blockdev-add');
    expect(all).toContain('jobs');
    expect(all).toContain('transaction(');
  });

  it('offers the argument names of the command, without those already given', async () => {
    const names = await complete('block-job-set-speed device=x ');
    expect(names).toEqual(['speed=']);
  });

  it('offers the members of the variant selected by the union tag', async () => {
    expect(await complete('blockdev-add driver=file fil')).toEqual(['filename=']);
    expect(await complete('blockdev-add fil')).toEqual([]);
  });

  it('follows dotted keys into nested objects', async () => {
    expect(await complete('blockdev-create options.driver=qcow2 options.cluster-')).toEqual(['options.cluster-size=']);
    expect(await complete('blockdev-add driver=file cache.')).toEqual(['cache.direct=', 'cache.no-flush=']);
  });

  it('offers both key= and key. for an alternate of a name and an object', async () => {
    expect(await complete('blockdev-add driver=raw fi')).toEqual(['file.', 'file=']);
  });

  it('completes enum values', async () => {
    expect(await complete('blockdev-add driver=qco')).toEqual(['driver=qcow', 'driver=qcow2']);
    expect(await complete('blockdev-add driver=qcow2 discard=u')).toEqual(['discard=unmap ']);
  });

  it('completes booleans', async () => {
    expect(await complete('blockdev-add driver=file read-only=')).toEqual(['read-only=false', 'read-only=true']);
  });

  it('completes node names where a node is expected', async () => {
    expect(await complete('block-dirty-bitmap-add node=d')).toEqual(['node=disk0', 'node=disk1']);
    expect(await complete('blockdev-snapshot node=disk0 overlay=o')).toEqual(['overlay=overlay0 ']);
  });

  it('does not offer existing node names for the name of a new node', async () => {
    expect(await complete('blockdev-add driver=null-co node-name=')).toEqual([]);
  });

  it('completes job ids for job commands', async () => {
    expect(await complete('job-cancel id=')).toEqual(['id=backup0 ']);
    expect(await complete('block-job-set-speed device=')).toEqual(['device=backup0 ']);
  });

  it('completes transaction action names after transaction( and inside the sub-shell', async () => {
    expect(await complete('transaction( blockdev-snap')).toEqual([
      'blockdev-snapshot',
      'blockdev-snapshot-internal-sync',
      'blockdev-snapshot-sync',
    ]);
    expect(await complete('', { inTransaction: true })).toContain(')');
    expect(await complete('block-dirty-bitmap-add node=disk0 gran', { inTransaction: true })).toEqual(['granularity=']);
  });

  it('completes command and event names after help', async () => {
    expect(await complete('help JOB_STA')).toEqual(['JOB_STATUS_CHANGE ']);
    expect(await complete('help blockdev-add dri')).toEqual(['driver=']);
  });

  it('completes event data keys, values and timeout after wait-event', async () => {
    expect(await complete('wait-event JOB_STATUS_CHANGE ')).toEqual(['id=', 'status=', 'timeout=']);
    expect(await complete('wait-event JOB_STATUS_CHANGE status=conc')).toEqual(['status=concluded ']);
    expect(await complete('wait-event JOB_STATUS_CHANGE id=')).toEqual(['id=backup0 ']);
  });

  it('completes nothing inside raw JSON', async () => {
    expect(await complete('{"execute": "qu')).toEqual([]);
  });

  it('still completes command names without a schema, only the shell commands then', async () => {
    expect(await complete('wat', { schema: undefined })).toEqual(['watch-jobs ']);
  });
});

describe('dynamicKind', () => {
  it('tells node keys from job keys', () => {
    expect(dynamicKind('blockdev-backup', 'target')).toBe('node');
    expect(dynamicKind('blockdev-add', 'file')).toBe('node');
    expect(dynamicKind('job-complete', 'id')).toBe('job');
    expect(dynamicKind('block-job-cancel', 'device')).toBe('job');
    expect(dynamicKind('blockdev-add', 'node-name')).toBeUndefined();
    expect(dynamicKind('blockdev-create', 'job-id')).toBeUndefined();
  });
});
