/**
 * The CMDQV beside one physical SMMU, as the host kernel programs it: VINTFs (VINTF0 host-owned,
 * the others one per guest vSMMU with a VMID and SID_MATCH/SID_REPLACE pairs) and the allocation
 * of logical VCMDQs (LVCMDQs) of a VINTF onto the CMDQV's global VCMDQs.
 *
 * This file is the bookkeeping and the rules only (no threads): pool.ts asks it before touching a
 * ring. Every refused request comes back as a Result with a coded VcmdqError (errors.ts); only an
 * impossible CMDQV shape throws, from the constructor.
 *
 * Rules (reference/cmdqv.md, Linux tegra241-cmdqv.c):
 * - A VINTF's LVCMDQs are allocated in ascending index order and freed in descending order.
 * - Each VINTF has num_vcmdqs / num_vintfs logical queues at most (Linux's num_lvcmdqs_per_vintf).
 * - A queue is a power of two of at least 32 bytes (2 commands); here at most 2^19 entries.
 * - VINTF0 is the host's (HYP_OWN=1): its queues take every command with the command's own VMID
 *   and SIDs, so it has no VMID to stamp and no SID pairs.
 */
import { VcmdqError, ok, refuse, type Result } from './errors.js';
import { MAX_LOG2, MIN_LOG2 } from './ring.js';
import { V_CONFIG, V_PAIRS, V_PAIR_BASE, V_VMID, VINTF_EN, VINTF_HYP_OWN, sidMatch, vintfStride } from './vintf.js';

export interface CmdqvConfig {
  /** VINTFs, VINTF0 included (1..64). */
  vintfs: number;
  /** Global VCMDQs (1..128, the hardware maximum). */
  vcmdqs: number;
  /** SID_MATCH/SID_REPLACE pairs per VINTF (default 16, what QEMU exposes). */
  sidPairs?: number;
}

export interface SidPair {
  vsid: number;
  psid: number;
}

export interface VintfInfo {
  index: number;
  hypOwn: boolean;
  /** Assigned to a VM (guest VINTFs) or always (VINTF0). */
  enabled: boolean;
  /** VMID stamped into the guest's TLBIs; undefined for VINTF0 and unassigned VINTFs. */
  vmid: number | undefined;
  /** Global VCMDQ index of each allocated LVCMDQ, by logical index. */
  queues: readonly number[];
  /** Pair slots; undefined where SID_MATCH is not valid. */
  sidPairs: readonly (SidPair | undefined)[];
}

export const MAX_VCMDQS = 128;
export const MAX_VINTFS = 64;
export const MAX_SID_PAIRS = 64;
export const DEFAULT_SID_PAIRS = 16;
const MAX_VSID = 0x7fff_ffff;

interface VintfRecord {
  enabled: boolean;
  vmid: number | undefined;
  queues: number[];
  pairs: (SidPair | undefined)[];
}

function isIndex(n: number, limit: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < limit;
}

export class Cmdqv {
  readonly numVintfs: number;
  readonly numVcmdqs: number;
  readonly numSidPairs: number;
  readonly lvcmdqsPerVintf: number;
  /** Words per VINTF in vintfTable (vintf.ts layout). */
  readonly vintfStride: number;
  /** The VINTF registers the workers read (VMID, SID pairs). */
  readonly vintfTable: SharedArrayBuffer;
  private readonly table: Int32Array;
  private readonly vintfs: VintfRecord[];
  /** Owner of each global VCMDQ, undefined when free. */
  private readonly owners: ({ vintf: number; lidx: number } | undefined)[];

