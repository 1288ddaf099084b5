import { readFileSync, readdirSync } from 'node:fs';

/**
 * Processes whose environment holds VMMSIM_TEST_MARKER=<marker>. Tests give each CLI run a fresh
 * marker; children inherit it, so this finds every process a run started, ready or not, by asking
 * the OS rather than the controller.
 */
export function processesWithMarker(marker: string): { pid: number; cmdline: string }[] {
  const needle = `VMMSIM_TEST_MARKER=${marker}`;
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'latin1');
      if (!env.split('\0').includes(needle)) continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
      // A zombie not yet reaped has no cmdline; it holds no resources and is not "left behind".
      if (cmdline === '') continue;
      out.push({ pid, cmdline });
    } catch {
      // The process ended while we looked, or is not ours to read.
    }
  }
  return out;
}

/** Waits until no process carries the marker, up to `ms`; returns what is left. */
export async function waitForNoProcesses(marker: string, ms = 10_000): Promise<{ pid: number; cmdline: string }[]> {
  const until = Date.now() + ms;
  let left = processesWithMarker(marker);
  while (left.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesWithMarker(marker);
  }
  return left;
}

/** Kills whatever a failed test left behind, so one failure does not cascade into the next test. */
export function killMarked(marker: string): void {
  for (const p of processesWithMarker(marker)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
