/**
 * QMP errors: the error classes QEMU's monitor uses (QapiErrorClass), and
 * the messages that every command shares. Handlers throw `QmpError`; the
 * dispatcher turns it into `{"error": {"class", "desc"}}`.
 */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

export class QmpError extends Error {
  constructor(
    readonly errorClass: QmpErrorClass,
    readonly desc: string,
    /** Advice for a person (QEMU's error hint): printed on the command line, never sent over QMP. */
    readonly hint?: string,
  ) {
    super(desc);
  }

  static generic(desc: string, hint?: string): QmpError {
    return new QmpError('GenericError', desc, hint);
  }

  static commandNotFound(name: string): QmpError {
    return new QmpError('CommandNotFound', `The command ${name} has not been found`);
  }

  static deviceNotFound(desc: string): QmpError {
    return new QmpError('DeviceNotFound', desc);
  }
}

/** Turns any thrown value into a QMP error; unexpected exceptions become GenericError with their message. */
export function toQmpError(err: unknown): QmpError {
  if (err instanceof QmpError) return err;
  if (err instanceof Error) return QmpError.generic(err.message);
  return QmpError.generic(String(err));
}
