import { ALL_SIDS, Scope, scopeHasSid, type CommandScope } from '../formats/smmu/semantics.js';

/**
 * A stream's context as the SMMU reads it: its VMID and the ASIDs of its CD table (SubstreamID 0's
 * first; none for a stage-2 stream).
 */
export interface StreamContext {
  vmid: number;
  asids: readonly number[];
}

/**
 * Whether a command's scope covers anything behind this SMMU, whose streams are `sids`: one of its
 * StreamIDs for a StreamID-scoped command, the VMID (and ASID) of one of its streams' contexts for a
 * VMID-scoped one. A command whose scope names neither (TLBI_NSNH_ALL, CFGI_ALL, the EL2 TLBIs) may
 * touch anything. What a broadcast delivers here that is not relevant counts as wasted.
 */
export function scopeConcerns(
  scope: Readonly<CommandScope>,
  sids: readonly number[],
  contextOf: (sid: number) => StreamContext | undefined,
): boolean {
  if (scope.sids > 0) return scope.sids >= ALL_SIDS || sids.some((sid) => scopeHasSid(scope, sid));
  if ((scope.flags & Scope.VMID) === 0) return true;
  const byAsid = (scope.flags & Scope.ASID) !== 0;
  return sids.some((sid) => {
    const c = contextOf(sid);
    return c !== undefined && c.vmid === scope.vmid && (!byAsid || c.asids.includes(scope.asid));
  });
}