  constructor(config: CmdqvConfig) {
    const sidPairs = config.sidPairs ?? DEFAULT_SID_PAIRS;
    if (!isIndex(config.vcmdqs - 1, MAX_VCMDQS)) throw new VcmdqError('E_CMDQV_CONFIG', `VCMDQ count ${config.vcmdqs} out of range 1..${MAX_VCMDQS}`);
    if (!isIndex(config.vintfs - 1, MAX_VINTFS)) throw new VcmdqError('E_CMDQV_CONFIG', `VINTF count ${config.vintfs} out of range 1..${MAX_VINTFS}`);
    if (!isIndex(sidPairs - 1, MAX_SID_PAIRS)) throw new VcmdqError('E_CMDQV_CONFIG', `SID pair count ${sidPairs} out of range 1..${MAX_SID_PAIRS}`);
    if (config.vintfs > config.vcmdqs) {
      throw new VcmdqError('E_CMDQV_CONFIG', `${config.vintfs} VINTFs cannot share ${config.vcmdqs} VCMDQs (each VINTF needs at least one)`);
    }
    this.numVintfs = config.vintfs;
    this.numVcmdqs = config.vcmdqs;
    this.numSidPairs = sidPairs;
    this.lvcmdqsPerVintf = Math.floor(config.vcmdqs / config.vintfs);
    this.vintfStride = vintfStride(sidPairs);
    this.vintfTable = new SharedArrayBuffer(this.numVintfs * this.vintfStride * 4);
    this.table = new Int32Array(this.vintfTable);
    this.vintfs = [];
    for (let i = 0; i < this.numVintfs; i++) {
      this.vintfs.push({ enabled: i === 0, vmid: undefined, queues: [], pairs: new Array<SidPair | undefined>(sidPairs).fill(undefined) });
      const base = i * this.vintfStride;
      Atomics.store(this.table, base + V_PAIRS, sidPairs);
      Atomics.store(this.table, base + V_CONFIG, i === 0 ? VINTF_EN | VINTF_HYP_OWN : 0);
    }
    this.owners = new Array<{ vintf: number; lidx: number } | undefined>(this.numVcmdqs).fill(undefined);
  }

  /** Int32 index of a VINTF's first word in vintfTable. */
  vintfBase(vintf: number): number {
    return vintf * this.vintfStride;
  }

  vintf(index: number): VintfInfo | undefined {
    const v = this.vintfs[index];
    if (!v) return undefined;
    return { index, hypOwn: index === 0, enabled: v.enabled, vmid: v.vmid, queues: [...v.queues], sidPairs: v.pairs.map((p) => (p ? { ...p } : undefined)) };
  }

  /** Which VINTF and logical index a global VCMDQ is allocated to. */
  queueOwner(queue: number): { vintf: number; lidx: number } | undefined {
    const o = this.owners[queue];
    return o ? { ...o } : undefined;
  }

  private guestVintf(vintf: number): Result<VintfRecord> {
    const v = this.vintfs[vintf];
    if (!v) return refuse('E_VINTF_INDEX', `VINTF ${vintf} does not exist (the CMDQV has ${this.numVintfs})`);
    if (vintf === 0) return refuse('E_VINTF_HOST', 'VINTF0 is host-owned (HYP_OWN=1) and cannot be given to a VM');
    return ok(v);
  }

  /** Gives a guest VINTF to a VM: its VMID is stamped into every TLBI its queues carry. */
  assignVintf(vintf: number, vmid: number): Result<void> {
    const r = this.guestVintf(vintf);
    if (!r.ok) return r;
    const v = r.value;
    if (v.enabled) return refuse('E_VINTF_STATE', `VINTF ${vintf} is already assigned (VMID ${v.vmid ?? '?'}); release it first`);
    if (!isIndex(vmid, 0x10000)) return refuse('E_VINTF_VMID', `VMID ${vmid} out of range 0..65535`);
    const other = this.vintfs.findIndex((o, i) => i !== 0 && o.enabled && o.vmid === vmid);
    if (other >= 0) return refuse('E_VINTF_VMID', `VMID ${vmid} is already VINTF ${other}'s`);
    v.enabled = true;
    v.vmid = vmid;
    const base = this.vintfBase(vintf);
    Atomics.store(this.table, base + V_VMID, vmid);
    Atomics.store(this.table, base + V_CONFIG, VINTF_EN);
    return ok(undefined);
  }

