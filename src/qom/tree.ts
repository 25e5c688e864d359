/**
 * The QOM composition tree as qemu-storage-daemon shows it: a root
 * container with `objects` (user-creatable objects) and `chardevs`
 * (character devices). The registries that own objects and character
 * devices add and remove their entries here as they change, so the tree is
 * always the live state; nothing here holds data of its own beyond the
 * listing order.
 *
 * Global state: the registries call it from the main loop, and the QOM
 * commands read it there.
 */
import { assertMainLoop } from '../common/thread-context';
import { GHashOrder } from './ghash-order';

/** How a node reads and writes one of its class's properties. */
export interface PropertyAccessor {
  get(): unknown;
  /** Absent for read-only properties. `value` is already typed (see `schemaType`). */
  set?(value: unknown): void;
  /** The QAPI type qom-set checks a new value against, named as in the schema (`int`, `str`, `['QAuthZListRule']`). */
  schemaType?: string | [string];
}

export interface QomNode {
  /** The node's QOM type (see types.ts). */
  readonly typeName: string;
  /** Accessors for the class properties other than `type`. */
  accessor(property: string): PropertyAccessor | undefined;
  /** Children, for containers. */
  readonly container?: QomContainer;
}

/** A node whose only children are added and removed by a registry. */
export class QomContainer implements QomNode {
  readonly typeName = 'container';
  readonly container = this;
  private readonly order = new GHashOrder();
  private readonly children = new Map<string, QomNode>();

  constructor(readonly path: string) {}

  accessor(): undefined {
    return undefined;
  }

  add(name: string, node: QomNode): void {
    assertMainLoop();
    this.children.set(name, node);
    this.order.add(name);
  }

  remove(name: string): void {
    assertMainLoop();
    this.children.delete(name);
    this.order.delete(name);
  }

  child(name: string): QomNode | undefined {
    assertMainLoop();
    return this.children.get(name);
  }

  childPath(name: string): string {
    return this.path === '/' ? `/${name}` : `${this.path}/${name}`;
  }

  /** Child names as the reference lists them: its hash table's order, reversed. */
  names(): string[] {
    assertMainLoop();
    return this.order.order().reverse();
  }
}

const root = new QomContainer('/');
const objects = new QomContainer('/objects');
const chardevs = new QomContainer('/chardevs');
root.add('objects', objects);
root.add('chardevs', chardevs);

export function qomRoot(): QomContainer {
  assertMainLoop();
  return root;
}

/** `/objects`: where --object and object-add put what they create. */
export function objectsContainer(): QomContainer {
  assertMainLoop();
  return objects;
}

/** `/chardevs`: every character device. */
export function chardevsContainer(): QomContainer {
  assertMainLoop();
  return chardevs;
}
