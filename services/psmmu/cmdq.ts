import { CMD_SIZE, Opcode, decodeCommand, tlbiRangePages, type DecodedCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import { GERROR_CMDQ_ERR } from '../common/smmu/registers.js';
import type { Iotlb } from './iotlb.js';
import type { Translator } from './translate.js';

export interface ExecResult {
  /** Commands executed, CMD_SYNC excluded. */
  executed: number;
  /** Of those, the ones that could not touch anything behind this SMMU (see PhysicalCmdq.relevant). */
  wasted: number;
  syncs: number;
  /** CONS.ERR when the queue stopped on a command (CERROR_ILL...), else 0. */
  error: number;
}

/**
 * The physical SMMU's main command queue: a ring of 16-byte slots with PROD written by the host
 * driver and CONS advanced as commands complete. An illegal command stops the queue with CONS
 * pointing at it, CONS.ERR set and GERROR.CMDQ_ERR toggled; nothing after it runs until software
 * acknowledges by writing GERRORN.
 */
export class PhysicalCmdq {
  private readonly ring: Buffer;
  prod = 0;
  cons = 0;
  gerror = 0;
  gerrorn = 0;
  /** Commands executed, by opcode (CMD_SYNC included): what the SMMU's metrics report. */
  readonly byOpcode = new Float64Array(256);
  /** The most entries the queue held, right after a PROD write. */
  peak = 0;

  constructor(
    readonly log2: number,
    private readonly iotlb: Iotlb,
    private readonly translator?: Translator,
    /** Whether a command can affect a device behind this SMMU (for the `wasted` count). */
    private readonly relevant?: (cmd: DecodedCommand) => boolean,
  ) {
    Q.assertLog2(log2);
    this.ring = Buffer.alloc(Q.size(log2) * CMD_SIZE);
  }

  get halted(): boolean {
    return ((this.gerror ^ this.gerrorn) & GERROR_CMDQ_ERR) !== 0;
  }

  /** The host driver writes commands at PROD and then PROD itself. Returns false if they do not fit. */
  write(commands: Buffer): boolean {
    const n = commands.length / CMD_SIZE;
    if (n > Q.free(this.prod, this.cons, this.log2)) return false;
    for (let i = 0; i < n; i++) {
      commands.copy(this.ring, Q.index(this.prod, this.log2) * CMD_SIZE, i * CMD_SIZE, (i + 1) * CMD_SIZE);
      this.prod = Q.inc(this.prod, this.log2);
    }
    const used = Q.used(this.prod, this.cons, this.log2);
    if (used > this.peak) this.peak = used;
    return true;
  }

  /** The SMMU consumes from CONS to PROD, stopping at an error. */
  consume(): ExecResult {
    const r: ExecResult = { executed: 0, wasted: 0, syncs: 0, error: 0 };
    if (this.halted) return { ...r, error: Q.consErr(this.cons) };
    while (!Q.isEmpty(this.prod, this.cons, this.log2)) {
      const at = Q.index(this.cons, this.log2) * CMD_SIZE;
      const cmd = decodeCommand(this.ring, at);
      if (cmd.error) {
        this.cons = Q.withConsErr(this.cons, Q.CERROR.ILL);
        this.gerror ^= GERROR_CMDQ_ERR;
        r.error = Q.CERROR.ILL;
        return r;
      }
      this.byOpcode[cmd.opcode] = (this.byOpcode[cmd.opcode] ?? 0) + 1;
      if (cmd.opcode === Opcode.CMD_SYNC) r.syncs += 1;
      else {
        this.execute(cmd);
        r.executed += 1;
        if (this.relevant && !this.relevant(cmd)) r.wasted += 1;
      }
      this.cons = Q.inc(this.cons, this.log2);
    }
    return r;
  }

  /** Software acknowledges the error (GERRORN = GERROR); consumption resumes at CONS. */
  acknowledge(replaceWithSync?: Buffer): void {
    if (replaceWithSync) replaceWithSync.copy(this.ring, Q.index(this.cons, this.log2) * CMD_SIZE);
    this.cons = Q.withConsErr(this.cons, Q.CERROR.NONE);
    this.gerrorn = this.gerror;
  }

  private execute(cmd: DecodedCommand): void {
    const f = cmd.fields;
    const vmid = f.vmid ?? 0;
    switch (cmd.opcode) {
      case Opcode.TLBI_NH_VA:
      case Opcode.TLBI_NH_VAA: {
        const { granule, pages } = tlbiRangePages(f);
        const va = Number(f.va ?? 0n);
        const span = granule === 0 ? 4096 : granule * pages;
        if (cmd.opcode === Opcode.TLBI_NH_VA) this.iotlb.invalidateVa(vmid, f.asid ?? 0, va, span);
        else this.iotlb.invalidateVaAllAsid(vmid, va, span);
        break;
      }
      case Opcode.TLBI_NH_ASID:
        this.iotlb.invalidateAsid(vmid, f.asid ?? 0);
        break;
      case Opcode.TLBI_NH_ALL:
        this.iotlb.invalidateStage1(vmid);
        break;
      case Opcode.TLBI_S12_VMALL:
        this.iotlb.invalidateVmid(vmid);
        break;
      case Opcode.TLBI_S2_IPA: {
        const { granule, pages } = tlbiRangePages(f);
        this.iotlb.invalidateIpa(vmid, Number(f.ipa ?? 0n), granule === 0 ? 4096 : granule * pages);
        break;
      }
      case Opcode.TLBI_NSNH_ALL:
        this.iotlb.invalidateAll();
        break;
      case Opcode.CFGI_STE:
      case Opcode.CFGI_CD:
      case Opcode.CFGI_CD_ALL:
        this.translator?.invalidateConfig(f.sid ?? 0);
        break;
      case Opcode.CFGI_ALL:
        this.translator?.invalidateConfig();
        break;
      default:
        // ATC_INV, PREFETCH_*, PRI_RESP, RESUME: no device ATC or PRI queue is modelled.
        break;
    }
  }
}
