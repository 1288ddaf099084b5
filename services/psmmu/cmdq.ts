import { CMD_SIZE, Opcode } from '../formats/smmu/commands.js';
import { HOST_OWNER, NO_ATC, NO_CONFIG_CACHE, executeCommand, type AtcInvalidator, type ConfigInvalidator, type TlbInvalidator } from '../machine/smmu-executor.js';
import * as Q from '../formats/smmu/queue.js';
import { GERROR_CMDQ_ERR } from '../formats/smmu/registers.js';
import { CommandScope } from '../formats/smmu/semantics.js';

export interface ExecResult {
  /** Commands executed, CMD_SYNC excluded. */
  executed: number;
  /** Of those, the ones that could not touch anything behind this SMMU (see PhysicalCmdq.relevant). */
  wasted: number;
  syncs: number;
  /**
   * Of those, the CMD_SYNCs that waited for ATC invalidations before them: each completes only when
   * the devices answer (a PCIe round trip).
   */
  atcSyncs: number;
  /** CONS.ERR when the queue stopped on a command (CERROR_ILL...), else 0. */
  error: number;
}

/**
 * The physical SMMU's main command queue: a ring of 16-byte slots with PROD written by the host
 * driver and CONS advanced as commands complete. An illegal command stops the queue with CONS
 * pointing at it, CONS.ERR set and GERROR.CMDQ_ERR toggled; nothing after it runs until software
 * acknowledges by writing GERRORN. Each command runs through the SMMU's one command executor
 * (common/smmu/executor.ts), the same the VCMDQ workers run, as a host-owned queue.
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

  /** The scope of the command being executed (reused). */
  private readonly scope = new CommandScope();
  /** An ATC_INV ran since the last CMD_SYNC: that sync waits for the device's answer. */
  private atcPending = false;

  constructor(
    readonly log2: number,
    private readonly iotlb: TlbInvalidator,
    /** The configuration cache CFGIs drop (the translator). */
    private readonly config: ConfigInvalidator = NO_CONFIG_CACHE,
    /** Whether a command's scope covers anything behind this SMMU (for the `wasted` count). */
    private readonly relevant?: (scope: Readonly<CommandScope>) => boolean,
    /** The ATCs of the devices behind the SMMU (ATS), which ATC_INV reaches. */
    private readonly atc: AtcInvalidator = NO_ATC,
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
    const r: ExecResult = { executed: 0, wasted: 0, syncs: 0, atcSyncs: 0, error: 0 };
    if (this.halted) return { ...r, error: Q.consErr(this.cons) };
    while (!Q.isEmpty(this.prod, this.cons, this.log2)) {
      const at = Q.index(this.cons, this.log2) * CMD_SIZE;
      const ring = this.ring;
      const d0 = ring.readInt32LE(at);
      const done = executeCommand(d0, ring.readInt32LE(at + 4), ring.readInt32LE(at + 8), ring.readInt32LE(at + 12), HOST_OWNER, this.iotlb, this.config, this.scope, this.atc);
      if (done < 0) {
        this.cons = Q.withConsErr(this.cons, -done);
        this.gerror ^= GERROR_CMDQ_ERR;
        r.error = -done;
        return r;
      }
      const op = d0 & 0xff;
      this.byOpcode[op] = (this.byOpcode[op] ?? 0) + 1;
      if (op === Opcode.CMD_SYNC) {
        r.syncs += 1;
        if (this.atcPending) r.atcSyncs += 1;
        this.atcPending = false;
      } else {
        if (op === Opcode.ATC_INV) this.atcPending = true;
        r.executed += 1;
        if (this.relevant && !this.relevant(this.scope)) r.wasted += 1;
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
}
