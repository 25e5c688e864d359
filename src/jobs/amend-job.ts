/**
 * x-blockdev-amend: a job of type `amend` that runs the driver's `amend`
 * callback on an open node. Like QEMU's (and blockdev-create's), it
 * finalizes itself and waits to be dismissed.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { findNode } from '../block/global-state/graph';
import { createJob } from './job-registry';
import type { Job } from './job';

export interface AmendArgs {
  'job-id': string;
  'node-name': string;
  /** BlockdevAmendOptions: `driver` and that driver's options. */
  options: Record<string, unknown>;
  force?: boolean;
}

export function startAmendJob(args: AmendArgs): void {
  assertMainLoop();
  const node = findNode(args['node-name']);
  if (!node) throw QmpError.generic(`Cannot find device='' nor node-name='${args['node-name']}'`);
  const driver = node.driver;
  if (!driver.amend) throw QmpError.generic('Driver does not support x-blockdev-amend');
  if (args.options.driver !== driver.descriptor.name) throw QmpError.generic("x-blockdev-amend doesn't support changing the block driver");
  const amend = driver.amend.bind(driver);
  const { driver: _name, ...options } = args.options;
  const job = createJob(
    args['job-id'],
    {
      type: 'amend',
      free() {
        node.references--;
      },
      async run(j: Job) {
        j.progressTotal = 1;
        try {
          await amend(node, options, args.force ?? false);
        } finally {
          j.progressCurrent = 1;
        }
      },
    },
    { autoFinalize: true, autoDismiss: false },
  );
  // The node stays until the job is dismissed, as the reference's job holds a reference on it.
  node.references++;
  job.start();
}
