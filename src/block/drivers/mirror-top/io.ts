/** mirror_top, I/O half: every request goes to the `backing` child (the mirror's source); the tracking is the job's write notifier. */
import { passThroughIo } from '../../io/pass-through';

export const mirrorTopIo = passThroughIo('mirror_top', 'backing');
