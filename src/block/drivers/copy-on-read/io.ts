/** copy-on-read, I/O half: every request goes to the `file` child; the stream job's run half does the copying. */
import { passThroughIo } from '../../io/pass-through';

export const copyOnReadIo = passThroughIo('copy-on-read', 'file');
