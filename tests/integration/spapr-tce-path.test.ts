import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE } from '../../services/machine/board.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import {
  H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, encodeHcall, encodeTceList, liobnOf, tceListGpa, tceOf, type Hcall,
} from '../../services/formats/spapr-tce.js';
import type { TransitionCounts } from '../../services/runtime/topology.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import type { RunResult } from '../../services/controller/results.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const OPS = 10;
const scenario = resolveScenario({ name: 'spapr', device: { ringBuffers: 0 }, workload: { ops: OPS } });
const fx = useProcessTree(scenario);

const t = (c: Partial<TransitionCounts>): TransitionCounts => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });
const op = (run: RunResult, name: string) => run.ops.find((o) => o.op === name);
/** Mean modeled ns of a map, by configuration and model, from the runs below. */
const mapNs = new Map<string, Record<string, number>>();

describe('sPAPR TCE paths through real processes', () => {
  for (const model of ['spapr-tce', 'spapr-tce-kvm'] as const) {
    for (const granulePages of [1, 8]) {
      for (const tceHcalls of ['indirect', 'per-entry'] as const) {
        it(`${model}, ${granulePages} page(s), ${tceHcalls}: transitions per map and per unmap`, async () => {
          const s = resolveScenario({ name: 'spapr', device: { ringBuffers: 0 }, guest: { tceHcalls }, workload: { ops: OPS, granulePages } });
          await withSession(fx, async (session) => {
            const run = await session.run(s, model, testProfile);
            const map = op(run, 'map');
            const unmap = op(run, 'unmap');
            const key = `${granulePages}/${tceHcalls}`;
            mapNs.set(key, { ...mapNs.get(key), [model]: map?.modeledNs.mean ?? 0 });
            expect([map?.count, map?.failed, unmap?.count, unmap?.failed]).toEqual([OPS, 0, OPS, 0]);
            // One hypercall per map (a single page, or one list) unless the guest has no multi-TCE;
            // one H_STUFF_TCE per unmap, or one H_PUT_TCE(0) per page.
            const mapCalls = tceHcalls === 'indirect' ? 1 : granulePages;
            const unmapCalls = tceHcalls === 'indirect' ? 1 : granulePages;
            if (model === 'spapr-tce-kvm') {
              // In the kernel, in virtual mode: one TCE cache kill per TCE (kvmppc_tce_iommu_map /
              // unmap end with iommu_tce_kill), whatever the hypercall; no user exit, no ioctl.
              expect(map?.transitions).toEqual(t({ exit: mapCalls, hw: granulePages }));
              expect(unmap?.transitions).toEqual(t({ exit: unmapCalls, hw: granulePages }));
              expect(run.hops.some((h) => h.from.startsWith('qemu') || h.to.startsWith('qemu'))).toBe(false);
              expect(run.counters['qemu-0']?.['exits']).toBe(0);
              expect(run.counters['kvm']).toMatchObject({ userExits: 0, punts: 0, tceHcalls: OPS * (mapCalls + unmapCalls) });
            } else {
              // Every hypercall exits to QEMU, which makes one VFIO ioctl per page changed, each
              // killing the TCE cache once (tce_iommu_build_v2 / tce_iommu_clear).
              expect(map?.transitions).toEqual(t({ exit: mapCalls, user: mapCalls, ioctl: granulePages, hw: granulePages }));
              expect(unmap?.transitions).toEqual(t({ exit: unmapCalls, user: unmapCalls, ioctl: granulePages, hw: granulePages }));
              expect(run.counters['qemu-0']).toMatchObject({ tceHcalls: OPS * (mapCalls + unmapCalls), vfioMaps: OPS * granulePages, vfioUnmaps: OPS * granulePages, vfioErrors: 0 });
            }
            expect(run.counters['vfio']).toMatchObject({ pagesMapped: OPS * granulePages, pagesUnmapped: OPS * granulePages, mapErrors: 0 });
            expect(run.invalidations.guestCommands).toBe(OPS * (mapCalls + unmapCalls));
          });
        });
      }
    }
  }

  it('has no flush queue: a lazy unmap still clears its TCEs at once', async () => {
    const lazy = resolveScenario({ name: 'spapr', dma: 'lazy', device: { ringBuffers: 0 }, workload: { ops: OPS } });
    await withSession(fx, async (session) => {
      const run = await session.run(lazy, 'spapr-tce-kvm', testProfile);
      expect(run.dma.mode).toBe('lazy');
      expect(op(run, 'unmap')?.transitions).toEqual(t({ exit: 1, hw: 1 }));
      expect(op(run, 'flush')).toBeUndefined();
    });
  });

  it('gives identical modeled results run after run with several vCPUs', async () => {
    const s = resolveScenario({ name: 'spapr', workload: { ops: 30, threads: 3, granulePages: 8 } });
    await withSession(fx, async (session) => {
      const a = await session.run(s, 'spapr-tce', testProfile);
      const b = await session.run(s, 'spapr-tce', testProfile);
      expect(b.ops.map((o) => [o.op, o.count, o.modeledNs])).toEqual(a.ops.map((o) => [o.op, o.count, o.modeledNs]));
      expect(b.modeledElapsedNs).toBe(a.modeledElapsedNs);
    });
  });

  it('makes the in-kernel path the cheaper one in modeled time (no user exit, no per-page ioctl)', () => {
    expect(mapNs.size).toBe(4);
    for (const [key, ns] of mapNs) expect(ns['spapr-tce-kvm'], key).toBeLessThan(ns['spapr-tce'] ?? 0);
  });
});

