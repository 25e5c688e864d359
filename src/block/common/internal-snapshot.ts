/**
 * Internal snapshots (snapshots a format keeps inside its image, as qcow2
 * does) as both worlds see them: the operations the main loop asks of a
 * node's I/O half, and what they answer. Plain data: it crosses threads.
 */

/** QMP's SnapshotInfo, members in the schema's order. */
export interface InternalSnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

export type InternalSnapshotOp =
  /** Takes a snapshot of the node's current content; the image picks the id. */
  | { kind: 'create'; name: string; dateSec: number; dateNsec: number; vmClockNsec: string }
  /** Deletes the snapshot matching both of `id` and `name` that are given. */
  | { kind: 'delete'; id?: string; name?: string };

export interface InternalSnapshotResult {
  /** The image's snapshots after the operation. */
  snapshots: InternalSnapshotInfo[];
  /** The snapshot created or deleted. */
  affected: InternalSnapshotInfo;
  /** What else the driver's GS half must record (qcow2: where the table is now). */
  driverData?: unknown;
}

/** Whether snapshot `s` matches an id and/or name (QEMU's bdrv_snapshot_find_by_id_and_name). */
export function snapshotMatches(s: { id: string; name: string }, id: string | undefined, name: string | undefined): boolean {
  if (id !== undefined && s.id !== id) return false;
  if (name !== undefined && s.name !== name) return false;
  return id !== undefined || name !== undefined;
}
