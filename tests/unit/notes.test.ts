import { describe, expect, it } from 'vitest';
import { loadProfile } from '../../services/cost/profile.js';
import { archNotes, notesBlock, runNotes } from '../../services/controller/notes.js';
import { devices } from '../../services/controller/session.js';
import { MODEL } from '../../services/designs/names.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { allDesigns } from '../../services/designs/registry.js';

describe('run notes', () => {
  it('note an arch mismatch for every design whose architecture is not the profile\'s, naming a profile that fits', () => {
    for (const name of ['arm64-kunpeng920', 'power9', 'x86-skylake']) {
      const profile = loadProfile(name);
      for (const d of allDesigns()) {
        const notes = archNotes(d.name, profile);
        if (d.traits.arch === profile.arch) {
          expect(notes, `${d.name} on ${name}`).toEqual([]);
          continue;
        }
        expect(notes, `${d.name} on ${name}`).toHaveLength(1);
        expect(notes[0]?.code).toBe('arch-mismatch');
        expect(notes[0]?.text).toContain(`${d.name} models ${d.traits.arch} hardware but profile ${name} prices ${profile.arch}:`);
        expect(loadProfile((/--profile (\S+)\)$/.exec(notes[0]?.text ?? '') ?? [])[1] ?? 'none').arch).toBe(d.traits.arch);
      }
    }
  });

  it('the sPAPR designs and intel-cm say so on the default profile; the arm64 designs do not', () => {
    const k = loadProfile('arm64-kunpeng920');
    const noted = allDesigns().filter((d) => archNotes(d.name, k).length > 0).map((d) => d.name).sort();
    expect(noted).toEqual(['intel-cm', 'spapr-tce', 'spapr-tce-kvm']);
  });

  it('wrap a long note to the tables\' 120 columns', () => {
    const text = archNotes('spapr-tce-kvm', loadProfile('arm64-phytium-s2500'))[0]?.text ?? '';
    const block = notesBlock([{ model: 'spapr-tce-kvm', notes: [{ code: 'arch-mismatch', text }] }]);
    const lines = block.split('\n').filter((l) => l !== '');
    expect(lines[0]).toBe('notes:');
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(120);
    expect(lines.slice(2).every((l) => l.startsWith('    '))).toBe(true);
    expect(lines.slice(1).map((l) => l.trim()).join(' ')).toBe(`arch-mismatch: ${text}`);
  });

  it('say a gathered note once: in full for the first run that has it, the others by their subject', () => {
    const unsettled = (op: string, bias: number): { code: string; text: string; subject: string } => ({
      code: 'measured.unsettled',
      text: `${op} p50 is ${bias}% above its settled p50; give --warmup 2000 or more`,
      subject: `${op} p50 +${bias}%, --warmup 2000`,
    });
    const block = notesBlock([
      { model: 'host', notes: [unsettled('map', 36)] },
      { model: 'none', notes: [] },
      { model: 'intel-cm', notes: [unsettled('unmap', 16)] },
      { model: 'nested-smmuv3', notes: [unsettled('unmap', 5)] },
    ]);
    expect(block.split('\n').filter((l) => l.includes('measured.unsettled'))).toHaveLength(1);
    expect(block.replace(/\n\s+/g, ' ')).toContain('measured.unsettled (host): map p50 is 36% above its settled p50; give --warmup 2000 or more; the same in 2 more runs: intel-cm unmap p50 +16%, --warmup 2000; nested-smmuv3 unmap p50 +5%, --warmup 2000');
    // A sweep's runs are named by their point.
    const sweep = notesBlock([1, 2].map((k) => ({ model: 'nested-smmuv3', point: { 'topology.psmmus': k }, notes: [unsettled('unmap', 10 * k)] })));
    expect(sweep.replace(/\n\s+/g, ' ')).toContain('measured.unsettled (nested-smmuv3 at topology.psmmus=1): unmap p50 is 10% above its settled p50; give --warmup 2000 or more; the same in 1 more run: nested-smmuv3 at topology.psmmus=2 unmap p50 +20%, --warmup 2000');
    // Past eight runs, the rest are counted.
    const many = notesBlock(Array.from({ length: 12 }, (_, i) => ({ model: `m${i}`, notes: [unsettled('unmap', i + 6)] })));
    expect(many.replace(/\n\s+/g, ' ')).toMatch(/the same in 11 more runs: m1 unmap p50 \+7%.*m8 unmap p50 \+14%, --warmup 2000; and 3 more$/m);
  });

  it('print each distinct note once under the table, and nothing when there is none', () => {
    const note = { code: 'arch-mismatch', text: 'spapr-tce models ppc64 hardware' };
    expect(notesBlock([{ model: 'none', notes: [] }])).toBe('');
    expect(notesBlock([{ model: 'spapr-tce', notes: [note] }, { model: 'spapr-tce', notes: [note] }])).toBe('\nnotes:\n  arch-mismatch: spapr-tce models ppc64 hardware\n');
  });
});

