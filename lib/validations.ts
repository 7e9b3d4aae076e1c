/**
 * Misconfiguration checks. Each check is a small named function; each failure
 * carries a stable code (listed in the README under "Error codes") and a
 * message that says what to do. Checks that can only run at request time log
 * once per code instead of throwing at every request.
 */

export type KeyFailoverErrorCode =
  | 'ERR_EKF_INVALID_OPTION'
  | 'ERR_EKF_UNKNOWN_OPTION'
  | 'ERR_EKF_INVALID_KEYS'
  | 'ERR_EKF_DUPLICATE_KEY'
  | 'ERR_EKF_UNKNOWN_KEY'
  | 'ERR_EKF_NO_POOL'
  | 'ERR_EKF_BODY_CONSUMED'
  | 'ERR_EKF_TARGET_MISMATCH';

export class KeyFailoverError extends Error {
  readonly code: KeyFailoverErrorCode;
  /** Where the README explains this code. */
  readonly help: string;

  constructor(code: KeyFailoverErrorCode, message: string) {
    super(`${message} (${code}; see the "Error codes" section of the express-key-failover README)`);
    this.name = 'KeyFailoverError';
    this.code = code;
    this.help = `README.md#${code.toLowerCase()}`;
  }
}

/** The smallest logger the package writes to: `console` fits. */
export interface Logger {
  warn(message: string): void;
}

export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  return typeof value;
}

export function checkKnownOptions(where: string, options: object, known: readonly string[]): void {
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw new KeyFailoverError('ERR_EKF_UNKNOWN_OPTION', `${where}: unknown option "${name}". Known options: ${known.join(', ')}.`);
    }
  }
}

/**
 * The longest a single option may keep a key out: one year. Past it a
 * deadline soon stops being a date at all (`new Date(...)` gives up past the
 * year 275760, and a page that prints it fails), and a typo is likelier than
 * intent.
 */
export const MAX_KEY_STATE_MS = 365 * 24 * 60 * 60 * 1000;
// The KeyPool options that are durations of a key's state: defaultCooldownMs, minCooldownMs, maxCooldownMs, authCooldownMs.
const KEY_STATE_DURATION = /CooldownMs$/;

export function checkPositiveInteger(
  where: string,
  name: string,
  value: unknown,
  { allowZero = false, max }: { allowZero?: boolean; max?: number } = {},
): number {
  const ok = typeof value === 'number' && Number.isSafeInteger(value) && (allowZero ? value >= 0 : value > 0);
  if (!ok) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "${name}" must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${describeValue(value)}.`,
    );
  }
  if (max !== undefined && value > max) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${where}: option "${name}" must be at most ${max}, got ${value}.`);
  }
  if (KEY_STATE_DURATION.test(name)) checkKeyStateDuration(where, name, value);
  return value;
}

export function checkKeyStateDuration(where: string, name: string, value: number): void {
  if (value > MAX_KEY_STATE_MS) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "${name}" must be at most one year (${MAX_KEY_STATE_MS} ms), got ${value}.`,
    );
  }
}

export function checkBoolean(where: string, name: string, value: unknown): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${where}: option "${name}" must be true or false, got ${describeValue(value)}.`);
}

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the function type it expects
export function checkFunction<T>(where: string, name: string, value: unknown): T {
  if (typeof value !== 'function') {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${where}: option "${name}" must be a function, got ${describeValue(value)}.`);
  }
  return value as T;
}

export function checkLogger(where: string, value: unknown): Logger | undefined {
  if (value === false) return undefined;
  if (value === undefined) return console;
  if (typeof value === 'object' && value !== null && typeof (value as Logger).warn === 'function') return value as Logger;
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_OPTION',
    `${where}: option "logger" must be an object with a warn(message) method (console works) or false, got ${describeValue(value)}.`,
  );
}

/** Logs each code at most once per logger, so a misconfiguration seen at request time does not flood the log. */
export class OnceLogger {
  private readonly seen = new Set<KeyFailoverErrorCode>();
  constructor(private readonly logger: Logger | undefined) {}

  warn(error: KeyFailoverError): void {
    if (!this.logger || this.seen.has(error.code)) return;
    this.seen.add(error.code);
    this.logger.warn(`[express-key-failover] ${error.message}`);
  }
}
