/**
 * Services that live in I/O contexts beside the block graph: the data path
 * of exports, the run half of jobs. Each installs its message handlers on
 * the context's channel when the context starts.
 */
import type { Channel } from '../../common/channel';
import { installNbdService } from '../../exports/nbd/server-io';
import { installVhostUserBlkService } from '../../exports/vhost-user-blk/io/service';
import { installFuseService } from '../../exports/fuse/service-io';
import type { IoGraph } from './io-graph';
import { installJobService } from '../../jobs/io/job-service';
import { installNbdClientService } from '../drivers/nbd/service';

export interface IoContextRuntime {
  readonly name: string;
  readonly graph: IoGraph;
  readonly channel: Channel;
}

export type ContextService = (runtime: IoContextRuntime) => void;

export const contextServices: ContextService[] = [
  installNbdService,
  installJobService,
  installNbdClientService,
  installVhostUserBlkService,
  installFuseService,
];
