import { HWPT_INVALIDATE_SIZE, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, decodeHwptInvalidate, encodeHwptInvalidate } from '../../formats/iommufd.js';
import { CMD_SIZE } from '../../formats/smmu/commands.js';
import { Scope, type CommandScope } from '../../formats/smmu/semantics.js';

/** What a vSMMU in front of several vIOMMUs routes guest commands by. */
export interface RouteTables<V> {
  /** The vIOMMU holding a vSID. */
  bySid(vsid: number): V | undefined;
  /** With dispatch lookup only: the vIOMMUs whose devices use an ASID, undefined when the table does not know it. */
  byAsid?: ((asid: number) => ReadonlySet<V> | undefined) | undefined;
}

/**
 * Where one guest command goes among the vIOMMUs behind a vSMMU (`all`), by the scope the opcode
 * table gives it: a StreamID-scoped command to the vIOMMU of its vSID (to all when none holds it:
 * the kernel refuses it with EIO there); with dispatch lookup, an ASID-scoped TLBI to the vIOMMUs
 * whose devices use that ASID (to all when the table does not know it); anything else, and
 * everything under broadcast, to all. The guest's VMID routes nothing: each vIOMMU's kernel
 * conversion replaces it with its own.
 */
export function routeCommand<V>(scope: Readonly<CommandScope>, all: readonly V[], tables: RouteTables<V>): readonly V[] {
  if (all.length <= 1) return all;
  if ((scope.flags & Scope.SID) !== 0) {
    const v = tables.bySid(scope.sid);
    return v !== undefined && all.includes(v) ? [v] : all;
  }
  if ((scope.flags & Scope.ASID) !== 0 && tables.byAsid) {
    const hit = tables.byAsid(scope.asid);
    return hit ? all.filter((v) => hit.has(v)) : all;
  }
  return all;
}

/**
 * The commands of one batch each target gets (`route` gives a command's targets), as indexes into
 * `commands` in guest order, the targets in the order of `all`; targets that get none are left out.
 */
export function planRoutes<V>(commands: readonly Buffer[], all: readonly V[], route: (bytes: Buffer) => readonly V[]): [V, number[]][] {
  const plan = new Map<V, number[]>();
  commands.forEach((bytes, i) => {
    for (const v of route(bytes)) {
      const list = plan.get(v) ?? [];
      list.push(i);
      plan.set(v, list);
    }
  });
  return all.flatMap((v) => {
    const mine = plan.get(v);
    return mine ? [[v, mine] as [V, number[]]] : [];
  });
}

/**
 * Sends each planned target's commands (planRoutes) as one IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3
 * array of a struct iommu_hwpt_invalidate whose data_uptr is `dataUptr`, target after target,
 * through `call` (the VMM's ioctl, or KVM's in-kernel call). Gives the index in `commands` of the
 * first command a call failed on (the kernel's entry_num; past the array or absent: its last
 * entry), or -1 when every call succeeded.
 */
export async function invalidatePlanned(
  plan: readonly [{ id: number }, number[]][],
  commands: readonly Buffer[],
  dataUptr: number,
  call: (payload: Buffer) => Promise<{ status: number; payload: Buffer }>,
): Promise<number> {
  let failed = -1;
  for (const [v, mine] of plan) {
    const payload = encodeHwptInvalidate(
      { size: HWPT_INVALIDATE_SIZE, hwptId: v.id, dataUptr, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum: mine.length, reserved: 0 },
      Buffer.concat(mine.map((i) => commands[i] as Buffer)),
    );
    const reply = await call(payload);
    if (reply.status === 0) continue;
    const at = Math.min(decodeHwptInvalidate(reply.payload)?.head.entryNum ?? mine.length - 1, mine.length - 1);
    const index = mine[at] ?? commands.length - 1;
    failed = failed < 0 ? index : Math.min(failed, index);
  }
  return failed;
}
