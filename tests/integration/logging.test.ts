import { describe, expect, it } from 'vitest';
import { ROLES } from '../../services/runtime/topology.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';

interface LogLine {
  level: number;
  role?: string;
  name?: string;
  opId?: number;
  msg?: string;
}

/** The pino JSON lines of stderr (it is a pipe here, so not pretty-printed); other lines are skipped. */
function logLines(stderr: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    out.push(JSON.parse(line) as LogLine);
  }
  return out;
}

const PINO_DEBUG = 20;

describe('logs: pino JSON on stderr, a child logger per role and per operation', () => {
  it('at debug (VMMSIM_LOG_LEVEL), every role logs, and per-operation lines carry role, name and opId', async () => {
    const r = await runCli(['run', '--model', 'nested-smmuv3', '--ops', '20', '--out', tempDir()], { env: { VMMSIM_LOG_LEVEL: 'debug' } });
    expect(r.code, r.stderr).toBe(0);
    const lines = logLines(r.stderr);
    // Every role process honours the level the controller resolved.
    for (const role of ROLES) expect(lines.some((l) => l.role === role && l.level === PINO_DEBUG), `${role} logs at debug`).toBe(true);
    const perOp = lines.filter((l) => l.opId !== undefined);
    expect(perOp.length).toBeGreaterThan(0);
    for (const l of perOp) {
      expect(typeof l.opId).toBe('number');
      expect(l.role).toBeTruthy();
      expect(l.name).toBeTruthy();
    }
    // A request served by KVM, and an operation completed by the guest, each under its opId.
    const kvm = perOp.filter((l) => l.role === 'kvm' && l.name === 'kvm' && l.msg === 'request');
    const guest = perOp.filter((l) => l.role === 'guest' && l.name === 'guest-0' && l.msg === 'operation done');
    expect(kvm.length).toBeGreaterThan(0);
    // 20 maps and 20 unmaps (the receive rings' setup maps are not operations of the run).
    expect(guest.length).toBe(40);
    // The unmaps trap to KVM, a PROD write and a CONS read each, under their opIds; opId 0 is
    // outside every operation: the driver's probe of the vSMMU's IDR0 and IDR3 at boot.
    const guestOps = new Set(guest.map((l) => l.opId));
    const inOps = kvm.filter((l) => l.opId !== 0);
    expect(inOps.every((l) => guestOps.has(l.opId))).toBe(true);
    expect(inOps).toHaveLength(2 * 20);
    expect(kvm.filter((l) => l.opId === 0)).toHaveLength(2);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  }, 90_000);

  it('at warn (--log-level wins over VMMSIM_LOG_LEVEL) writes no per-operation line', async () => {
    const r = await runCli(['run', '--model', 'nested-smmuv3', '--ops', '20', '--log-level', 'warn', '--out', tempDir()], { env: { VMMSIM_LOG_LEVEL: 'debug' } });
    expect(r.code, r.stderr).toBe(0);
    const lines = logLines(r.stderr);
    expect(lines.filter((l) => l.opId !== undefined)).toEqual([]);
    expect(lines.filter((l) => l.level < 40)).toEqual([]);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  }, 90_000);
});
