/**
 * The job state machine of qapi/job.json, as two tables: which status may
 * follow which, and which verbs a job accepts in which status. An illegal
 * transition is a programming error; an illegal verb from a client is a QMP
 * error naming the job, its status and the verb.
 */
export const JOB_STATUSES = ['undefined', 'created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting', 'concluded', 'null'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const JOB_VERBS = ['cancel', 'pause', 'resume', 'set-speed', 'complete', 'finalize', 'dismiss'] as const;
export type JobVerb = (typeof JOB_VERBS)[number];

/** Legal transitions (QEMU's JobSTT). */
export const TRANSITIONS = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['concluded', 'null'],
  concluded: ['null'],
  null: [],
} as const satisfies Record<JobStatus, readonly JobStatus[]>;

/** The statuses in which each verb is accepted (QEMU's JobVerbTable). */
export const VERBS = {
  cancel: ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting'],
  pause: ['created', 'running', 'paused', 'ready', 'standby'],
  resume: ['created', 'running', 'paused', 'ready', 'standby'],
  'set-speed': ['created', 'running', 'paused', 'ready', 'standby'],
  complete: ['ready', 'standby'],
  finalize: ['pending'],
  dismiss: ['concluded'],
} as const satisfies Record<JobVerb, readonly JobStatus[]>;

export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return (TRANSITIONS[from] as readonly JobStatus[]).includes(to);
}

export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return (VERBS[verb] as readonly JobStatus[]).includes(status);
}
