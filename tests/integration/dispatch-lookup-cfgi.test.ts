/**
 * A single vSMMU with dispatch lookup routes ASID-scoped TLBIs by the ASIDs of its guest's CDs. A
 * CFGI_CD tells it a CD changed: the TLBIs after it must route by the new ASIDs, also when the VMM
 * batches its HWPT_INVALIDATEs (per-batch), where the CFGI_CD travels in the batch. Driven by hand.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cdIpa, guestRamFile } from '../../services/machine/board.js';
import { encodeMmio } from '../../services/formats/kvm-run.js';
import { FileMemory } from '../../services/machine/memory.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, cfgiCd, cmdSync, encodeCommand, tlbiNhAsid, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { SMMU_REG, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { encodeCd } from '../../services/formats/smmu/structures.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { HAND_GUEST_ID, configureWithoutGuest, useProcessTree } from '../helpers/tree.js';

const scenario = resolveScenario({ topology: { psmmus: 2, vsmmu: 'single', dispatch: 'lookup' }, vmm: { hwptInvalidate: 'per-batch' }, workload: { ops: 10 } });
const fx = useProcessTree(scenario);

describe('dispatch lookup after a CFGI_CD in a per-batch HWPT_INVALIDATE', () => {
  let kvm: LinkClient;
  let qemu: Control;
  const psmmus: Control[] = [];
  let ram: FileMemory;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'nested-smmuv3');
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
    qemu = new Control('qemu-0', eps.get('qemu-0')?.address ?? '', fx.security);
    for (const k of [0, 1]) psmmus.push(new Control(`psmmu-${k}`, eps.get(`psmmu-${k}`)?.address ?? '', fx.security));
    // The guest's CDs: device 0 (behind pSMMU 0) uses ASID 1, device 1 (behind pSMMU 1) ASID 2.
    ram = new FileMemory(guestRamFile(fx.ramDir, 0), 'create');
    ram.write(cdIpa(0), encodeCd({ valid: true, asid: 1, ttb0: 0x1000 }));
    ram.write(cdIpa(1), encodeCd({ valid: true, asid: 2, ttb0: 0x2000 }));
  });

  afterAll(() => {
    kvm?.close();
    qemu?.close();
    for (const c of psmmus) c.close();
    ram?.close();
  });

  let prod = 0;
  function submit(cmds: SmmuCommand[]): Promise<Envelope__Output> {
    const ranges = cmds.map((c, i) => {
      const data = Buffer.alloc(CMD_SIZE);
      encodeCommand(c, data, 0);
      return { gpa: vsmmuCmdqGpa(0) + Q.index(prod + i, 8) * CMD_SIZE, data };
    });
    prod += cmds.length;
    return kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + SMMU_REG.CMDQ_PROD, data: prod, len: 4, isWrite: true }), guestMemory: ranges, modeledNs: 0 });
  }

  const executed = async (): Promise<number[]> => Promise.all(psmmus.map(async (c) => (await c.stats()).counters['commands'] ?? 0));

  it('sends the TLBIs after the CFGI_CD where the ASID is now used', async () => {
    const [a0, b0] = await executed();
    // ASID 1 is only device 0's: pSMMU 0 alone gets the TLBI.
    expect((await submit([tlbiNhAsid({ vmid: 0, asid: 1 }), cmdSync()])).status).toBe(0);
    const [a1, b1] = await executed();
    expect([(a1 ?? 0) - (a0 ?? 0), (b1 ?? 0) - (b0 ?? 0)]).toEqual([1, 0]);
    // The guest gives device 1 ASID 1 too, tells the vSMMU (CFGI_CD), and invalidates ASID 1.
    ram.write(cdIpa(1), encodeCd({ valid: true, asid: 1, ttb0: 0x2000 }));
    expect((await submit([cfgiCd({ sid: 16, ssid: 0, leaf: 1 }), tlbiNhAsid({ vmid: 0, asid: 1 }), cmdSync()])).status).toBe(0);
    const [a2, b2] = await executed();
    // pSMMU 1: the CFGI_CD and the TLBI; pSMMU 0: the TLBI.
    expect([(a2 ?? 0) - (a1 ?? 0), (b2 ?? 0) - (b1 ?? 0)]).toEqual([1, 2]);
  });
});
