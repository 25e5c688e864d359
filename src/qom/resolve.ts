/**
 * Resolving a QOM path the way the reference does. An absolute path
 * (`/objects/io0`) walks child properties from the root, skipping empty
 * components. Any other path is partial: it names the one node, anywhere
 * in the tree, from which the components lead somewhere; two such nodes
 * make the path ambiguous (the empty path matches every node).
 *
 * Global state: reads the tree from the main loop.
 */
import { assertMainLoop } from '../common/thread-context';
import { qomRoot, type QomNode } from './tree';

export type Resolution = { node: QomNode; path: string } | { node: undefined; ambiguous: boolean };

function absolute(from: QomNode, fromPath: string, parts: string[]): { node: QomNode; path: string } | undefined {
  let node = from;
  let path = fromPath;
  for (const part of parts) {
    if (part === '') continue;
    const next = node.container?.child(part);
    if (!next) return undefined;
    path = node.container!.childPath(part);
    node = next;
  }
  return { node, path };
}

/** Every node under `from` (itself included) where `parts` lead somewhere; stops at the second. */
function partial(from: QomNode, fromPath: string, parts: string[], found: Array<{ node: QomNode; path: string }>): void {
  const here = absolute(from, fromPath, parts);
  if (here) found.push(here);
  const container = from.container;
  if (!container) return;
  for (const name of container.names()) {
    if (found.length > 1) return;
    partial(container.child(name)!, container.childPath(name), parts, found);
  }
}

export function resolvePath(path: string): Resolution {
  assertMainLoop();
  const parts = path === '' ? [] : path.split('/');
  if (parts.length > 0 && parts[0] === '') {
    const hit = absolute(qomRoot(), '/', parts.slice(1));
    return hit ?? { node: undefined, ambiguous: false };
  }
  const found: Array<{ node: QomNode; path: string }> = [];
  partial(qomRoot(), '/', parts, found);
  if (found.length === 1) return found[0]!;
  return { node: undefined, ambiguous: found.length > 1 };
}
