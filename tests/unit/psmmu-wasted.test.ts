import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hostRamFile } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { encodeMmio } from '../../services/formats/kvm-run.js';
import { createLogger } from '../../services/runtime/logger.js';
import { FileMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import { CMD_SIZE, cmdSync, encodeCommand, tlbiNhAsid, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import { GERROR_CMDQ_ERR, SMMU_REG } from '../../services/formats/smmu/registers.js';
import type { Endpoint } from '../../services/runtime/topology.js';
import { createRole } from '../../services/psmmu/index.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const vfio = { id: 2, role: 'vfio', index: 0, name: 'vfio' } as Endpoint;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function bytes(cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

function envelope(kind: string, payload: Buffer, guestMemory: { gpa: number; data: Buffer }[] = []): Envelope__Output {
  return { kind, payload, guestMemory } as unknown as Envelope__Output;
}

describe('a pSMMU counting what a broadcast wasted on it', () => {
  it('counts the commands it runs after the host recovered its halted CMDQ too', async () => {
    const ramDir = mkdtempSync(join(tmpdir(), 'vmmsim-psmmu-'));
    dirs.push(ramDir);
    // The host's memory, as vfio creates it: no STE written, so no stream here has a context.
    const host = new FileMemory(hostRamFile(ramDir), 'create');
    const env = {
      self: { id: 1, role: 'psmmu', index: 0, name: 'psmmu-0' },
      // No device of this pSMMU uses VMID 9: every TLBI of it is wasted here.
      topology: { model: 'nested-smmuv3', devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 0x100 }], vmids: [1], seed: 1, ramDir, device: { dmaRate: 0 }, vcmdqsPerVsmmu: 0 },
      costs,
      log: createLogger({ role: 'test' }, 'silent'),
      peers: [],
    } as unknown as RoleEnv;
    const role = await createRole(env);
    const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());
    const bad = Buffer.alloc(CMD_SIZE, 0xff); // an opcode no SMMU knows: CERROR_ILL
    const submitted = await role.handle(envelope('CMDQ_SUBMIT', Buffer.concat([bytes([tlbiNhAsid({ vmid: 9, asid: 1 })]), bad, bytes([tlbiNhAsid({ vmid: 9, asid: 2 }), cmdSync()])])), ctx(), vfio);
    expect(submitted.status).toBeLessThan(0);
    expect(role.stats()).toMatchObject({ commands: 1, wasted: 1 });
    // The host rewrites the refused slot with a CMD_SYNC and acknowledges: the rest runs.
    const resumed = await role.handle(envelope('HOST_MMIO', encodeMmio({ physAddr: SMMU_REG.GERRORN, data: GERROR_CMDQ_ERR, len: 4, isWrite: true }), [{ gpa: 0, data: bytes([cmdSync()]) }]), ctx(), vfio);
    expect(resumed.status).toBe(0);
    expect(role.stats()).toMatchObject({ commands: 2, wasted: 2 });
    await role.close?.();
    host.close();
  });
});
