/**
 * Atomics.waitAsync with its type: the project's lib is ES2023 and the declaration arrived in
 * ES2024. Node 20 has the function. A pending waitAsync does not keep the process alive (checked
 * on Node 20), so a forgotten one cannot hang exit; worker threads keep the loop alive meanwhile.
 */

type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };

interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number, timeoutMs?: number): WaitAsyncResult;
}

const atomics = Atomics as unknown as AtomicsWaitAsync;

/** Resolves once array[index] is notified, no longer holds `value`, or timeoutMs passed. */
export async function waitWhileEqual(array: Int32Array, index: number, value: number, timeoutMs?: number): Promise<'ok' | 'not-equal' | 'timed-out'> {
  const r = atomics.waitAsync(array, index, value, timeoutMs);
  return r.async ? r.value : r.value;
}
