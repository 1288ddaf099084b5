import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestRamFile } from '../../services/machine/board.js';
import type { CostStep } from '../../services/cost/steps.js';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { FileMemory } from '../../services/machine/memory.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { TransitionCounts } from '../../services/runtime/topology.js';
import { LinkClient, type Envelope__Output, type MemoryRange } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import type { RunResult } from '../../services/controller/results.js';
import { DESC_SIZE, DescType, FSTS, VTD_MMIO_BASE, VTD_REG, encodeDescriptors, iqIndexOf, iqRegisterOf, vtdIqSlotGpa } from '../../services/formats/vtd.js';
import { processesWithMarker } from '../helpers/processes.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const OPS = 50;
const RING = 16;
const scenario = resolveScenario({ name: 'intel-cm', workload: { ops: OPS } });
const fx = useProcessTree(scenario);

const t = (c: Partial<TransitionCounts>): TransitionCounts => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });
const op = (run: RunResult, name: string) => run.ops.find((o) => o.op === name);
const ns = (steps: [CostStep, number][]): number => steps.reduce((sum, [s, n]) => sum + (testProfile.steps[s]?.ns ?? NaN) * n, 0);

describe('the intel-cm path (emulated VT-d, caching mode, VFIO type1 shadow) through real processes', () => {
  it('pays exit, user exit and one ioctl per strict map and per strict unmap of a page, and one host invalidation per unmap only', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario, 'intel-cm', testProfile);
      const map = op(run, 'map');
      const unmap = op(run, 'unmap');
      expect([map?.count, map?.failed, unmap?.count, unmap?.failed]).toEqual([OPS, 0, OPS, 0]);
      // The host is an SMMUv3: a map invalidates nothing there (no iotlb_sync_map).
      expect(map?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 1 }));
      expect(unmap?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 1, hw: 1 }));
      expect(run.hops.map((h) => `${h.from}>${h.to}`).sort()).toEqual(
        ['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>vfio', 'vfio>psmmu-0', 'psmmu-0>vfio', 'vfio>qemu-0', 'qemu-0>kvm', 'kvm>guest-0'].sort(),
      );
      // Receive-ring maps and the benchmark's maps each take a PSI + wait; QEMU maps the one leaf
      // each finds, and unmaps the one each strict unmap cleared.
      const invalidations = RING + 2 * OPS;
      expect(run.counters['qemu-0']).toMatchObject({
        iotlbPsi: invalidations, iotlbDsi: 0, waits: invalidations, descriptors: 2 * invalidations, walkReads: 4 * invalidations,
        mapDma: RING + OPS, unmapDma: OPS, ioctlErrors: 0, queueErrors: 0, shadowPages: RING,
      });
      expect(run.counters['vfio']).toMatchObject({ maps: RING + OPS, unmaps: OPS, pagesMapped: RING + OPS, pagesUnmapped: OPS, flushes: OPS, mapErrors: 0 });
      // Each VFIO unmap is one TLBI_NH_VA (the device's domain's ASID) + CMD_SYNC on the physical SMMU.
      expect(run.counters['psmmu-0']).toMatchObject({ submissions: OPS, commands: OPS, syncs: OPS, errors: 0 });
      expect(run.invalidations.guestCommands).toBe(invalidations);
      // The device's DMA to its ring goes through the shadow without a fault.
      expect(run.dma.faults).toBe(0);
      // Every map and every unmap pays the same steps (no new table after the ring's maps).
      expect(map?.modeledNs.min).toBe(map?.modeledNs.max);
      expect(unmap?.modeledNs.min).toBe(unmap?.modeledNs.max);
      const path: [CostStep, number][] = [
        ['guest.cmdq_write', 2], ['exit.mmio_trap', 1], ['exit.to_user', 1], ['vmm.vtd_desc', 2], ['vmm.iommu_walk_pte', 4],
        ['ioctl.syscall', 1], ['kernel.vfio_dma_op', 1], ['kernel.iommu_pte_write', 1],
      ];
      const hostFlush: [CostStep, number][] = [['kernel.cmdq_insert', 2], ['smmu.cmd_exec', 1], ['smmu.sync', 1]];
      expect(map?.modeledNs.mean).toBe(ns([...path, ['guest.iova_alloc', 1], ['guest.pte_write', 1], ['kernel.vfio_pin_page', 1]]));
      expect(unmap?.modeledNs.mean).toBe(ns([...path, ...hostFlush, ['guest.pte_write', 1], ['kernel.vfio_unpin_page', 1], ['guest.iova_free', 1]]));
    });
  });

  it('maps and unmaps a multi-page buffer with one invalidation but one ioctl per 4 KiB leaf, as QEMU notifies per entry', async () => {
    const s = resolveScenario({ name: 'intel-cm', device: { ringBuffers: 0 }, workload: { ops: 20, granulePages: 4 } });
    await withSession(fx, async (session) => {
      const run = await session.run(s, 'intel-cm', testProfile);
      expect(op(run, 'map')?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 4 }));
      // One sync per vfio_dma (vfio_unmap_unpin): each 4 KiB UNMAP_DMA invalidates.
      expect(op(run, 'unmap')?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 4, hw: 4 }));
      expect(run.counters['vfio']).toMatchObject({ maps: 80, unmaps: 80, pagesMapped: 80, pagesUnmapped: 80 });
      expect(run.counters['qemu-0']).toMatchObject({ iotlbPsi: 40, shadowPages: 0 });
    });
  });

  it('lazy: unmaps rarely exit, a flush re-syncs the whole domain, and after the final drain no unmapped IOVA is left in the shadow', async () => {
    const lazyOps = 300;
    const s = resolveScenario({ name: 'intel-cm', dma: 'lazy', workload: { ops: lazyOps } });
    await withSession(fx, async (session) => {
      const run = await session.run(s, 'intel-cm', testProfile);
      const unmap = op(run, 'unmap');
      expect(unmap?.failed).toBe(0);
      // One CPU: its queue fills at unmap 256 (that unmap pays the DSI); the rest at the end.
      expect(unmap?.transitions.exit).toBeCloseTo(1 / lazyOps, 3);
      expect(unmap?.transitions.exit).toBeLessThan(1);
      // The flushing unmap sends VFIO one UNMAP_DMA for each of the 256 pages it finds cleared.
      expect(unmap?.transitions.ioctl).toBeCloseTo(256 / lazyOps, 3);
      expect(op(run, 'flush')?.count).toBe(1);
      expect(op(run, 'map')?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 1 }));
      expect(run.counters['qemu-0']).toMatchObject({ iotlbDsi: 2, iotlbPsi: RING + lazyOps, unmapDma: lazyOps, mapDma: RING + lazyOps, shadowPages: RING, ioctlErrors: 0 });
      expect(run.counters['vfio']).toMatchObject({ pagesMapped: RING + lazyOps, pagesUnmapped: lazyOps, mapErrors: 0 });
      // A DSI walks every entry of every table of the domain (4 tables of 512 here).
      expect(run.counters['qemu-0']?.['walkReads']).toBe(4 * (RING + lazyOps) + 2 * 4 * 512);
    });
  });
});