  /** Takes a guest VINTF back from its VM; its queues must be freed first. Clears its SID pairs. */
  releaseVintf(vintf: number): Result<void> {
    const r = this.guestVintf(vintf);
    if (!r.ok) return r;
    const v = r.value;
    if (!v.enabled) return refuse('E_VINTF_STATE', `VINTF ${vintf} is not assigned`);
    if (v.queues.length > 0) return refuse('E_VINTF_STATE', `VINTF ${vintf} still has ${v.queues.length} VCMDQ(s) allocated`);
    for (let slot = 0; slot < this.numSidPairs; slot++) this.writePair(vintf, slot, undefined);
    v.enabled = false;
    v.vmid = undefined;
    const base = this.vintfBase(vintf);
    Atomics.store(this.table, base + V_CONFIG, 0);
    Atomics.store(this.table, base + V_VMID, 0);
    return ok(undefined);
  }

  private writePair(vintf: number, slot: number, pair: SidPair | undefined): void {
    const v = this.vintfs[vintf];
    if (v) v.pairs[slot] = pair;
    const w = this.vintfBase(vintf) + V_PAIR_BASE + 2 * slot;
    if (pair) {
      // REPLACE before MATCH: a worker that sees the valid MATCH also sees its pSID.
      Atomics.store(this.table, w + 1, pair.psid | 0);
      Atomics.store(this.table, w, sidMatch(pair.vsid) | 0);
    } else {
      Atomics.store(this.table, w, 0);
      Atomics.store(this.table, w + 1, 0);
    }
  }

  /** Programs pair `slot` of a guest VINTF: SID_MATCH = (vsid << 1) | 1, SID_REPLACE = psid. */
  setSidPair(vintf: number, slot: number, vsid: number, psid: number): Result<void> {
    const r = this.guestVintf(vintf);
    if (!r.ok) return r;
    const v = r.value;
    if (!v.enabled) return refuse('E_VINTF_STATE', `VINTF ${vintf} is not assigned to a VM`);
    if (!isIndex(slot, this.numSidPairs)) return refuse('E_SID_PAIR', `pair slot ${slot} out of range 0..${this.numSidPairs - 1}`);
    if (!isIndex(vsid, MAX_VSID + 1)) return refuse('E_SID_PAIR', `vSID ${vsid} out of range 0..${MAX_VSID}`);
    if (!isIndex(psid, 0x1_0000_0000)) return refuse('E_SID_PAIR', `pSID ${psid} out of range 0..4294967295`);
    const dup = v.pairs.findIndex((p, i) => i !== slot && p?.vsid === vsid);
    if (dup >= 0) return refuse('E_SID_PAIR', `vSID ${vsid} is already matched by pair ${dup} of VINTF ${vintf}`);
    for (let i = 1; i < this.numVintfs; i++) {
      if (i === vintf) continue;
      if (this.vintfs[i]?.pairs.some((p) => p?.psid === psid)) return refuse('E_SID_PAIR', `pSID ${psid} already belongs to VINTF ${i}`);
    }
    this.writePair(vintf, slot, { vsid, psid });
    return ok(undefined);
  }

  clearSidPair(vintf: number, slot: number): Result<void> {
    const r = this.guestVintf(vintf);
    if (!r.ok) return r;
    if (!isIndex(slot, this.numSidPairs)) return refuse('E_SID_PAIR', `pair slot ${slot} out of range 0..${this.numSidPairs - 1}`);
    this.writePair(vintf, slot, undefined);
    return ok(undefined);
  }

  /** The pSID a guest VINTF's pairs give a vSID, or undefined (the command would be refused). */
  translateSid(vintf: number, vsid: number): number | undefined {
    return this.vintfs[vintf]?.pairs.find((p) => p?.vsid === vsid)?.psid;
  }

