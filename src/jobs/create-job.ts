/**
 * blockdev-create: a job of type `create` that runs the driver's `create`
 * callback. Like QEMU's, it finalizes itself and waits to be dismissed.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import * as proto from '../block/common/io-context-protocol';
import { gsDrivers } from '../block/global-state/driver-table';
import { requireNode } from '../block/global-state/graph';
import type { CreateContext } from '../block/global-state/driver-gs';
import { createJob } from './job-registry';
import type { Job } from './job';

/** What a driver's `create` may use; `cancelled` says whether to stop early. */
export function createContext(cancelled: () => boolean): CreateContext {
  return {
    node: (name) => requireNode(name),
    request: (node, request) => node.ctx.channel.request(proto.nodeRequest, { nodeName: node.name, request }),
    get cancelled() {
      return cancelled();
    },
  };
}

export function startCreateJob(jobId: string, options: Record<string, unknown>): void {
  assertMainLoop();
  const driverName = String(options.driver);
  const driver = gsDrivers.get(driverName);
  if (!driver?.create) throw QmpError.generic('Driver does not support blockdev-create');
  const create = driver.create.bind(driver);
  const job = createJob(
    jobId,
    {
      type: 'create',
      async run(j: Job) {
        const ctx = createContext(() => j.cancelled);
        j.progressTotal = 1;
        try {
          await create(options, ctx);
        } finally {
          j.progressCurrent = 1;
        }
      },
    },
    { autoFinalize: true, autoDismiss: false },
  );
  job.start();
}