describe('KVM\'s in-kernel TCE handlers, driven by hand', () => {
  let kvm: LinkClient;
  let qemu: Control;
  let vfio: Control;
  const names = new Map<number, string>();
  const liobn = BigInt(liobnOf(0));
  const list = tceListGpa(0);
  const ioba = 0x40_0000;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'spapr-tce-kvm');
    for (const [name, e] of eps) names.set(e.id, name);
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
    qemu = new Control('qemu-0', eps.get('qemu-0')?.address ?? '', fx.security);
    vfio = new Control('vfio', eps.get('vfio')?.address ?? '', fx.security);
  });

  afterAll(() => {
    kvm?.close();
    qemu?.close();
    vfio?.close();
  });

  function hcall(h: Hcall, tces?: bigint[]): Promise<Envelope__Output> {
    const guestMemory = tces ? [{ gpa: list, data: encodeTceList(tces) }] : [];
    return kvm.request({ kind: 'HCALL', opId: 1, payload: encodeHcall(h), guestMemory, modeledNs: 0 });
  }

  function path(reply: Envelope__Output): string[] {
    return reply.hops.map((h) => `${names.get(h.from)}>${names.get(h.to)}`);
  }

  const counter = async (c: Control, key: string): Promise<number> => (await c.stats()).counters[key] ?? 0;

  it('punts a list it cannot finish (a TCE with stray address bits) to QEMU, which maps every page by ioctl', async () => {
    const tces = [tceOf(0x1_0000_0000, true, true), tceOf(0x1_0000_1000, true, true), tceOf(0x1_0000_2000, true, true) | 0x10n];
    const maps = await counter(qemu, 'vfioMaps');
    const reply = await hcall({ nr: H_PUT_TCE_INDIRECT, args: [liobn, BigInt(ioba), BigInt(list), 3n] }, tces);
    expect(reply.status).toBe(H_RC.SUCCESS);
    const p = path(reply);
    expect(p.slice(0, 2)).toEqual(['guest-0>kvm', 'kvm>qemu-0']);
    expect(p.filter((x) => x === 'qemu-0>vfio')).toHaveLength(3);
    expect(p.filter((x) => x === 'vfio>psmmu-0')).toHaveLength(3);
    expect(p.slice(-2)).toEqual(['qemu-0>kvm', 'kvm>guest-0']);
    expect(await counter(qemu, 'vfioMaps')).toBe(maps + 3);
  });

  it('then clears the same pages in the kernel, on the table QEMU wrote: exit -> one kill per TCE, no QEMU', async () => {
    const unmapped = await counter(vfio, 'pagesUnmapped');
    const reply = await hcall({ nr: H_STUFF_TCE, args: [liobn, BigInt(ioba), 0n, 3n] });
    expect(reply.status).toBe(H_RC.SUCCESS);
    const kill = ['vfio>psmmu-0', 'psmmu-0>vfio'];
    expect(path(reply)).toEqual(['guest-0>kvm', 'kvm>vfio', ...kill, ...kill, ...kill, 'vfio>kvm', 'kvm>guest-0']);
    expect(await counter(vfio, 'pagesUnmapped')).toBe(unmapped + 3);
  });

  it('punts a TCE outside preregistered RAM; QEMU takes it but has nothing to map', async () => {
    const notRam = await counter(qemu, 'notRam');
    const reply = await hcall({ nr: H_PUT_TCE, args: [liobn, BigInt(ioba), tceOf(GUEST_RAM_SIZE, true, true)] });
    expect(reply.status).toBe(H_RC.SUCCESS);
    expect(path(reply)).toEqual(['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>kvm', 'kvm>guest-0']);
    expect(await counter(qemu, 'notRam')).toBe(notRam + 1);
  });

  it('refuses a misaligned IOBA in the kernel with H_PARAMETER', async () => {
    const reply = await hcall({ nr: H_PUT_TCE, args: [liobn, BigInt(ioba + 8), tceOf(0x1_0000_0000, true, true)] });
    expect(reply.status).toBe(H_RC.PARAMETER);
    expect(path(reply)).toEqual(['guest-0>kvm', 'kvm>guest-0']);
  });

  it('punts a liobn it has no table for; QEMU does not know it either (H_PARAMETER)', async () => {
    const reply = await hcall({ nr: H_PUT_TCE, args: [liobn + 1n, BigInt(ioba), tceOf(0x1_0000_0000, true, true)] });
    expect(reply.status).toBe(H_RC.PARAMETER);
    expect(path(reply)).toEqual(['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>kvm', 'kvm>guest-0']);
  });
});