describe('the VT-d register page driven by a hand-made guest', () => {
  let kvm: LinkClient;
  let vfio: Control;
  let ram: FileMemory;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'intel-cm');
    // The guest's RAM, empty, as a newly booted guest's would be.
    ram = new FileMemory(guestRamFile(fx.ramDir, 0), 'create');
    vfio = new Control('vfio', eps.get('vfio')?.address ?? '', fx.security);
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
  });

  afterAll(() => {
    kvm?.close();
    vfio?.close();
    ram?.close();
  });

  function mmio(offset: number, data: number, isWrite: boolean, ranges: MemoryRange[] = []): Promise<Envelope__Output> {
    // A load traps as a read (KVM_EXIT_MMIO with is_write 0), as the guest's driver sends it.
    return kvm.request({ kind: isWrite ? 'MMIO_WRITE' : 'MMIO_READ', opId: 1, payload: encodeMmio({ physAddr: VTD_MMIO_BASE + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  }
  const read = async (offset: number): Promise<number> => decodeMmio((await mmio(offset, 0, false)).payload)?.data ?? -1;
  const wait = (statusAddr: number): Buffer => encodeDescriptors([{ type: DescType.WAIT, interrupt: false, statusWrite: true, fence: false, pageDrain: false, statusData: 2, statusAddr }]);

  it('stops the queue at an invalid descriptor with FSTS.IQE and IQH on it, and resumes after the Linux recovery; no process dies', async () => {
    // An IOTLB invalidation with a reserved bit (qw0 bit 8), then a wait.
    const bad = Buffer.alloc(DESC_SIZE);
    bad.writeBigUInt64LE(0x2_0132n, 0);
    const slots = Buffer.concat([bad, wait(0x1000)]);
    const stopped = await mmio(VTD_REG.IQT, iqRegisterOf(2), true, [{ gpa: vtdIqSlotGpa(0), data: slots }]);
    expect(stopped.status).toBe(0);
    expect(stopped.guestMemory).toHaveLength(0); // the wait never ran
    expect((await read(VTD_REG.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
    expect(iqIndexOf(await read(VTD_REG.IQH))).toBe(0);
    // While IQE is set, a tail write fetches nothing.
    expect((await mmio(VTD_REG.IQT, iqRegisterOf(2), true)).guestMemory).toHaveLength(0);
    // qi_check_fault: copy the wait over the refused slot, clear IQE; the next tail write runs both waits.
    const copy = wait(0x1000);
    await mmio(VTD_REG.FSTS, FSTS.IQE, true, [{ gpa: vtdIqSlotGpa(0), data: copy }]);
    expect((await read(VTD_REG.FSTS)) & FSTS.IQE).toBe(0);
    const resumed = await mmio(VTD_REG.IQT, iqRegisterOf(2), true);
    expect(resumed.status).toBe(0);
    expect(resumed.guestMemory.map((w) => [Number(w.gpa), w.data.readUInt32LE(0)])).toEqual([[0x1000, 2], [0x1000, 2]]);
    expect(ram.read32(0x1000)).toBe(2);
    expect(iqIndexOf(await read(VTD_REG.IQH))).toBe(2);
    // Nothing reached VFIO, and every process of the tree is still there.
    expect((await vfio.stats()).counters['maps']).toBe(0);
    expect(processesWithMarker(fx.marker)).toHaveLength(5);
  });
});
