import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';
import type Pretty from 'pino-pretty';

/** pino-pretty is for a terminal only: loaded when stderr is one (a role process never pays for it). */
const requireHere = createRequire(import.meta.url);

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
    const pretty = requireHere('pino-pretty') as typeof Pretty;
    return pino(options, pretty({ destination: 2, sync: true, colorize: true }));
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
}
