/**
 * x-blockdev-change: adds a node as a child of another, or removes one of
 * its children, for drivers that take children at run time. The checks and
 * their words are QEMU 7.2's, in its order; a driver without the callback
 * refuses, as every driver does in QEMU but quorum.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { findNode } from './graph';

export interface ChildChangeArgs {
  parent: string;
  child?: string;
  node?: string;
}

export async function changeChild(args: ChildChangeArgs): Promise<void> {
  assertMainLoop();
  const parent = findNode(args.parent);
  if (!parent) throw QmpError.generic(`Cannot find device='${args.parent}' nor node-name='${args.parent}'`);
  if ((args.child === undefined) === (args.node === undefined)) {
    throw QmpError.generic(args.child === undefined ? 'Either child or node must be specified' : 'The parameters child and node are in conflict');
  }
  const gs = parent.driver;
  if (args.child !== undefined) {
    const child = parent.children.find((c) => c.role === args.child);
    if (!child) throw QmpError.generic(`Node '${args.parent}' does not have child '${args.child}'`);
    if (!gs.delChild) throw QmpError.generic(`The node ${args.parent} does not support removing a child`);
    await gs.delChild(parent, child);
    return;
  }
  const node = findNode(args.node!);
  if (!node) throw QmpError.generic(`Node '${args.node}' not found`);
  if (!gs.addChild) throw QmpError.generic(`The node ${args.parent} does not support adding a child`);
  await gs.addChild(parent, node);
}
