import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';

/** The VMID the host allocated for a VM; a topology without one is a controller bug, not a default. */
export function vmidOf(t: Topology__Output, vm: number): number {
  const vmid = t.vmids[vm];
  if (vmid === undefined) throw new Error(`topology has no VMID for VM ${vm}`);
  return vmid;
}

/**
 * The VMID a VM's vIOMMU on one physical SMMU carries. per-s2-parent: the VM's one VMID, shared by
 * all its vSMMUs; per-vsmmu: one per vSMMU instance (with one vSMMU per pSMMU, one per vIOMMU;
 * with a single vSMMU that is the VM's one again). The STEs of the VM's devices on that SMMU are
 * tagged with it, and the kernel stamps it into the guest's TLBIs, so either way a VM can never
 * name another VM's entries.
 */
export function viommuVmid(t: Topology__Output, vm: number, psmmu: number): number {
  if (t.vmidPolicy !== 'per-vsmmu' || t.vsmmu !== 'per-psmmu') return vmidOf(t, vm);
  const pairs = [...new Set(t.devices.map((d) => `${d.vm}:${d.psmmu}`))]
    .map((k) => k.split(':').map(Number) as [number, number])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const i = pairs.findIndex(([v, p]) => v === vm && p === psmmu);
  if (i < 0) throw new Error(`VM ${vm} has no device behind pSMMU ${psmmu}`);
  return i + 1;
}

/** A vIOMMU object: one per (VM, physical SMMU), wrapping that VM's stage-2 parent there. */
export interface ViommuObject {
  id: number;
  vm: number;
  psmmu: number;
  vmid: number;
  /** The nest-parent HWPT (stage 2) it wraps. */
  hwptId: number;
}

/** A vDEVICE: a physical device bound to a vIOMMU under the virtual StreamID the guest uses. */
export interface VdeviceObject {
  id: number;
  viommuId: number;
  devId: number;
  vsid: number;
  psid: number;
}

/** A HW_QUEUE: one VCMDQ of a physical SMMU's CMDQV handed to a VM's vSMMU. */
export interface HwQueueObject {
  id: number;
  viommuId: number;
  vm: number;
  psmmu: number;
  /** The guest's vSMMU instance that owns the queue. */
  vsmmu: number;
  /** Logical queue index within the VM's VINTF (allocated in ascending order). */
  index: number;
}

export interface IommufdLayout {
  ioasId: number;
  viommus: ViommuObject[];
  vdevices: VdeviceObject[];
  hwQueues: HwQueueObject[];
}

/** VCMDQs of one CMDQV (Grace); a CMDQV splits them evenly among its VINTFs, VINTF0 the host's. */
export const CMDQV_VCMDQS = 128;
/** SID_MATCH/SID_REPLACE pairs a VINTF can hold: a VM has at most this many devices behind one SMMU. */
export const MAX_SID_PAIRS = 64;

/** Logical VCMDQs each VINTF of a CMDQV shared by `guests` VMs can have (Linux: num_vcmdqs / num_vintfs). */
export function lvcmdqsPerVintf(guests: number): number {
  return Math.floor(CMDQV_VCMDQS / (1 + guests));
}

/** VINTF0 belongs to the host kernel; the VMs with VCMDQs on a CMDQV get VINTF 1.. in VM order. */
export const FIRST_GUEST_VINTF = 1;

/**
 * The CMDQV beside one pSMMU as the host kernel programs it at VM start: a VINTF for each VM that
 * got HW queues there (`vms[i]` owns VINTF 1 + i) and the logical VCMDQs a VINTF may map. The
 * kernel maps logical VCMDQ l of VINTF v onto global VCMDQ v * lvcmdqsPerVintf + l (Linux's
 * tegra241_vintf_init_lvcmdq), so the kernel (vfio) and the hardware (psmmu) agree with no table.
 */
export interface CmdqvPlan {
  vms: number[];
  lvcmdqsPerVintf: number;
}

export function cmdqvPlan(t: Topology__Output, psmmu: number, layout: IommufdLayout): CmdqvPlan {
  const vms = [...new Set(layout.hwQueues.filter((q) => q.psmmu === psmmu).map((q) => q.vm))].sort((a, b) => a - b);
  const guests = new Set(layout.viommus.filter((v) => v.psmmu === psmmu).map((v) => v.vm)).size;
  return { vms, lvcmdqsPerVintf: lvcmdqsPerVintf(guests) };
}

