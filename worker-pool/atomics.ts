/**
 * Atomics.waitAsync with its type: the project's lib is ES2023 and the declaration arrived in
 * ES2024. Node 20 has the function.
 *
 * Never pass waitAsync a timeout here. On Node 20 (V8 11.3), waitAsync calls with a timeout, several
 * pending on one word and notified from a worker thread, regularly leave their promises unresolved
 * for seconds after the notify (stalls of 0.3-18 s in a 5 s run of 16 waiters; the timeout does not
 * fire either). The same pattern without a timeout ran 3 x 8 s (2.2M wake-ups each) without a stall,
 * 4x faster. So every wait here is untimed, and liveness comes from the other side: whoever fails
 * or stops (a worker, destroy) notifies every word someone may wait on. A deadline, where one is
 * needed, is a Node timer raced against the wait.
 *
 * A pending waitAsync does not keep the process alive (checked on Node 20); the worker threads do
 * while the pool runs.
 */

type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };

interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): WaitAsyncResult;
}

const atomics = Atomics as unknown as AtomicsWaitAsync;

/** Resolves once array[index] is notified or no longer holds `value`. */
export async function waitWhileEqual(array: Int32Array, index: number, value: number): Promise<void> {
  const r = atomics.waitAsync(array, index, value);
  if (r.async) await r.value;
}

/** As waitWhileEqual, but gives up after `ms` (a Node timer, cleared when the wait ends first). */
export async function waitWhileEqualFor(array: Int32Array, index: number, value: number, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([waitWhileEqual(array, index, value), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
