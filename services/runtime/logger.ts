import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LEVELS)[number];

export function isLogLevel(s: string): s is LogLevel {
  return (LEVELS as readonly string[]).includes(s);
}

/** --log-level wins over VMMSIM_LOG_LEVEL; warn keeps a normal run's stderr quiet. */
export function resolveLogLevel(flag?: string): LogLevel {
  const v = flag ?? process.env['VMMSIM_LOG_LEVEL'] ?? 'warn';
  return isLogLevel(v) ? v : 'warn';
}

/**
 * pino on stderr (stdout carries results), pretty when stderr is a terminal. Synchronous writes so
 * the last lines before a crash or a signal are not lost.
 */
export function createLogger(base: Record<string, string | number>, level: LogLevel): Logger {
  const options = { level, base, timestamp: pino.stdTimeFunctions.isoTime };
  if (process.stderr.isTTY) {
    return pino(options, pretty({ destination: 2, sync: true, colorize: true }));
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
}