/** The VINTF of `vm` on the plan's CMDQV, or undefined when the VM has none there. */
export function vintfOf(plan: CmdqvPlan, vm: number): number | undefined {
  const i = plan.vms.indexOf(vm);
  return i < 0 ? undefined : FIRST_GUEST_VINTF + i;
}

/** The global VCMDQ logical VCMDQ `lidx` of VINTF `vintf` is mapped onto. */
export function globalVcmdq(plan: CmdqvPlan, vintf: number, lidx: number): number {
  return vintf * plan.lvcmdqsPerVintf + lidx;
}

/**
 * The iommufd objects a VMM creates at VM start (IOAS_ALLOC, device bind, HWPT_ALLOC with
 * NEST_PARENT, VIOMMU_ALLOC, VDEVICE_ALLOC), with their IDs as the kernel hands them out in that
 * order. qemu and vfio both derive the table from the topology with this one function; the setup
 * ioctls themselves are not sent over the links.
 */
/**
 * `withHwQueues`: whether the design hands the VM hardware queues (its VCMDQ trait); without, no HW_QUEUE
 * objects exist whatever topology.vcmdqsPerVsmmu says.
 */
export function iommufdLayout(t: Topology__Output, withHwQueues: boolean): IommufdLayout {
  let next = 1;
  const ioasId = next++;
  const devIds = t.devices.map(() => next++);
  const viommus: ViommuObject[] = [];
  const vdevices: VdeviceObject[] = [];
  const pairs = new Map<string, [number, number]>();
  for (const d of t.devices) pairs.set(`${d.vm}:${d.psmmu}`, [d.vm, d.psmmu]);
  for (const [vm, psmmu] of [...pairs.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1])) {
    const hwptId = next++;
    viommus.push({ id: next++, vm, psmmu, vmid: viommuVmid(t, vm, psmmu), hwptId });
  }
  t.devices.forEach((d, i) => {
    const v = viommus.find((x) => x.vm === d.vm && x.psmmu === d.psmmu) as ViommuObject;
    vdevices.push({ id: next++, viommuId: v.id, devId: devIds[i] as number, vsid: d.vsid, psid: d.psid });
  });
  const hwQueues: HwQueueObject[] = [];
  if (withHwQueues) {
    for (const v of viommus) {
      const vsmmu = vsmmuOfViommu(t, v);
      if (vsmmu === undefined) continue;
      // IOMMU_HW_QUEUE_ALLOC fails past what the CMDQV gives a VINTF: those queues stay trapped.
      const guests = new Set(viommus.filter((x) => x.psmmu === v.psmmu).map((x) => x.vm)).size;
      const n = Math.min(t.vcmdqsPerVsmmu, lvcmdqsPerVintf(guests));
      for (let q = 0; q < n; q++) hwQueues.push({ id: next++, viommuId: v.id, vm: v.vm, psmmu: v.psmmu, vsmmu, index: q });
    }
  }
  return { ioasId, viommus, vdevices, hwQueues };
}

/**
 * The vSMMU a vIOMMU backs when it can take VCMDQs: a VCMDQ belongs to one physical SMMU, so a
 * vSMMU gets them only when it fronts exactly one (per-psmmu, or single with one pSMMU).
 */
function vsmmuOfViommu(t: Topology__Output, v: ViommuObject): number | undefined {
  const psmmus = psmmusOfVm(t, v.vm);
  if (t.vsmmu === 'per-psmmu') return psmmus.indexOf(v.psmmu);
  return psmmus.length === 1 ? 0 : undefined;
}

/** The physical SMMUs a VM's devices sit behind, in order: the guest numbers its vSMMUs this way. */
function psmmusOfVm(t: Topology__Output, vm: number): number[] {
  return [...new Set(t.devices.filter((x) => x.vm === vm).map((x) => x.psmmu))].sort((a, b) => a - b);
}

/** The vSMMU instance (as the guest numbers them) a device sits behind. */
export function vsmmuOfDevice(t: Topology__Output, device: number): number {
  const d = t.devices[device];
  if (!d) throw new RangeError(`no device ${device}`);
  if (t.vsmmu !== 'per-psmmu') return 0;
  return psmmusOfVm(t, d.vm).indexOf(d.psmmu);
}
