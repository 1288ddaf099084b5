/**
 * Reading a results document's fields one by one, whatever it holds: the report's sections (data.ts,
 * measured.ts, sensitivity.ts) take every value through these, so a missing or mistyped field reads
 * as NaN or a fallback and the page says so, never throws.
 */

export type Obj = Record<string, unknown>;

export function isObj(x: unknown): x is Obj {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** A finite number, or NaN for anything else (missing, null, a string). */
export function num(x: unknown): number {
  return typeof x === 'number' && Number.isFinite(x) ? x : NaN;
}

export function text(x: unknown, fallback: string): string {
  if (typeof x === 'string') return x;
  if (typeof x === 'number' || typeof x === 'boolean') return String(x);
  return fallback;
}

/** A named number of a run and where it is in the document. */
export interface NumberAt {
  name: string;
  pointer: string;
  value: number;
}
