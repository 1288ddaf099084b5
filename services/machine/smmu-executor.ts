/**
 * The one SMMUv3 command executor: what a command does to the SMMU's caches, driven by the opcode
 * table (semantics.ts). The pSMMU's main CMDQ (psmmu/cmdq.ts) and every VCMDQ worker
 * (worker-pool/engine.ts) run each command through executeCommand, so the same command has the same
 * effect whichever queue it arrived on. The queue around it (CONS, errors, CMD_SYNC completion) stays
 * with each queue; the caches are reached through the small interfaces below, so this file holds no
 * state and imports nothing outside services/formats/smmu.
 *
 * Works on the command's four 32-bit dwords and writes its scope into a CommandScope the caller
 * reuses: nothing is allocated per command, so the VCMDQ hot path can call it.
 */
import { illegalCommand } from '../formats/smmu/commands.js';
import { CERROR } from '../formats/smmu/queue.js';
import {
  ACCEPT_BY_OPCODE, Accept, CONFIG_DROP_BY_OPCODE, ConfigDrop, Scope, TLB_DROP_BY_OPCODE, TlbDrop, decodeScope, type CommandScope,
} from '../formats/smmu/semantics.js';

/** The IOTLB as the executor drops entries from it (worker-pool/iotlb.ts). Each returns the entries dropped. */
export interface TlbInvalidator {
  /** Stage-1/nested entries of pages [firstPage, firstPage + pages) of one ASID, or of every ASID when asid < 0. */
  invalidateVaPages(vmid: number, asid: number, firstPage: number, pages: number): number;
  invalidateAsid(vmid: number, asid: number): number;
  invalidateStage1(vmid: number): number;
  invalidateVmid(vmid: number): number;
  /** Stage-2-only entries of IPA pages [firstPage, firstPage + pages). */
  invalidateIpaPages(vmid: number, firstPage: number, pages: number): number;
  invalidateAll(): number;
}

/** The configuration cache (STE and CD per StreamID) as the executor drops entries from it. */
export interface ConfigInvalidator {
  /** Drops the entries of StreamIDs [firstSid, firstSid + count); count may be ALL_SIDS. */
  invalidateConfig(firstSid: number, count: number): void;
}

/** A configuration cache that is not there (a CMDQ tested without a translator). */
export const NO_CONFIG_CACHE: ConfigInvalidator = { invalidateConfig: () => undefined };

/**
 * The devices' ATCs (ATS) as an ATC_INV reaches them: the entries of one StreamID in a range of 4
 * KiB pages (2^52 pages: every address). Each queue hands them to the device through the log of
 * worker-pool/atc-invalidations.ts.
 */
export interface AtcInvalidator {
  invalidateAtc(sid: number, firstPage: number, pages: number): void;
}

/** No device with an ATC behind the queue. */
export const NO_ATC: AtcInvalidator = { invalidateAtc: () => undefined };

/**
 * Who owns the queue a command arrived on. The host (the main CMDQ, VINTF0's VCMDQs) runs commands
 * with their own IDs; a guest (a HYP_OWN=0 VCMDQ) gets the allow-list, its VINTF's VMID in every
 * VMID-scoped command and its vSIDs replaced by pSIDs.
 */
export interface QueueOwner {
  readonly guest: boolean;
  /** The VMID stamped into a guest's VMID-scoped commands. */
  readonly vmid: number;
  /** The pSID a guest's vSID maps to (SID_MATCH/SID_REPLACE), or -1 when none does. */
  replaceSid(vsid: number): number;
}

export const HOST_OWNER: QueueOwner = { guest: false, vmid: 0, replaceSid: (sid) => sid };

/**
 * Executes the command in dwords d0..d3 (w0[31:0], w0[63:32], w1[31:0], w1[63:32]). Returns the
 * IOTLB entries it dropped (>= 0), or -CERROR when the queue must stop on it: an illegal command, a
 * command a guest queue does not take, a guest vSID with no pSID. CMD_SYNC returns 0. `scope` gets the
 * command's scope with the owner's substitutions (what it covered on this SMMU).
 */
export function executeCommand(
  d0: number, d1: number, d2: number, d3: number, owner: QueueOwner, tlb: TlbInvalidator, config: ConfigInvalidator, scope: CommandScope, atc: AtcInvalidator = NO_ATC,
): number {
  if (illegalCommand(d0)) return -CERROR.ILL;
  if (owner.guest && (ACCEPT_BY_OPCODE[d0 & 0xff]! & Accept.GUEST_VCMDQ) === 0) return -CERROR.ILL;
  decodeScope(d0, d1, d2, d3, scope);
  if (owner.guest) {
    if ((scope.flags & Scope.VMID) !== 0) scope.vmid = owner.vmid;
    if ((scope.flags & Scope.SID) !== 0) {
      const psid = owner.replaceSid(scope.sid);
      if (psid < 0) return -CERROR.ILL;
      scope.sid = psid;
    }
  }
  return dropCached(scope, tlb, config, atc);
}

/** Drops what a decoded command's scope covers, as its opcode's table row says. */
export function dropCached(scope: Readonly<CommandScope>, tlb: TlbInvalidator, config: ConfigInvalidator, atc: AtcInvalidator = NO_ATC): number {
  const op = scope.opcode;
  let n = 0;
  switch (TLB_DROP_BY_OPCODE[op]) {
    case TlbDrop.VA:
      n = tlb.invalidateVaPages(scope.vmid, scope.asid, scope.firstPage, scope.pages);
      break;
    case TlbDrop.VAA:
      n = tlb.invalidateVaPages(scope.vmid, -1, scope.firstPage, scope.pages);
      break;
    case TlbDrop.ASID:
      n = tlb.invalidateAsid(scope.vmid, scope.asid);
      break;
    case TlbDrop.STAGE1:
      n = tlb.invalidateStage1(scope.vmid);
      break;
    case TlbDrop.IPA:
      n = tlb.invalidateIpaPages(scope.vmid, scope.firstPage, scope.pages);
      break;
    case TlbDrop.VMID:
      n = tlb.invalidateVmid(scope.vmid);
      break;
    case TlbDrop.ALL:
      n = tlb.invalidateAll();
      break;
    default:
      break;
  }
  if (CONFIG_DROP_BY_OPCODE[op] !== ConfigDrop.NONE) config.invalidateConfig(scope.sid, scope.sids);
  // ATC_INV: the SMMU sends the device an ATS Invalidate Request for the range.
  if ((ACCEPT_BY_OPCODE[op]! & Accept.ATC) !== 0) atc.invalidateAtc(scope.sid, scope.firstPage, scope.pages);
  return n;
}