describe('no-effect notes: an option the user set that did nothing in the run', () => {
  const profile = loadProfile('arm64-kunpeng920');
  type Extra = { counters?: Record<string, Record<string, number>>; hostStage2Unmaps?: number };
  const notesOf = (scenario: Parameters<typeof resolveScenario>[0], model: string, extra: Extra = {}): { code: string; text: string }[] => {
    const s = resolveScenario(scenario);
    return runNotes({ scenario: s, model, profile, devices: devices(s), ...extra }).filter((n) => n.code.startsWith('no-effect.'));
  };
  const codes = (scenario: Parameters<typeof resolveScenario>[0], model: string, extra: Extra = {}): string[] => notesOf(scenario, model, extra).map((n) => n.code);
  const vfio = (ioctls: number, commands: number): Extra => ({ counters: { vfio: { hwptInvalidate: ioctls, commands }, 'qemu-0': { ioctls } } });

  it('say nothing of options left at their defaults, whatever the run', () => {
    expect(codes({}, MODEL.nestedSmmuv3, vfio(10, 10))).toEqual([]);
    expect(codes({}, MODEL.spaprTce)).toEqual([]);
    expect(codes({}, MODEL.virtioIommu)).toEqual([]);
  });

  it('vmm.hwptInvalidate=per-batch: when every IOMMU_HWPT_INVALIDATE carried one command, or none ran', () => {
    const set = { vmm: { hwptInvalidate: 'per-batch' } };
    const [note] = notesOf(set, MODEL.nestedSmmuv3, vfio(300, 300));
    expect(note?.code).toBe('no-effect.vmm.hwptInvalidate');
    expect(note?.text).toBe(
      'vmm.hwptInvalidate=per-batch had no effect on this run: every guest batch held one command (300 IOMMU_HWPT_INVALIDATE ioctls for 300 commands), ' +
        'so each batch was one ioctl as per-command makes it. It matters only when the guest\'s invalidations trap to the VMM (a nested design) and a ' +
        'guest batch (the commands of one CMDQ_PROD write) holds more than one command, as a multi-page unmap with smmu.ril=false does.',
    );
    // Batches of several commands: fewer ioctls than commands, the option did something.
    expect(codes(set, MODEL.nestedSmmuv3, vfio(100, 300))).toEqual([]);
    expect(notesOf(set, MODEL.virtioIommu, vfio(0, 0))[0]?.text).toMatch(/^vmm\.hwptInvalidate=per-batch had no effect on this run: no IOMMU_HWPT_INVALIDATE ran\./);
    // Before the run (no counters), nothing is known.
    expect(codes(set, MODEL.nestedSmmuv3)).toEqual([]);
  });

  it('topology.dispatch=lookup: with a single pSMMU, one vSMMU per pSMMU, or a design without vSMMU over pSMMUs', () => {
    const [single] = notesOf({ topology: { dispatch: 'lookup', psmmus: 1 } }, MODEL.nestedSmmuv3);
    expect(single?.code).toBe('no-effect.topology.dispatch');
    expect(single?.text).toMatch(/^topology\.dispatch=lookup had no effect on this run: there is a single pSMMU, so every invalidation goes to it\. It matters only under a nested design with topology\.vsmmu=single when a VM has devices behind more than one pSMMU/);
    expect(notesOf({ topology: { dispatch: 'lookup', psmmus: 2, vsmmu: 'per-psmmu', vmid: 'per-vsmmu' } }, MODEL.nestedSmmuv3)[0]?.text).toContain('each vSMMU fronts one pSMMU (topology.vsmmu=per-psmmu)');
    expect(notesOf({ topology: { dispatch: 'lookup', psmmus: 2, vms: 2 } }, MODEL.nestedSmmuv3)[0]?.text).toContain('no VM has devices behind more than one pSMMU');
    expect(notesOf({ topology: { dispatch: 'lookup' } }, MODEL.virtioIommu)[0]?.text).toContain('virtio-iommu has no vSMMU in front of physical SMMUs');
    // One vSMMU routing to two pSMMUs: lookup decides where each invalidation goes.
    expect(codes({ topology: { dispatch: 'lookup', psmmus: 2, vsmmu: 'single' } }, MODEL.nestedSmmuv3)).toEqual([]);
  });

  it('topology.vcmdqsPerVsmmu under a design without VCMDQs', () => {
    const [note] = notesOf({ topology: { vcmdqsPerVsmmu: 4 } }, MODEL.nestedSmmuv3);
    expect(note).toEqual({
      code: 'no-effect.topology.vcmdqsPerVsmmu',
      text: 'topology.vcmdqsPerVsmmu=4 had no effect on this run: nested-smmuv3 has no VCMDQs. It matters only under a design whose guest invalidations go to hardware queues (VCMDQs).',
    });
    expect(codes({ topology: { vcmdqsPerVsmmu: 4 } }, MODEL.nestedSmmuv3Vcmdq)).toEqual([]);
  });

  it('guest.flushQueue under a DMA mode other than lazy', () => {
    expect(notesOf({ guest: { flushQueue: 'single' } }, MODEL.nestedSmmuv3)[0]?.text).toBe(
      'guest.flushQueue=single had no effect on this run: dma is strict, which has no flush queue. It matters only with dma=lazy.',
    );
    expect(codes({ dma: 'lazy', guest: { flushQueue: 'single' } }, MODEL.nestedSmmuv3)).toEqual([]);
  });

  it('guest.tceHcalls under a design that is not sPAPR, or with one page per map (per-entry and indirect coincide)', () => {
    expect(notesOf({ guest: { tceHcalls: 'per-entry' } }, MODEL.spaprTce)[0]?.text).toContain('every map and unmap covers one page (workload.granulePages 1), so per-entry and indirect make the same one hypercall');
    expect(notesOf({ guest: { tceHcalls: 'per-entry' }, workload: { granulePages: 4 } }, MODEL.nestedSmmuv3)[0]?.text).toContain('nested-smmuv3 makes no TCE hypercalls (it is not an sPAPR design)');
    expect(codes({ guest: { tceHcalls: 'per-entry' }, workload: { granulePages: 4 } }, MODEL.spaprTceKvm)).toEqual([]);
  });

  it('smmu.ril=false when no invalidation covered more than one page, or without an SMMUv3', () => {
    const [note] = notesOf({ smmu: { ril: false } }, MODEL.nestedSmmuv3, { hostStage2Unmaps: 0 });
    expect(note?.code).toBe('no-effect.smmu.ril');
    expect(note?.text).toMatch(/^smmu\.ril=false had no effect on this run: no invalidation covered more than one page/);
    expect(codes({ smmu: { ril: false }, workload: { granulePages: 8 } }, MODEL.nestedSmmuv3)).toEqual([]);
    // virtio-mem unplugs unmap stage-2 blocks of many pages.
    expect(codes({ smmu: { ril: false } }, MODEL.nestedSmmuv3, { hostStage2Unmaps: 2 })).toEqual([]);
    expect(notesOf({ smmu: { ril: false }, workload: { granulePages: 8 } }, MODEL.spaprTce)[0]?.text).toContain('spapr-tce models ppc64, which has no SMMUv3');
  });

  it('device.nic.pagePool outside packet-stream, or where the driver maps no RX buffer per packet', () => {
    expect(notesOf({ device: { nic: { pagePool: true } } }, MODEL.nestedSmmuv3)[0]?.text).toBe(
      'device.nic.pagePool=true had no effect on this run: workload.kind is dma-map-benchmark, which has no NIC. It matters only with workload.kind packet-stream and dma strict or lazy, where the driver would otherwise map every RX buffer per packet.',
    );
    expect(notesOf({ dma: 'static', device: { nic: { pagePool: true } }, workload: { kind: 'packet-stream' } }, MODEL.nestedSmmuv3)[0]?.text).toContain('dma is static, which maps every buffer once already');
    expect(codes({ dma: 'lazy', device: { nic: { pagePool: true } }, workload: { kind: 'packet-stream' } }, MODEL.nestedSmmuv3)).toEqual([]);
  });

  it('print under the terminal tables like every note', () => {
    const s = resolveScenario({ topology: { dispatch: 'lookup' } });
    const block = notesBlock([{ model: MODEL.nestedSmmuv3, notes: runNotes({ scenario: s, model: MODEL.nestedSmmuv3, profile, devices: devices(s) }) }]);
    expect(block).toContain('\nnotes:\n  no-effect.topology.dispatch: topology.dispatch=lookup had no effect on this run: there is a single pSMMU');
  });
});