  /**
   * Checks an allocation without doing it. `queue`: the global VCMDQ the host maps it onto (its
   * CMDQ_ALLOC register); without it, the lowest free one.
   */
  checkAllocate(vintf: number, lidx: number, log2Entries: number, queue?: number): Result<void> {
    const v = this.vintfs[vintf];
    if (!v) return refuse('E_VINTF_INDEX', `VINTF ${vintf} does not exist (the CMDQV has ${this.numVintfs})`);
    if (!v.enabled) return refuse('E_VINTF_STATE', `VINTF ${vintf} is not assigned to a VM`);
    if (!Number.isInteger(log2Entries) || log2Entries < MIN_LOG2 || log2Entries > MAX_LOG2) {
      return refuse('E_LVCMDQ_SIZE', `queue of 2^${log2Entries} entries (${Number.isFinite(log2Entries) ? 16 * 2 ** log2Entries : '?'} bytes) is not a power of two of 32 bytes..8 MiB`);
    }
    if (!isIndex(lidx, this.lvcmdqsPerVintf)) {
      return refuse('E_VCMDQ_EXHAUSTED', `logical VCMDQ ${lidx} out of range: a VINTF has ${this.lvcmdqsPerVintf} (0..${this.lvcmdqsPerVintf - 1})`);
    }
    if (lidx !== v.queues.length) {
      return refuse(
        'E_LVCMDQ_ORDER',
        lidx < v.queues.length
          ? `logical VCMDQ ${lidx} of VINTF ${vintf} is already allocated`
          : `logical VCMDQ ${lidx} of VINTF ${vintf} allocated out of order: the next one must be ${v.queues.length}`,
      );
    }
    if (queue !== undefined) {
      if (!isIndex(queue, this.numVcmdqs)) return refuse('E_VCMDQ_EXHAUSTED', `global VCMDQ ${queue} does not exist (the CMDQV has ${this.numVcmdqs})`);
      const owner = this.owners[queue];
      if (owner) return refuse('E_VCMDQ_BUSY', `global VCMDQ ${queue} is already VINTF ${owner.vintf}'s logical VCMDQ ${owner.lidx}`);
      return ok(undefined);
    }
    if (this.owners.indexOf(undefined) < 0) return refuse('E_VCMDQ_EXHAUSTED', `all ${this.numVcmdqs} VCMDQs are allocated`);
    return ok(undefined);
  }

  /** Maps the VINTF's next logical VCMDQ onto global VCMDQ `queue` (default: the lowest free one). */
  allocate(vintf: number, lidx: number, log2Entries: number, queue?: number): Result<{ queue: number }> {
    const r = this.checkAllocate(vintf, lidx, log2Entries, queue);
    if (!r.ok) return r;
    queue ??= this.owners.indexOf(undefined);
    this.owners[queue] = { vintf, lidx };
    this.vintfs[vintf]?.queues.push(queue);
    return ok({ queue });
  }

  /** Checks a free without doing it; gives the global VCMDQ it would release. */
  checkFree(vintf: number, lidx: number): Result<{ queue: number }> {
    const v = this.vintfs[vintf];
    if (!v) return refuse('E_VINTF_INDEX', `VINTF ${vintf} does not exist (the CMDQV has ${this.numVintfs})`);
    const queue = v.queues[lidx];
    if (!Number.isInteger(lidx) || queue === undefined) return refuse('E_LVCMDQ_ORDER', `logical VCMDQ ${lidx} of VINTF ${vintf} is not allocated`);
    if (lidx !== v.queues.length - 1) {
      return refuse('E_LVCMDQ_ORDER', `logical VCMDQ ${lidx} of VINTF ${vintf} freed out of order: free ${v.queues.length - 1} first (descending order)`);
    }
    return ok({ queue });
  }

  free(vintf: number, lidx: number): Result<{ queue: number }> {
    const r = this.checkFree(vintf, lidx);
    if (!r.ok) return r;
    this.vintfs[vintf]?.queues.pop();
    this.owners[r.value.queue] = undefined;
    return r;
  }
}
