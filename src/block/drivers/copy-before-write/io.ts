/** copy-before-write, I/O half: requests pass to `file`; the copying is the backup job's write notifier on `file`. */
import { passThroughIo } from '../../io/pass-through';

export const copyBeforeWriteIo = passThroughIo('copy-before-write', 'file');
