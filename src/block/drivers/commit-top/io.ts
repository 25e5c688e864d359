/** commit_top, I/O half: every request goes to the `backing` child (the commit's top node). */
import { passThroughIo } from '../../io/pass-through';

export const commitTopIo = passThroughIo('commit_top', 'backing');
