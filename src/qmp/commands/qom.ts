/**
 * qom-list, qom-get, qom-set, qom-list-types and qom-list-properties over
 * the live QOM tree (src/qom/tree.ts) and the types qbd implements
 * (src/qom/types.ts), with the reference's errors.
 */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import type { Schema } from '../schema/schema';
import { Visitor } from '../schema/visitor';
import { resolvePath } from '../../qom/resolve';
import type { QomNode } from '../../qom/tree';
import { classProperties, findType, isObjectType, listTypes, type QomPropertyInfo } from '../../qom/types';

function notFound(path: string): QmpError {
  return QmpError.deviceNotFound(`Device '${path}' not found`);
}

/** qom-get and qom-set find a node without telling ambiguity apart. */
function nodeAt(path: string): QomNode {
  const r = resolvePath(path);
  if (!r.node) throw notFound(path);
  return r.node;
}

/** What qom-list shows for a node: class properties, then children. */
function propertiesOf(node: QomNode): QomPropertyInfo[] {
  const list = classProperties(node.typeName);
  const container = node.container;
  if (container) {
    for (const name of container.names()) list.push({ name, type: `child<${container.child(name)!.typeName}>` });
  }
  return list;
}

function readProperty(node: QomNode, property: string): unknown {
  if (property === 'type') return node.typeName;
  const child = node.container?.child(property);
  if (child) return node.container!.childPath(property);
  const accessor = classProperties(node.typeName).some((p) => p.name === property) ? node.accessor(property) : undefined;
  if (!accessor) throw QmpError.generic(`Property '${node.typeName}.${property}' not found`);
  return accessor.get();
}

function writeProperty(visitor: Visitor, node: QomNode, property: string, value: unknown): void {
  const known = property === 'type' || node.container?.child(property) !== undefined || classProperties(node.typeName).some((p) => p.name === property);
  if (!known) throw QmpError.generic(`Property '${node.typeName}.${property}' not found`);
  const accessor = property === 'type' ? undefined : node.accessor(property);
  if (!accessor?.set) throw QmpError.generic(`Property '${node.typeName}.${property}' is not writable`);
  const typed = accessor.schemaType === undefined ? value : visitor.visit(value, accessor.schemaType, { path: property, name: property });
  accessor.set(typed);
}

export function qomCommands(schema: Schema) {
  const visitor = new Visitor(schema);
  return [
    defineCommand<{ path: string }>('qom-list', ({ path }) => {
      const r = resolvePath(path);
      if (!r.node) {
        if (r.ambiguous) throw QmpError.generic(`Path '${path}' is ambiguous`);
        throw notFound(path);
      }
      return propertiesOf(r.node);
    }),
    defineCommand<{ path: string; property: string }>('qom-get', ({ path, property }) => readProperty(nodeAt(path), property)),
    defineCommand<{ path: string; property: string; value: unknown }>('qom-set', ({ path, property, value }) => {
      writeProperty(visitor, nodeAt(path), property, value);
      return {};
    }),
    defineCommand<{ implements?: string; abstract?: boolean }>('qom-list-types', (args) => listTypes(args.implements, args.abstract ?? false)),
    defineCommand<{ typename: string }>('qom-list-properties', ({ typename }) => {
      if (!findType(typename)) throw QmpError.deviceNotFound(`Class '${typename}' not found`);
      if (!isObjectType(typename)) throw QmpError.generic(`Parameter 'typename' expects a QOM type`);
      return classProperties(typename);
    }),
  ];
}
